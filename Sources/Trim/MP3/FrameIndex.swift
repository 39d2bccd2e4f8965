import Support

/// Where every audio frame of a source lies, and the facts needed to cut it sample-exactly.
///
/// Constant-bitrate sources are described by a model (frame length plus a rational padding
/// pattern), verified against the file at build time; others by a table of frame sizes. Either
/// way `offset(of:)` is O(1) and planning a clip needs no I/O.
public struct FrameIndex: Sendable, Equatable {
    /// Version of the binary form; bump when the layout or the meaning of a field changes.
    public static let formatVersion: UInt16 = 1

    public let sourceSize: Int64
    /// Header of the first audio frame: the stream's version, rate and channel layout.
    public let header: FrameHeader
    public let vbrTag: VBRTag?
    /// Byte offset of the Xing/Info/VBRI frame, when the source has one (it is not audio).
    public let tagFrameOffset: Int64?
    public let audioStart: Int64
    public let audioEnd: Int64
    public let frameCount: Int
    public let layout: Layout

    public enum Layout: Sendable, Equatable {
        /// offset(i) = audioStart + i·length + ⌊(i·fraction + phase) / rate⌋ (the padding pattern).
        case constant(length: Int, fraction: Int, rate: Int, phase: Int)
        /// Frame sizes in order; `gaps` are junk bytes skipped before the given frame.
        case table(sizes: [UInt16], gaps: [Gap])
    }

    public struct Gap: Sendable, Equatable {
        public let beforeFrame: Int
        public let bytes: Int
    }

    /// Offsets of frames 0...frameCount for table layouts (derived, not stored).
    private let tableOffsets: [Int64]

    init(sourceSize: Int64, header: FrameHeader, vbrTag: VBRTag?, tagFrameOffset: Int64?, audioStart: Int64,
         audioEnd: Int64, frameCount: Int, layout: Layout) {
        self.sourceSize = sourceSize
        self.header = header
        self.vbrTag = vbrTag
        self.tagFrameOffset = tagFrameOffset
        self.audioStart = audioStart
        self.audioEnd = audioEnd
        self.frameCount = frameCount
        self.layout = layout
        if case .table(let sizes, let gaps) = layout {
            var offsets = [Int64](repeating: 0, count: sizes.count + 1)
            var position = audioStart
            var gapIterator = gaps.makeIterator()
            var nextGap = gapIterator.next()
            for i in 0..<sizes.count {
                while let gap = nextGap, gap.beforeFrame == i { position += Int64(gap.bytes); nextGap = gapIterator.next() }
                offsets[i] = position
                position += Int64(sizes[i])
            }
            offsets[sizes.count] = position
            tableOffsets = offsets
        } else {
            tableOffsets = []
        }
    }

    public var samplesPerFrame: Int { header.samplesPerFrame }
    public var sampleRate: Int { header.sampleRate }
    public var isConstantBitrate: Bool { if case .constant = layout { true } else { false } }

    /// Byte offset of frame `i` (0 ≤ i ≤ frameCount; frameCount gives the end of the last frame).
    public func offset(of i: Int) -> Int64 {
        switch layout {
        case .constant(let length, let fraction, let rate, let phase):
            return audioStart + Int64(i) * Int64(length) + (Int64(i) * Int64(fraction) + Int64(phase)) / Int64(rate)
        case .table:
            return tableOffsets[i]
        }
    }

    public func size(of i: Int) -> Int {
        switch layout {
        case .constant: Int(offset(of: i + 1) - offset(of: i))
        case .table(let sizes, _): Int(sizes[i])
        }
    }

    /// Samples ffmpeg drops at the start of the decode: the declared encoder delay plus the
    /// decoder's own 529, when the LAME tag is one ffmpeg honours; otherwise none.
    public var leadingSkip: Int {
        guard let tag = vbrTag, tag.declaresGapless, let delay = tag.encoderDelay else { return 0 }
        return delay + 529
    }

    /// Length of the decoded audio in samples, as ffmpeg (and so the browsers) decode it.
    public var decodedSampleCount: Int64 {
        let all = Int64(frameCount) * Int64(samplesPerFrame)
        guard let tag = vbrTag, tag.declaresGapless, let delay = tag.encoderDelay, let padding = tag.encoderPadding else { return all }
        let declaredFrames = Int64(min(tag.frames ?? frameCount, frameCount))
        return max(0, min(all - Int64(leadingSkip), declaredFrames * Int64(samplesPerFrame) - Int64(delay) - Int64(padding)))
    }

    public var durationMs: Int64 { decodedSampleCount * 1000 / Int64(sampleRate) }

    /// The first byte after the audio frames actually indexed.
    public var audioFramesEnd: Int64 { offset(of: frameCount) }
}

// MARK: - Binary form

extension FrameIndex {
    /// Compact, versioned binary form for the Index module: a fixed header, then (for tables)
    /// two bytes per frame and eight per gap. Little-endian throughout.
    public func serialized() -> [UInt8] {
        var w = ByteWriter()
        w.bytes(Array("CPFI".utf8))
        w.u16(Self.formatVersion)
        w.i64(sourceSize)
        w.u32(header.raw)
        w.i64(audioStart)
        w.i64(audioEnd)
        w.i64(tagFrameOffset ?? -1)
        w.u32(UInt32(frameCount))
        // VBR tag
        if let tag = vbrTag {
            w.u8(tag.kind == .xing ? 1 : tag.kind == .info ? 2 : 3)
            w.i64(Int64(tag.frames ?? -1))
            w.i64(Int64(tag.bytes ?? -1))
            w.i32(Int32(tag.encoderDelay ?? -1))
            w.i32(Int32(tag.encoderPadding ?? -1))
            let name = Array((tag.encoder ?? "").utf8.prefix(9))
            w.u8(UInt8(name.count)); w.bytes(name)
        } else {
            w.u8(0)
        }
        switch layout {
        case .constant(let length, let fraction, let rate, let phase):
            w.u8(1); w.u32(UInt32(length)); w.u32(UInt32(fraction)); w.u32(UInt32(rate)); w.u32(UInt32(phase))
        case .table(let sizes, let gaps):
            w.u8(2)
            w.u32(UInt32(gaps.count))
            for gap in gaps { w.u32(UInt32(gap.beforeFrame)); w.u32(UInt32(gap.bytes)) }
            for size in sizes { w.u16(size) }
        }
        return w.data
    }

    /// Decodes `serialized()` output; anything else (garbage, another version, a truncated
    /// record) is a typed error, never a crash.
    public init(serialized data: [UInt8]) throws {
        do {
            try self.init(decoding: data)
        } catch let error as RecordDecodingError {
            throw TrimError.badFrameIndex(error.description)
        }
    }

    private init(decoding data: [UInt8]) throws {
        var r = ByteReader(data)
        guard try r.bytes(4) == Array("CPFI".utf8) else { throw TrimError.badFrameIndex("not a frame index") }
        let version = try r.u16()
        guard version == Self.formatVersion else { throw TrimError.badFrameIndex("format version \(version), expected \(Self.formatVersion)") }
        let sourceSize = try r.i64()
        let raw = try r.u32()
        guard let header = FrameHeader(UInt8(raw >> 24), UInt8((raw >> 16) & 0xFF), UInt8((raw >> 8) & 0xFF), UInt8(raw & 0xFF)) else {
            throw TrimError.badFrameIndex("invalid frame header")
        }
        let audioStart = try r.i64(), audioEnd = try r.i64(), tagOffset = try r.i64()
        let frameCount = Int(try r.u32())
        var tag: VBRTag?
        let tagKind = try r.u8()
        if tagKind != 0 {
            guard let kind: VBRTag.Kind = [1: .xing, 2: .info, 3: .vbri][tagKind] else { throw TrimError.badFrameIndex("tag kind \(tagKind)") }
            let frames = try r.i64(), bytes = try r.i64()
            let delay = try r.i32(), padding = try r.i32()
            let nameLength = Int(try r.u8())
            guard nameLength <= 9 else { throw TrimError.badFrameIndex("encoder name too long") }
            let name = try r.bytes(nameLength)
            var t = VBRTag(kind: kind, frames: frames >= 0 ? Int(frames) : nil, bytes: bytes >= 0 ? Int(bytes) : nil)
            t.encoder = nameLength > 0 || delay >= 0 ? String(decoding: name, as: UTF8.self) : nil
            t.encoderDelay = delay >= 0 ? Int(delay) : nil
            t.encoderPadding = padding >= 0 ? Int(padding) : nil
            tag = t
        }
        let layout: Layout
        switch try r.u8() {
        case 1:
            let length = Int(try r.u32()), fraction = Int(try r.u32()), rate = Int(try r.u32()), phase = Int(try r.u32())
            // Real Layer III frames are 24...2881 bytes at 8...48 kHz; anything else is damage.
            guard (24...4096).contains(length), (8000...48000).contains(rate), fraction < rate, phase < rate,
                  Int64(frameCount) * Int64(length) <= sourceSize else { throw TrimError.badFrameIndex("bad constant layout") }
            layout = .constant(length: length, fraction: fraction, rate: rate, phase: phase)
        case 2:
            let gapCount = Int(try r.u32())
            guard gapCount <= r.remaining / 8 else { throw TrimError.badFrameIndex("gap count \(gapCount) exceeds the record") }
            var gaps: [Gap] = []
            for _ in 0..<gapCount { gaps.append(Gap(beforeFrame: Int(try r.u32()), bytes: Int(try r.u32()))) }
            guard r.remaining == frameCount * 2 else { throw TrimError.badFrameIndex("table holds \(r.remaining / 2) frames, header says \(frameCount)") }
            var sizes = [UInt16](repeating: 0, count: frameCount)
            for i in 0..<frameCount { sizes[i] = try r.u16() }
            guard zip(gaps, gaps.dropFirst()).allSatisfy({ $0.beforeFrame <= $1.beforeFrame }),
                  gaps.allSatisfy({ $0.beforeFrame >= 0 && $0.beforeFrame < frameCount && $0.bytes > 0 }) else {
                throw TrimError.badFrameIndex("gaps out of order")
            }
            layout = .table(sizes: sizes, gaps: gaps)
        default:
            throw TrimError.badFrameIndex("unknown layout")
        }
        guard r.remaining == 0 else { throw TrimError.badFrameIndex("\(r.remaining) trailing bytes") }
        guard sourceSize >= 0, sourceSize <= 1 << 52, audioStart >= 0, audioStart <= audioEnd, audioEnd <= sourceSize, frameCount > 0 else {
            throw TrimError.badFrameIndex("inconsistent offsets")
        }
        self.init(sourceSize: sourceSize, header: header, vbrTag: tag, tagFrameOffset: tagOffset >= 0 ? tagOffset : nil,
                  audioStart: audioStart, audioEnd: audioEnd, frameCount: frameCount, layout: layout)
        guard audioFramesEnd <= audioEnd else { throw TrimError.badFrameIndex("frames run past the audio") }
    }
}
