/// A clip window whose start and end move into the nearest pauses (`PauseFinder`): the start
/// within [start - 500 ms, start + 250 ms], the end within [end - 250 ms, end + 750 ms]. The
/// search favours moving earlier at the start and later at the end, so a snapped clip rather
/// gains a word's tail than loses its head.
///
/// The audio around each boundary is cut from the source as a clip is (`ClipPlan`, `ClipWriter`:
/// sample-exact, the bit reservoir restored) and decoded as peaks are (`MP3Decoder`), so what is
/// judged is exactly what a listener of the source hears at those samples. Every byte it needs
/// lies in the source range of `searchWindow`'s plan, read once.
public enum PauseSnap {
    public static let startSearch = (before: Int64(500), after: Int64(250))
    public static let endSearch = (before: Int64(250), after: Int64(750))

    /// The window whose source bytes hold everything `snap` reads: from the start search's
    /// beginning to the end search's end (1.25 s more audio than the clip).
    public static func searchWindow(_ request: ClipPlan.Request) -> ClipPlan.Request {
        let from = max(0, request.startMs - startSearch.before)
        let (end, overflow) = request.startMs.addingReportingOverflow(request.durationMs + endSearch.after)
        return ClipPlan.Request(startMs: from, durationMs: overflow ? .max - from : end - from)
    }

    /// The window `request` snaps to, in whole milliseconds, at most `maxDurationMs` long.
    /// `source` must answer the reads of `searchWindow(request)`'s plan (a window of bytes held in
    /// memory is enough). A boundary without a pause in reach stays where it was asked; so does
    /// an end at or past the end of the audio, where the clip ends anyway. Blocking.
    public static func snap(_ request: ClipPlan.Request, index: FrameIndex, source: any ByteSource, maxDurationMs: Int64) throws -> ClipPlan.Request {
        let rate = Int64(index.sampleRate)
        let askedEnd = request.startMs + request.durationMs
        var startMs = request.startMs
        if let cut = try cutPoint(index, source, asked: request.startMs, from: request.startMs - startSearch.before,
                                  to: request.startMs + startSearch.after, allowed: 0...Int64.max) {
            startMs = (cut * 1000 + rate / 2) / rate
        }
        var endMs = askedEnd
        if askedEnd < index.durationMs || !index.isComplete {
            // The end stays after the start and within the longest clip allowed.
            let earliest = ((startMs + 1) * rate + 999) / 1000, latest = ((startMs + maxDurationMs) * rate) / 1000
            if let cut = try cutPoint(index, source, asked: askedEnd, from: askedEnd - endSearch.before,
                                      to: askedEnd + endSearch.after, allowed: earliest...max(earliest, latest)) {
                endMs = (cut * 1000 + rate / 2) / rate
            }
        }
        endMs = min(max(endMs, startMs + 1), startMs + maxDurationMs)
        return ClipPlan.Request(startMs: startMs, durationMs: endMs - startMs)
    }

    /// The source sample to cut at for a boundary asked at `asked` ms, searched in [from, to) ms,
    /// or nil. `allowed` bounds the answer, in source samples.
    static func cutPoint(_ index: FrameIndex, _ source: any ByteSource, asked: Int64, from: Int64, to: Int64,
                         allowed: ClosedRange<Int64>) throws -> Int64? {
        let stretchStart = max(0, from)
        guard to > stretchStart, stretchStart < index.durationMs else { return nil }
        let stretch = try ClipPlan.plan(index, .init(startMs: stretchStart, durationMs: to - stretchStart))
        let samples = try decode(stretch, from: source)
        guard Int64(samples.count) == stretch.sampleCount else {
            throw TrimError.corrupt("decoded \(samples.count) samples around \(asked) ms, the plan says \(stretch.sampleCount)")
        }
        let first = stretch.startSample
        let askedSample = (asked * Int64(index.sampleRate) + 500) / 1000
        let low = max(allowed.lowerBound - first, 0), high = min(allowed.upperBound - first, Int64(samples.count))
        guard low <= high else { return nil }
        return PauseFinder.cutPoint(in: samples, sampleRate: index.sampleRate, asked: Int(askedSample - first),
                                    allowed: Int(low)...Int(high)).map { first + Int64($0) }
    }

    /// The samples of a planned stretch, one channel: cut as a clip, decoded as a listener's player would.
    static func decode(_ plan: ClipPlan, from source: any ByteSource) throws -> [Int16] {
        var mp3: [UInt8] = []
        mp3.reserveCapacity(Int(plan.byteCount))
        try Trimmer.write(plan, from: source) { mp3.append(contentsOf: $0) }
        var samples: [Int16] = []
        samples.reserveCapacity(Int(plan.sampleCount))
        _ = try MP3Decoder.decodeMono(MemoryByteSource(mp3)) { samples.append(contentsOf: $0) }
        return samples
    }
}
