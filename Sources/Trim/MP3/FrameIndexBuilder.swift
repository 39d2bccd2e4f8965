/// Builds a `FrameIndex` from a source with as few bytes read as the source allows:
/// the head (tags, first frames), the last bytes (trailing tags), and then either two small
/// verification reads (constant bitrate) or one sequential pass (everything else).
public enum FrameIndexBuilder {
    /// Bytes read from the start: enough for typical ID3 tags and ~50 frames, which pins down a
    /// constant-bitrate padding pattern (its period is at most 49 frames at every MPEG rate).
    static let headBytes = 32 << 10
    static let tailBytes = 4 << 10
    /// Frames that must chain to accept a sync point (a false sync rarely survives three headers).
    static let syncChain = 3
    static let maxJunkBeforeFirstFrame = 256 << 10

    public static func build(_ source: any ByteSource) throws -> FrameIndex {
        let size = source.size
        guard size > 0 else { throw TrimError.corrupt("the source is empty") }

        // Leading ID3v2 tags: skip them without reading their bodies (cover art can be megabytes).
        var position: Int64 = 0
        var head = try source.read(offset: 0, count: min(headBytes, Int(size)))
        var headStart: Int64 = 0
        while true {
            let local = Int(position - headStart)
            var probe = local + 10 <= head.count ? head[local..<(local + 10)] : ArraySlice(try source.read(offset: position, count: 10))
            if probe.count < 10 { probe = [] }
            guard let tagSize = TagLayout.id3v2Size(probe) else { break }
            guard position + tagSize < size else {
                throw TrimError.corrupt("an ID3v2 tag at byte \(position) claims \(tagSize) bytes; the file has \(size)")
            }
            position += tagSize
        }
        if position >= headStart + Int64(head.count) - 4096 && position < size {
            head = try source.read(offset: position, count: Int(min(Int64(headBytes), size - position)))
            headStart = position
        }

        // Trailing ID3v1 / APEv2.
        let tailCount = Int(min(Int64(tailBytes), size))
        let tail = try source.read(offset: size - Int64(tailCount), count: tailCount)
        let audioEnd = max(position, size - TagLayout.trailingTagBytes(tail: tail, fileSize: size))

        var window = SourceWindow(source: source, limit: audioEnd, initial: head, initialOffset: headStart)
        guard let first = try findSync(in: &window, from: position, audioEnd: audioEnd) else {
            throw TrimError.unsupportedFormat("no MPEG Layer III frames found")
        }
        let firstHeader = first.header
        var audioStart = first.offset
        var vbrTag: VBRTag?
        var tagOffset: Int64?
        let firstFrame = try window.bytes(at: first.offset, count: firstHeader.frameLength)
        if let tag = VBRTag.parse(frame: firstFrame[...], header: firstHeader) {
            vbrTag = tag
            tagOffset = first.offset
            audioStart = first.offset + Int64(firstHeader.frameLength)
        }
        guard audioStart < audioEnd, let audioHeader = try window.header(at: audioStart), audioHeader.isCompatible(with: firstHeader) else {
            throw TrimError.corrupt("no audio frame after the \(vbrTag?.kind.rawValue ?? "first") frame")
        }

        if vbrTag == nil || vbrTag?.kind == .info,
           let model = try constantModel(in: &window, audioStart: audioStart, audioEnd: audioEnd, header: audioHeader, tag: vbrTag) {
            return FrameIndex(sourceSize: size, header: audioHeader, vbrTag: vbrTag, tagFrameOffset: tagOffset, audioStart: audioStart,
                              audioEnd: audioEnd, frameCount: model.frameCount, layout: model.layout)
        }
        let table = try scan(&window, from: audioStart, audioEnd: audioEnd, header: audioHeader)
        return FrameIndex(sourceSize: size, header: audioHeader, vbrTag: vbrTag, tagFrameOffset: tagOffset, audioStart: audioStart,
                          audioEnd: audioEnd, frameCount: table.sizes.count, layout: .table(sizes: table.sizes, gaps: table.gaps))
    }

    // MARK: - Sync

    /// The first offset at or after `from` where `syncChain` compatible frames follow each other
    /// (or the chain ends exactly at the end of the audio).
    static func findSync(in window: inout SourceWindow, from: Int64, audioEnd: Int64) throws -> (offset: Int64, header: FrameHeader)? {
        var p = from
        let limit = min(audioEnd, from + Int64(maxJunkBeforeFirstFrame))
        while p + 4 <= limit {
            if let h = try window.header(at: p), try chains(in: &window, at: p, header: h, audioEnd: audioEnd) { return (p, h) }
            p += 1
        }
        return nil
    }

    static func chains(in window: inout SourceWindow, at offset: Int64, header: FrameHeader, audioEnd: Int64) throws -> Bool {
        var p = offset
        var h = header
        for _ in 1..<syncChain {
            p += Int64(h.frameLength)
            if p == audioEnd { return true }
            guard p + 4 <= audioEnd, let next = try window.header(at: p), next.isCompatible(with: header) else { return false }
            h = next
        }
        return p + Int64(h.frameLength) <= audioEnd
    }

    // MARK: - Constant bitrate

    /// Fits offset(i) = start + i·L + ⌊(i·f + φ)/rate⌋ to the frames in the head, then checks it
    /// where it matters most: a frame in the middle and the last frame. Nil when the source is not
    /// a plain constant-bitrate stream (then it is scanned).
    static func constantModel(in window: inout SourceWindow, audioStart: Int64, audioEnd: Int64, header: FrameHeader,
                              tag: VBRTag?) throws -> (frameCount: Int, layout: FrameIndex.Layout)? {
        let numerator = (header.version == .mpeg1 ? 144 : 72) * header.bitrate
        let length = numerator / header.sampleRate
        let fraction = numerator % header.sampleRate
        let rate = header.sampleRate

        // Observe the padding bits of one full period of the pattern (mostly already in the head).
        let needed = fraction == 0 ? 2 : rate / gcd(fraction, rate) + 1
        var paddings: [Bool] = []
        var p = audioStart
        while p + 4 <= audioEnd, paddings.count < needed + 8 {
            guard let h = try window.header(at: p), h.bitrateIndex == header.bitrateIndex, h.isCompatible(with: header) else { return nil }
            paddings.append(h.padding)
            p += Int64(h.frameLength)
        }
        guard paddings.count >= needed else { return nil }

        // Phases consistent with every observed frame form an interval; take its lower end.
        var low = 0, high = rate - 1
        var padded = 0  // padded frames before frame i
        for (i, pad) in paddings.enumerated() {
            // Frame i is padded iff ⌊((i+1)f + φ)/rate⌋ − ⌊(i f + φ)/rate⌋ = 1.
            // Constrain φ so that ⌊(i f + φ)/rate⌋ == padded and the next count matches.
            let base = i * fraction
            low = max(low, padded * rate - base)
            high = min(high, (padded + 1) * rate - 1 - base)
            if pad { padded += 1 }
        }
        let total = paddings.count * fraction
        low = max(low, padded * rate - total)
        high = min(high, (padded + 1) * rate - 1 - total)
        guard low <= high else { return nil }
        let layout = FrameIndex.Layout.constant(length: length, fraction: fraction, rate: rate, phase: low)

        func offset(_ i: Int) -> Int64 {
            audioStart + Int64(i) * Int64(length) + (Int64(i) * Int64(fraction) + Int64(low)) / Int64(rate)
        }
        // Frame count: as many whole frames as fit before the trailing tags.
        var count = Int((audioEnd - audioStart) / Int64(length + 1))
        while offset(count + 1) <= audioEnd { count += 1 }
        while count > 0 && offset(count) > audioEnd { count -= 1 }
        guard count > paddings.count else { return nil }
        if let declared = tag?.frames, declared != count, declared != count - 1 { return nil }  // tag disagrees: scan

        // Verification reads: a frame in the middle (two chained headers) and the last frame.
        for i in [count / 2, count - 1] {
            guard let h = try window.header(at: offset(i)), h.bitrateIndex == header.bitrateIndex, h.isCompatible(with: header),
                  Int64(h.frameLength) == offset(i + 1) - offset(i) else { return nil }
            if i + 1 < count {
                guard let next = try window.header(at: offset(i + 1)), next.bitrateIndex == header.bitrateIndex else { return nil }
            }
        }
        // Bytes after the last whole frame must be fewer than one frame (a truncated tail), else
        // there is more to this file than the model explains.
        guard audioEnd - offset(count) < Int64(length) else { return nil }
        return (count, layout)
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    // MARK: - Sequential scan

    /// One pass over the audio: every frame's size, resynchronising over junk between frames.
    static func scan(_ window: inout SourceWindow, from audioStart: Int64, audioEnd: Int64,
                     header: FrameHeader) throws -> (sizes: [UInt16], gaps: [FrameIndex.Gap]) {
        var sizes: [UInt16] = []
        sizes.reserveCapacity(Int((audioEnd - audioStart) / 100))
        var gaps: [FrameIndex.Gap] = []
        var p = audioStart
        var gapStart: Int64?
        while p + 4 <= audioEnd {
            if let h = try window.header(at: p, readAhead: SourceWindow.chunk), h.isCompatible(with: header) {
                let end = p + Int64(h.frameLength)
                // Inside a run of good frames one valid header suffices; after junk, require a chain.
                let accepted = gapStart == nil ? end <= audioEnd : try chains(in: &window, at: p, header: h, audioEnd: audioEnd)
                if accepted && end <= audioEnd {
                    if let start = gapStart {
                        gaps.append(FrameIndex.Gap(beforeFrame: sizes.count, bytes: Int(p - start)))
                        gapStart = nil
                    }
                    sizes.append(UInt16(h.frameLength))
                    p = end
                    continue
                }
                if end > audioEnd && gapStart == nil { break }  // a truncated last frame
            }
            if gapStart == nil { gapStart = p }
            p += 1
        }
        guard !sizes.isEmpty else { throw TrimError.corrupt("no complete audio frames") }
        return (sizes, gaps)
    }
}

/// Sequential-friendly random access to a source through one buffered window of bounded reads.
struct SourceWindow {
    let source: any ByteSource
    let limit: Int64
    private var buffer: [UInt8]
    private var bufferStart: Int64
    /// Read-ahead of the sequential scan. Large, because over S3 every read is a request with
    /// its own latency: a one-hour VBR episode is 7 GETs at 4 MiB (bench/: 109 at 256 KiB).
    static let chunk = 4 << 20

    init(source: any ByteSource, limit: Int64, initial: [UInt8], initialOffset: Int64) {
        self.source = source
        self.limit = limit
        buffer = initial
        bufferStart = initialOffset
    }

    var bufferedEnd: Int64 { bufferStart + Int64(buffer.count) }

    /// `count` bytes at `offset` (fewer at the end of the source).
    /// `count` bytes at `offset` (fewer at the end of the source). A miss reads `readAhead` bytes
    /// from `offset`: large for sequential scans, a few frames for verification look-ups.
    mutating func bytes(at offset: Int64, count: Int, readAhead: Int = 4096) throws -> ArraySlice<UInt8> {
        if offset < bufferStart || offset + Int64(count) > bufferedEnd {
            let wanted = max(count, readAhead)
            let readCount = Int(min(Int64(wanted), source.size - offset))
            guard readCount > 0 else { return [] }
            buffer = try source.read(offset: offset, count: readCount)
            bufferStart = offset
        }
        let local = Int(offset - bufferStart)
        return buffer[local..<min(buffer.count, local + count)]
    }

    mutating func header(at offset: Int64, readAhead: Int = 4096) throws -> FrameHeader? {
        guard offset >= 0, offset + 4 <= source.size else { return nil }
        return FrameHeader(try bytes(at: offset, count: 4, readAhead: readAhead))
    }
}
