/// MPEG audio version. MPEG-2.5 is the unofficial low-rate extension.
public enum MPEGVersion: UInt8, Sendable, Codable, CustomStringConvertible {
    case mpeg1 = 1, mpeg2 = 2, mpeg25 = 25
    public var description: String { self == .mpeg1 ? "1" : self == .mpeg2 ? "2" : "2.5" }
}

/// A parsed 4-byte Layer III frame header. Only Layer III is accepted: podcasts are MP3.
public struct FrameHeader: Sendable, Equatable {
    public let version: MPEGVersion
    public let crcProtected: Bool
    public let bitrateIndex: Int
    public let bitrate: Int          // bits per second
    public let sampleRateIndex: Int
    public let sampleRate: Int
    public let padding: Bool
    public let channelMode: Int      // 0 stereo, 1 joint, 2 dual, 3 mono
    public let raw: UInt32

    public var channels: Int { channelMode == 3 ? 1 : 2 }
    public var samplesPerFrame: Int { version == .mpeg1 ? 1152 : 576 }
    /// Bytes of side information after the header (and CRC).
    public var sideInfoSize: Int {
        switch (version, channels) {
        case (.mpeg1, 1): 17
        case (.mpeg1, _): 32
        case (_, 1): 9
        default: 17
        }
    }
    /// Header + CRC + side info: where the frame's main-data payload begins.
    public var payloadOffset: Int { 4 + (crcProtected ? 2 : 0) + sideInfoSize }
    public var frameLength: Int {
        Self.frameLength(version: version, bitrate: bitrate, sampleRate: sampleRate, padding: padding)
    }
    /// Largest `main_data_begin` (how far back a frame's data may start): 9 bits in MPEG-1, 8 otherwise.
    public var maxBackstep: Int { version == .mpeg1 ? 511 : 255 }

    static let bitratesKbps: [MPEGVersion: [Int]] = [
        .mpeg1: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
        .mpeg2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
        .mpeg25: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ]
    static let sampleRates: [MPEGVersion: [Int]] = [
        .mpeg1: [44100, 48000, 32000], .mpeg2: [22050, 24000, 16000], .mpeg25: [11025, 12000, 8000],
    ]

    static func frameLength(version: MPEGVersion, bitrate: Int, sampleRate: Int, padding: Bool) -> Int {
        (version == .mpeg1 ? 144 : 72) * bitrate / sampleRate + (padding ? 1 : 0)
    }

    /// Parses `bytes[0..<4]`; nil for anything that is not a usable Layer III header
    /// (no sync, reserved version/rate, free-format or invalid bitrate, other layers, emphasis 2).
    public init?(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8) {
        let raw = UInt32(b0) << 24 | UInt32(b1) << 16 | UInt32(b2) << 8 | UInt32(b3)
        guard raw >> 21 == 0x7FF else { return nil }
        let version: MPEGVersion
        switch (raw >> 19) & 3 {
        case 3: version = .mpeg1
        case 2: version = .mpeg2
        case 0: version = .mpeg25
        default: return nil
        }
        guard (raw >> 17) & 3 == 1 else { return nil }  // Layer III only
        let bitrateIndex = Int((raw >> 12) & 0xF)
        let rateIndex = Int((raw >> 10) & 3)
        guard bitrateIndex != 0, bitrateIndex != 15, rateIndex != 3, raw & 3 != 2 else { return nil }
        self.version = version
        self.crcProtected = (raw >> 16) & 1 == 0
        self.bitrateIndex = bitrateIndex
        self.bitrate = Self.bitratesKbps[version]![bitrateIndex] * 1000
        self.sampleRateIndex = rateIndex
        self.sampleRate = Self.sampleRates[version]![rateIndex]
        self.padding = (raw >> 9) & 1 == 1
        self.channelMode = Int((raw >> 6) & 3)
        self.raw = raw
    }

    public init?<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        guard bytes.count >= 4 else { return nil }
        var i = bytes.startIndex
        let b0 = bytes[i]; i = bytes.index(after: i)
        let b1 = bytes[i]; i = bytes.index(after: i)
        let b2 = bytes[i]; i = bytes.index(after: i)
        self.init(b0, b1, b2, bytes[i])
    }

    /// True when `other` can follow this header in the same stream (same version, rate, channels).
    public func isCompatible(with other: FrameHeader) -> Bool {
        version == other.version && sampleRateIndex == other.sampleRateIndex && channels == other.channels
    }

    /// A header for a frame clipproxy writes itself (Info, reservoir carrier): same stream, no CRC.
    static func synthesized(like template: FrameHeader, bitrateIndex: Int) -> [UInt8] {
        var raw = template.raw
        raw |= 1 << 16                                // protection bit set = no CRC
        raw &= ~(UInt32(0xF) << 12)
        raw |= UInt32(bitrateIndex) << 12
        raw &= ~(1 << 9)                              // no padding
        raw &= ~(UInt32(3) << 4)                      // mode extension 0
        return [UInt8(raw >> 24), UInt8(truncatingIfNeeded: raw >> 16), UInt8(truncatingIfNeeded: raw >> 8), UInt8(truncatingIfNeeded: raw)]
    }

    /// The smallest bitrate index whose (unpadded) frame is at least `length` bytes, if any.
    static func smallestBitrateIndex(like template: FrameHeader, holding length: Int) -> Int? {
        let rates = bitratesKbps[template.version]!
        return (1..<rates.count).first {
            frameLength(version: template.version, bitrate: rates[$0] * 1000, sampleRate: template.sampleRate, padding: false) >= length
        }
    }
}
