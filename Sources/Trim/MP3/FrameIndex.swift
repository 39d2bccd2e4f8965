import Support

/// Where every audio frame of a source lies, and the facts needed to cut it sample-exactly.
///
/// Constant-bitrate sources are described by a model (frame length plus a rational padding
/// pattern), verified against the file at build time; others by a table of frame sizes. Either
/// way `offset(of:)` is O(1) and planning a clip needs no I/O.
///
/// A table index may be partial (`isComplete == false`): a VBR source scanned only as far as the
/// clips asked for so far. It is then an exact prefix of the complete index (same header, tag,
/// audioStart and audioEnd, the first `frameCount` frames with the same sizes and gaps), so a clip
/// inside it plans exactly as with the complete one; `FrameIndexBuilder.extend` continues it.
public struct FrameIndex: Sendable, Equatable {
    /// Version of the binary form; bump when the layout or the meaning of a field changes.
    /// 2: adds the completeness flag (version 1 records are complete indexes).
    public static let formatVersion: UInt16 = 2

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
    /// False when the frames stop before the end of the audio (a progressive scan's prefix):
    /// then `frameCount`, `decodedSampleCount` and `durationMs` are lower bounds, not the audio's
    /// length. Constant-bitrate models are always complete.
    public let isComplete: Bool

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
         audioEnd: Int64, frameCount: Int, layout: Layout, isComplete: Bool = true) {
        self.sourceSize = sourceSize
        self.header = header
        self.vbrTag = vbrTag
        self.tagFrameOffset = tagFrameOffset
        self.audioStart = audioStart
        self.audioEnd = audioEnd
        self.frameCount = frameCount
        self.layout = layout
        self.isComplete = isComplete
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
    /// For a partial index: the samples its frames are sure to yield (a lower bound of the length).
    public var decodedSampleCount: Int64 { Self.decodedSamples(frames: frameCount, header: header, tag: vbrTag) }

    /// Decoded samples of a stream of `frames` frames. Never decreases as frames are added, so
    /// for a prefix it is a lower bound of the complete stream's count: the progressive scan
    /// stops on it and `ClipPlan` accepts a partial index on it, the same rule on both sides.
    static func decodedSamples(frames: Int, header: FrameHeader, tag: VBRTag?) -> Int64 {
        let spf = Int64(header.samplesPerFrame)
        let all = Int64(frames) * spf
        guard let tag, tag.declaresGapless, let delay = tag.encoderDelay, let padding = tag.encoderPadding else { return all }
        let declaredFrames = Int64(min(tag.frames ?? frames, frames))
        return max(0, min(all - Int64(delay + 529), declaredFrames * spf - Int64(delay) - Int64(padding)))
    }

    /// Length of the decoded audio in ms; for a partial index, how far it reaches (a lower bound).
    public var durationMs: Int64 { decodedSampleCount * 1000 / Int64(sampleRate) }

    /// Decoded audio the indexed frames cover, in ms: any clip ending by then plans from this
    /// index exactly as from the complete one. The whole audio for a complete index.
    public var coveredMs: Int64 { durationMs }

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
        w.u8(isComplete ? 1 : 0)  // version 2; placed before the tag so version-1 field offsets stay put
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
        // Version 1 predates partial indexes: every version-1 record is complete.
        guard version == 1 || version == Self.formatVersion else {
            throw TrimError.badFrameIndex("format version \(version), expected 1 or \(Self.formatVersion)")
        }
        let sourceSize = try r.i64()
        let raw = try r.u32()
        guard let header = FrameHeader(UInt8(raw >> 24), UInt8((raw >> 16) & 0xFF), UInt8((raw >> 8) & 0xFF), UInt8(raw & 0xFF)) else {
            throw TrimError.badFrameIndex("invalid frame header")
        }
        let audioStart = try r.i64(), audioEnd = try r.i64(), tagOffset = try r.i64()
        let frameCount = Int(try r.u32())
        var isComplete = true
        if version >= 2 {
            let flag = try r.u8()
            guard flag <= 1 else { throw TrimError.badFrameIndex("completeness flag \(flag)") }
            isComplete = flag == 1
        }
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
            // A constant model describes the whole stream; it is never partial.
            guard isComplete else { throw TrimError.badFrameIndex("a partial constant layout") }
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
                  audioStart: audioStart, audioEnd: audioEnd, frameCount: frameCount, layout: layout, isComplete: isComplete)
        guard audioFramesEnd <= audioEnd else { throw TrimError.badFrameIndex("frames run past the audio") }
    }
}
