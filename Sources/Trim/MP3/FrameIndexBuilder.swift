/// Builds a `FrameIndex` from a source with as few bytes read as the source allows:
/// the head (tags, first frames), the last bytes (trailing tags), and then either two small
/// verification reads (constant bitrate) or one sequential pass (everything else), which may stop
/// once the audio asked for is covered and be continued later (`build(_:coveringMs:)`, `extend`).
public enum FrameIndexBuilder {
    /// Bytes read from the start: enough for typical ID3 tags and ~50 frames, which pins down a
    /// constant-bitrate padding pattern (its period is at most 49 frames at every MPEG rate).
    static let headBytes = 32 << 10
    static let tailBytes = 4 << 10
    /// Frames that must chain to accept a sync point (a false sync rarely survives three headers).
    static let syncChain = 3
    static let maxJunkBeforeFirstFrame = 256 << 10

    /// Frames indexed past the requested coverage. `ClipPlan` accepts a partial index when the
    /// prefix's decoded length (the same lower bound the scan stops on) holds the window's last
    /// sample; rounding start and duration to samples can ask for 1 sample more than `coveringMs`
    /// converts to. Two frames (~50 ms, ~1 kB) cover that with room to spare; preroll and
    /// reservoir lie before the clip, and the last-frame and trailer rules only look at the end
    /// of the audio, which a partial index never claims to know.
    public static let coverageMarginFrames = 2
    /// Read-ahead of a partial scan: about as far as the estimate of the frames still needed
    /// (+1/8), but at least 1 MiB (one request covers a clip in the first minutes, ~2 min of a
    /// 64 kb/s episode) and at most the full scan's 4 MiB (the requests of a far target stay few).
    public static let progressiveReadAhead = 1 << 20

    /// Indexes the whole source (`coveringMs == nil`), or, for sources that need a scan (VBR,
    /// irregular), as far as the first `coveringMs` ms of decoded audio plus
    /// `coverageMarginFrames` and then every frame wholly in the bytes read by then: a partial
    /// index, unless the scan reached the end anyway.
    /// Constant-bitrate sources are always indexed whole (two small reads do it).
    public static func build(_ source: any ByteSource, coveringMs: Int64? = nil) throws -> FrameIndex {
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
        var scan = TableScan(position: audioStart, audioEnd: audioEnd, header: audioHeader, tag: vbrTag, coveringMs: coveringMs)
        let complete = try scan.run(&window)
        return FrameIndex(sourceSize: size, header: audioHeader, vbrTag: vbrTag, tagFrameOffset: tagOffset, audioStart: audioStart,
                          audioEnd: audioEnd, frameCount: scan.sizes.count, layout: .table(sizes: scan.sizes, gaps: scan.gaps),
                          isComplete: complete)
    }

    /// Continues a partial index's scan from its last frame until it covers `coveringMs` (nil:
    /// to the end), and on through the frames wholly in the bytes it read. The prefix is not read
    /// again (a partial scan stops right after a frame, never inside junk, so resuming there is
    /// exactly where the scan was), and the result is a prefix of the complete index (how far it
    /// reaches depends on where the reads ended). A complete index, or one that already covers
    /// `coveringMs`, is returned as it is.
    public static func extend(_ index: FrameIndex, source: any ByteSource, coveringMs: Int64?) throws -> FrameIndex {
        guard !index.isComplete, case .table(let sizes, let gaps) = index.layout else { return index }
        guard source.size == index.sourceSize else {
            throw TrimError.badFrameIndex("the index was built for \(index.sourceSize) bytes; the source has \(source.size)")
        }
        var scan = TableScan(position: index.audioFramesEnd, audioEnd: index.audioEnd, header: index.header, tag: index.vbrTag,
                             coveringMs: coveringMs, sizes: sizes, gaps: gaps)
        if scan.covered { return index }
        var window = SourceWindow(source: source, limit: index.audioEnd, initial: [], initialOffset: index.audioFramesEnd)
        let complete = try scan.run(&window)
        return FrameIndex(sourceSize: index.sourceSize, header: index.header, vbrTag: index.vbrTag, tagFrameOffset: index.tagFrameOffset,
                          audioStart: index.audioStart, audioEnd: index.audioEnd, frameCount: scan.sizes.count,
                          layout: .table(sizes: scan.sizes, gaps: scan.gaps), isComplete: complete)
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
    /// Resumable: its whole state is the frames so far and the position after the last one, so
    /// a scan stopped at a frame boundary and continued later gives the same frames as one pass.
    struct TableScan {
        private(set) var sizes: [UInt16]
        private(set) var gaps: [FrameIndex.Gap]
        private(set) var position: Int64
        let audioEnd: Int64
        let header: FrameHeader
        let tag: VBRTag?
        /// Decoded samples to reach before stopping (nil: scan to the end).
        let targetSamples: Int64?

        init(position: Int64, audioEnd: Int64, header: FrameHeader, tag: VBRTag?, coveringMs: Int64?,
             sizes: [UInt16] = [], gaps: [FrameIndex.Gap] = []) {
            self.position = position
            self.audioEnd = audioEnd
            self.header = header
            self.tag = tag
            self.sizes = sizes
            self.gaps = gaps
            // Clamped so the products cannot overflow; 2^40 ms is 34 years of audio.
            targetSamples = coveringMs.map { ms in
                (min(max(ms, 0), 1 << 40) * Int64(header.sampleRate) + 999) / 1000
                    + Int64(FrameIndexBuilder.coverageMarginFrames * header.samplesPerFrame)
            }
        }

        /// True when the frames so far decode to the target (the rule `ClipPlan` accepts them on).
        var covered: Bool {
            guard let targetSamples else { return false }
            return FrameIndex.decodedSamples(frames: sizes.count, header: header, tag: tag) >= targetSamples
        }

        /// Scans until the target is covered (stopping only right after an accepted frame, with
        /// audio left after it) or the audio ends. Returns true when it reached the end.
        mutating func run(_ window: inout SourceWindow) throws -> Bool {
            if targetSamples == nil { sizes.reserveCapacity(sizes.count + Int((audioEnd - position) / 100)) }
            var p = position
            var gapStart: Int64?
            defer { position = p }
            while p + 4 <= audioEnd {
                // The read-ahead only matters on a miss; size it only then.
                let ahead = window.holds(p, count: 4) ? 0 : readAhead(at: p)
                if let h = try window.header(at: p, readAhead: ahead), h.isCompatible(with: header) {
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
                        // Partial only with audio left after this frame: otherwise it is the end.
                        // Once covered, the frames already read are indexed too (they cost
                        // nothing more, and a later clip in them needs no extension); the scan
                        // stops at the first frame it would have to read for.
                        if targetSamples != nil && p + 4 <= audioEnd && covered && !window.holdsFrame(at: p, like: header, audioEnd: audioEnd) {
                            return false
                        }
                        continue
                    }
                    if end > audioEnd && gapStart == nil { break }  // a truncated last frame
                }
                if gapStart == nil { gapStart = p }
                p += 1
            }
            guard !sizes.isEmpty else { throw TrimError.corrupt("no complete audio frames") }
            return true
        }

        /// Bytes to read at a miss at `p`: the full scan's chunk, or for a partial scan an
        /// estimate of what the frames still needed take (+1/8), within
        /// [progressiveReadAhead, chunk]. The average frame is the VBR tag's (bytes/frames, the
        /// whole stream's) when it has one, else the prefix's own.
        func readAhead(at p: Int64) -> Int {
            guard let targetSamples else { return SourceWindow.chunk }
            let spf = Int64(header.samplesPerFrame)
            // Frames the target needs, counting the encoder delay and padding the lower bound subtracts.
            let framesNeeded = (targetSamples + Int64(tag?.encoderDelay ?? 0) + 529 + Int64(tag?.encoderPadding ?? 0)) / spf + 1
            let remaining = max(0, framesNeeded - Int64(sizes.count))
            var average: Int64 = 0
            if let frames = tag?.frames, let bytes = tag?.bytes, frames > 0, bytes > 0 {
                average = Int64(bytes / frames)
            } else if !sizes.isEmpty {
                average = Int64(sizes.reduce(0) { $0 + Int($1) }) / Int64(sizes.count)
            }
            let estimate = min(Int64(SourceWindow.chunk), remaining * min(average, 4096))
            return Int(min(Int64(SourceWindow.chunk), max(Int64(FrameIndexBuilder.progressiveReadAhead), estimate + estimate / 8)))
        }
    }
}

/// Sequential-friendly random access to a source through one buffered window of bounded reads.
struct SourceWindow {
    let source: any ByteSource
    let limit: Int64
    private var buffer: [UInt8]
    private var bufferStart: Int64
    /// Read-ahead of the sequential scan. Large, because over S3 every read is a request with
    /// its own latency: a one-hour VBR episode is 7 GETs at 4 MiB.
    static let chunk = 4 << 20
    /// A read at most this far past the buffer's end starts at its end instead (see `bytes`).
    static let continuationSlack = 4096

    init(source: any ByteSource, limit: Int64, initial: [UInt8], initialOffset: Int64) {
        self.source = source
        self.limit = limit
        buffer = initial
        bufferStart = initialOffset
    }

    var bufferedEnd: Int64 { bufferStart + Int64(buffer.count) }

    /// True when `count` bytes at `offset` are in the buffer (no read needed).
    func holds(_ offset: Int64, count: Int) -> Bool { offset >= bufferStart && offset + Int64(count) <= bufferedEnd }

    /// True when a whole frame compatible with `header` starts at `offset` within the bytes
    /// already read (no read is made to find out).
    mutating func holdsFrame(at offset: Int64, like header: FrameHeader, audioEnd: Int64) -> Bool {
        guard holds(offset, count: 4), let next = try? self.header(at: offset), next.isCompatible(with: header) else { return false }
        let end = offset + Int64(next.frameLength)
        return end <= audioEnd && holds(offset, count: next.frameLength)
    }

    /// `count` bytes at `offset` (fewer at the end of the source). A miss reads `readAhead` bytes
    /// from `offset`: large for sequential scans, a few frames for verification look-ups.
    mutating func bytes(at offset: Int64, count: Int, readAhead: Int = 4096) throws -> ArraySlice<UInt8> {
        if offset < bufferStart || offset + Int64(count) > bufferedEnd {
            let upTo = min(source.size, offset + Int64(max(count, readAhead)))
            guard upTo > offset else { return [] }
            // Going on from the buffer (a frame that straddles its end, or one a header's length
            // past it): read from where it ends and keep its tail, so the scan's reads form one
            // contiguous run and no byte is read twice.
            if !buffer.isEmpty, offset >= bufferStart, offset <= bufferedEnd + Int64(Self.continuationSlack), upTo > bufferedEnd {
                let fresh = try source.read(offset: bufferedEnd, count: Int(upTo - bufferedEnd))
                if offset < bufferedEnd {
                    buffer = Array(buffer[Int(offset - bufferStart)...]) + fresh
                    bufferStart = offset
                } else {
                    (buffer, bufferStart) = (fresh, bufferedEnd)
                }
            } else {
                buffer = try source.read(offset: offset, count: Int(upTo - offset))
                bufferStart = offset
            }
        }
        let local = Int(offset - bufferStart)
        return buffer[local..<min(buffer.count, local + count)]
    }

    mutating func header(at offset: Int64, readAhead: Int = 4096) throws -> FrameHeader? {
        guard offset >= 0, offset + 4 <= source.size else { return nil }
        return FrameHeader(try bytes(at: offset, count: 4, readAhead: readAhead))
    }
}
