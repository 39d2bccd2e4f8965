import Foundation

/// ffmpeg and ffprobe as the reference for audio: what they decode is what browsers play.
public enum FFmpegOracle {
    public struct PCM: Sendable {
        public let samples: [Int16]     // interleaved
        public let channels: Int
        public let sampleRate: Int
        public let stderr: String       // decoder complaints (run with -v error)
        public var frameCount: Int { samples.count / channels }
    }

    /// Decodes a file to 16-bit PCM at its own rate and channel count.
    public static func decode(_ path: String, channels: Int, sampleRate: Int) throws -> PCM {
        let result = try run("/usr/bin/ffmpeg", ["-nostdin", "-v", "error", "-i", path, "-f", "s16le", "-acodec", "pcm_s16le",
                                                 "-ac", String(channels), "-ar", String(sampleRate), "-"])
        guard result.status == 0 else { throw TestSetupError("ffmpeg failed on \(path): \(result.stderr)") }
        let samples = result.stdout.withUnsafeBytes { raw in Array(raw.bindMemory(to: Int16.self)) }
        return PCM(samples: samples, channels: channels, sampleRate: sampleRate, stderr: result.stderr)
    }

    /// Runs a tool to its end (killed after 15 minutes: a hung tool fails its test, not the run).
    public static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, stdout: Data, stderr: String) {
        try BoundedProcess.run(executable, arguments, limit: 900)
    }
}

/// How well a decoded clip matches the source decode: the lag that aligns them best, and the
/// worst signal-to-noise ratio over 10 ms windows at that lag.
public struct AlignmentReport: Sendable, CustomStringConvertible {
    public let lagSamples: Int
    public let worstWindowSNR: Double     // dB; +inf when identical
    public let worstWindowStart: Int
    public var description: String { "lag \(lagSamples) samples, worst 10 ms SNR \(worstWindowSNR) dB at sample \(worstWindowStart)" }

    /// Compares `clip` (frames of `channels` interleaved samples) with `reference` starting at frame
    /// `referenceStart`, over `count` frames. Lag 0 is tried first; only when it does not match
    /// exactly does a search over ±`maxLag` frames (cross-correlation by error energy) run.
    public static func measure(clip: [Int16], reference: [Int16], referenceStart: Int, count: Int, channels: Int,
                               sampleRate: Int, maxLag: Int) -> AlignmentReport {
        func errorEnergy(lag: Int, frames: Range<Int>) -> (signal: Double, error: Double) {
            var signal = 0.0, error = 0.0
            for f in frames {
                let r = referenceStart + f + lag
                for c in 0..<channels {
                    let a = Double(clip[f * channels + c])
                    let b = r >= 0 && r * channels + c < reference.count ? Double(reference[r * channels + c]) : 0
                    signal += b * b
                    error += (a - b) * (a - b)
                }
            }
            return (signal, error)
        }
        let probe = 0..<min(count, 4 * sampleRate / 10)
        var bestLag = 0
        if errorEnergy(lag: 0, frames: probe).error > 0 {
            var best = Double.infinity
            for lag in -maxLag...maxLag {
                let e = errorEnergy(lag: lag, frames: probe).error
                if e < best { best = e; bestLag = lag }
            }
        }
        let window = sampleRate / 100
        var worst = Double.infinity, worstAt = 0
        var start = 0
        while start < count {
            let frames = start..<min(count, start + window)
            let (signal, error) = errorEnergy(lag: bestLag, frames: frames)
            let snr = error == 0 ? Double.infinity : 10 * log10(max(signal, 1) / error)
            if snr < worst { worst = snr; worstAt = start }
            start += window
        }
        return AlignmentReport(lagSamples: bestLag, worstWindowSNR: worst, worstWindowStart: worstAt)
    }
}
