import Upstream

/// One caption: text shown from `startMs` to `endMs`, in milliseconds of the clip.
struct CaptionCue: Sendable, Equatable {
    let startMs: Int64
    let endMs: Int64
    let text: String
}

/// Places transcript chunks on a clip's own timeline. The clip is the plan's window, not the
/// requested one: 0 is its first sample and it lasts exactly as long as the audio it holds (less
/// than asked for when the window runs past the episode's end), so captions line up with what
/// the listener hears.
enum CaptionCues {
    /// The cues of the chunks that overlap the clip of `sampleCount` samples from `startSample`
    /// (at `sampleRate`), re-timed and cut to the clip. A chunk without an end lasts until the next
    /// chunk with a later start begins (the last one: to the end of the clip). Cues that round to
    /// no time at all are left out: WebVTT wants every cue to end after it starts.
    static func cues(_ chunks: [TranscriptChunk], startSample: Int64, sampleCount: Int64, sampleRate: Int) -> [CaptionCue] {
        let ordered = TranscriptChunk.inOrder(chunks)
        let clipStart = Double(startSample) / Double(sampleRate)
        let durationMs = (sampleCount * 1000 + Int64(sampleRate) / 2) / Int64(sampleRate)
        var cues: [CaptionCue] = []
        for (position, chunk) in ordered.enumerated() {
            let end = chunk.endTime
                ?? ordered[(position + 1)...].first { $0.startTime > chunk.startTime }?.startTime
                ?? .infinity
            let startMs = max(0, milliseconds(chunk.startTime - clipStart))
            let endMs = min(durationMs, milliseconds(end - clipStart))
            guard endMs > startMs else { continue }
            cues.append(CaptionCue(startMs: startMs, endMs: endMs, text: chunk.text))
        }
        return cues
    }

    /// Seconds to whole milliseconds; catalog values far outside any episode saturate instead of trapping.
    static func milliseconds(_ seconds: Double) -> Int64 {
        let limit = 1e15
        return Int64((min(max(seconds * 1000, -limit), limit)).rounded())
    }
}
