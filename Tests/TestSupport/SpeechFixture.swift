import Foundation

/// Generated episodes for pause-aware boundaries, made once per machine in the temporary
/// directory (too large to commit): speech from espeak-ng whose pauses are measured on its WAV
/// before it is encoded, and a chirp (music without pauses).
public enum SpeechFixture {
    /// A stretch of the WAV where every sample is below `silenceLevel`, in ms of the episode.
    public struct Pause: Sendable, CustomStringConvertible {
        public let startMs: Double
        public let endMs: Double
        public var durationMs: Double { endMs - startMs }
        public func contains(_ ms: Double) -> Bool { startMs <= ms && ms <= endMs }
        public var description: String { String(format: "%.1f-%.1f ms", startMs, endMs) }
    }

    public struct Episode: Sendable {
        public let mp3: String
        /// Every silence of at least `minimumSilenceMs` in the WAV the MP3 was encoded from.
        public let pauses: [Pause]
        public let durationMs: Int64
    }

    /// |sample| below 1% of full scale (-40 dBFS): espeak-ng's speech peaks near full scale, its
    /// gaps are digital silence, so this separates them with room to spare.
    public static let silenceLevel: Int16 = 328
    public static let minimumSilenceMs = 30.0

    /// About two minutes of sentences (espeak-ng, 150 words a minute, 80 ms between words),
    /// encoded with LAME at 44.1 kHz, 64 kbit/s mono CBR.
    public static let speech: Result<Episode, any Error> = Result {
        let sentences = [
            "Seven tired sailors counted forty-two lanterns on the harbour wall.",
            "The clocks disagree about the hour, and nobody minds.",
            "A podcast about nothing in particular, recorded on a rainy afternoon.",
            "Bring the copper kettle to the kitchen before the guests arrive.",
            "Quiet rivers carry stories further than the loudest storms.",
            "Every map is wrong somewhere, but most of them are useful anyway.",
            "She opened the window, listened to the trains, and went back to sleep.",
            "Thirteen violins were tuned before the concert could begin.",
        ]
        let text = (0..<3).flatMap { round in sentences.map { round == 0 ? $0 : $0.replacingOccurrences(of: "the", with: "a") } }
            .joined(separator: " ")
        return try make("speech", generate: { wav in
            try tool("/usr/bin/espeak-ng", ["-w", wav, "-s", "150", "-g", "8", text])
        })
    }

    /// 90 s of a sine sweeping 200 Hz to 2 kHz at a constant level: no moment quieter than another.
    public static let chirp: Result<Episode, any Error> = Result {
        try make("chirp", generate: { wav in
            try tool("/usr/bin/ffmpeg", ["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                                         "-i", "aevalsrc=0.5*sin(2*PI*(200*t+10*t*t)):s=22050:d=90", "-ac", "1", "-c:a", "pcm_s16le", wav])
        })
    }

    static func make(_ name: String, generate: (String) throws -> Void) throws -> Episode {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("clipproxy-snap-fixtures-v1")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let wav = directory.appendingPathComponent("\(name).wav").path, mp3 = directory.appendingPathComponent("\(name).mp3").path
        if !FileManager.default.fileExists(atPath: mp3) || !FileManager.default.fileExists(atPath: wav) {
            // Written under unique names and renamed: parallel runs never see half a file.
            let partialWav = directory.appendingPathComponent("\(name)-\(UUID().uuidString).wav").path
            let partialMp3 = directory.appendingPathComponent("\(name)-\(UUID().uuidString).mp3").path
            try generate(partialWav)
            try tool("/usr/bin/ffmpeg", ["-hide_banner", "-loglevel", "error", "-y", "-i", partialWav, "-ar", "44100", "-ac", "1",
                                         "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3", partialMp3])
            guard rename(partialWav, wav) == 0, rename(partialMp3, mp3) == 0 else { throw TestSetupError("cannot move the \(name) fixture into place") }
        }
        let (samples, rate) = try readWAV(wav)
        return Episode(mp3: mp3, pauses: silences(samples, sampleRate: rate), durationMs: Int64(samples.count) * 1000 / Int64(rate))
    }

    /// Runs of samples under `silenceLevel` of at least `minimumSilenceMs`.
    public static func silences(_ samples: [Int16], sampleRate: Int) -> [Pause] {
        var pauses: [Pause] = []
        var start: Int?
        for i in 0...samples.count {
            let silent = i < samples.count && abs(Int(samples[i])) < Int(silenceLevel)
            if silent, start == nil { start = i }
            if !silent, let from = start {
                let pause = Pause(startMs: Double(from) * 1000 / Double(sampleRate), endMs: Double(i) * 1000 / Double(sampleRate))
                if pause.durationMs >= minimumSilenceMs { pauses.append(pause) }
                start = nil
            }
        }
        return pauses
    }

    /// A 16-bit mono PCM WAV's samples and rate (the data chunk found by walking the chunks).
    static func readWAV(_ path: String) throws -> ([Int16], Int) {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        func u32(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24 }
        guard bytes.count > 44, bytes[0..<4].elementsEqual("RIFF".utf8) else { throw TestSetupError("\(path) is not a WAV file") }
        var rate = 0, at = 12
        while at + 8 <= bytes.count {
            let id = String(decoding: bytes[at..<(at + 4)], as: UTF8.self), size = u32(at + 4)
            if id == "fmt " { rate = u32(at + 12) }
            if id == "data" {
                // espeak-ng writes a streaming header whose data size may be 0 or too large: read to the end.
                let body = bytes[(at + 8)...]
                let samples = stride(from: body.startIndex, to: body.endIndex - 1, by: 2).map { Int16(bitPattern: UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8) }
                return (samples, rate)
            }
            at += 8 + size + (size & 1)
        }
        throw TestSetupError("\(path) has no data chunk")
    }

    static func tool(_ executable: String, _ arguments: [String]) throws {
        let result = try BoundedProcess.run(executable, arguments, limit: 300)
        guard result.status == 0 else { throw TestSetupError("\(executable) failed: \(result.stderr)") }
    }
}
