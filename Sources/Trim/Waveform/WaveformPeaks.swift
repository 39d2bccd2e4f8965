import Foundation

/// A waveform as audiowaveform's JSON format (version 2) describes it: for every block of
/// `samplesPerPixel` samples, the lowest and the highest sample, scaled to `bits`.
///
/// Like audiowaveform without `--split-channels`, the channels are mixed down to one (their
/// average), so `channels` is always 1. The last block may be shorter than the others.
public struct WaveformPeaks: Sendable, Equatable {
    public static let samplesPerPixelRange = 32...65536
    public static let allowedBits = [8, 16]

    public let sampleRate: Int
    public let samplesPerPixel: Int
    public let bits: Int
    /// min0, max0, min1, max1, ... already scaled to `bits`.
    public let data: [Int16]
    /// Samples the blocks cover (the decoded audio's length, per channel).
    public let sampleCount: Int64

    /// Blocks, i.e. min/max pairs: ⌈sampleCount / samplesPerPixel⌉.
    public var length: Int { data.count / 2 }

    /// audiowaveform's JSON, keys in its order, on one line.
    public var json: String {
        var out = "{\"version\":2,\"channels\":1,\"sample_rate\":\(sampleRate),\"samples_per_pixel\":\(samplesPerPixel),"
        out += "\"bits\":\(bits),\"length\":\(length),\"data\":["
        out.reserveCapacity(out.utf8.count + data.count * 6 + 2)
        for (i, value) in data.enumerated() {
            if i > 0 { out += "," }
            out += String(value)
        }
        return out + "]}"
    }

    /// The peaks of an MP3 file (a clip as it is served) as a listener hears it: decoded with
    /// libavcodec, encoder delay and padding dropped. Blocking.
    public static func of(mp3 source: any ByteSource, samplesPerPixel: Int, bits: Int) throws -> WaveformPeaks {
        var blocks = PeakBlocks(samplesPerPixel: samplesPerPixel)
        let summary = try MP3Decoder.decodeMono(source) { blocks.add($0) }
        return WaveformPeaks(sampleRate: summary.sampleRate, samplesPerPixel: samplesPerPixel, bits: bits,
                             data: blocks.finish().map { scale($0, to: bits) }, sampleCount: summary.sampleCount)
    }

    /// A 16-bit value at `bits` bits: 8 bits divide by 256 (-128...127, as audiowaveform's 8-bit data).
    static func scale(_ value: Int16, to bits: Int) -> Int16 { bits == 8 ? value / 256 : value }
}

/// Min and max per block of samples, fed a frame at a time.
struct PeakBlocks {
    let samplesPerPixel: Int
    private(set) var pairs: [Int16] = []
    private var low = Int16.max, high = Int16.min, filled = 0

    init(samplesPerPixel: Int) { self.samplesPerPixel = samplesPerPixel }

    mutating func add(_ samples: UnsafeBufferPointer<Int16>) {
        for sample in samples {
            low = min(low, sample)
            high = max(high, sample)
            filled += 1
            if filled == samplesPerPixel { closeBlock() }
        }
    }

    /// The pairs, with the last, shorter block if samples are left in it.
    mutating func finish() -> [Int16] {
        if filled > 0 { closeBlock() }
        return pairs
    }

    private mutating func closeBlock() {
        pairs.append(low)
        pairs.append(high)
        low = .max; high = .min; filled = 0
    }
}
