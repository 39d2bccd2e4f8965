/// Writes one byte range of a planned clip, reading only the source bytes that range comes from:
/// a Range request for a clip nobody has asked for whole yet (a browser seeking, a CDN fetching
/// slices) costs about the bytes it asks for, not the whole clip.
///
/// The clip is [Info frame][carrier][copied frames][trailer]. Info and trailer need no source
/// bytes; the carrier needs the reservoir frames before the first copied frame (a few kB); a
/// copied frame is read whole (its header is checked, as `ClipWriter` does), so a range costs at
/// most one frame more on each side. The bytes are identical to the same range of the whole clip.
extension Trimmer {
    public static func write(_ plan: ClipPlan, range: Range<Int64>, from source: any ByteSource,
                             emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard range.lowerBound >= 0, range.upperBound <= plan.byteCount, !range.isEmpty else {
            throw TrimError.badFrameIndex("range \(range) is outside the clip's \(plan.byteCount) bytes")
        }
        guard plan.readRange.upperBound <= source.size else {
            throw TrimError.truncatedSource(offset: source.size, expected: plan.readRange.upperBound)
        }
        let layout = ClipLayout(plan)

        // Info frame and carrier: built by the whole-clip writer from the reservoir bytes alone.
        if range.lowerBound < layout.copiedStart {
            var head: [UInt8] = []
            var writer = ClipWriter(plan: plan)
            writer.start { head.append(contentsOf: $0) }
            if range.upperBound > Int64(plan.infoFrameLength) {
                let reservoir = try read(source, plan.readRange.lowerBound..<layout.reservoirEnd)
                try reservoir.withUnsafeBytes { try writer.consume($0) { head.append(contentsOf: $0) } }
            }
            try emitSlice(head, at: 0, of: range, emit)
        }

        // Copied frames that overlap the range, read as one span of whole frames.
        let frames = layout.frames(overlapping: range)
        if !frames.isEmpty {
            let span = layout.sourceStart(frames.lowerBound)..<(layout.sourceStart(frames.upperBound - 1) + Int64(plan.frameSizes[frames.upperBound - 1]))
            let bytes = try read(source, span)
            for frame in frames {
                let offset = Int(layout.sourceStart(frame) - span.lowerBound)
                let size = plan.frameSizes[frame]
                guard size >= 4, offset + size <= bytes.count, let header = FrameHeader(bytes[offset..<(offset + 4)]),
                      header.isCompatible(with: plan.template), header.frameLength == size else {
                    throw TrimError.corrupt("frame \(plan.firstFrame + frame) is not where the index says; re-index the source")
                }
                try emitSlice(bytes[offset..<(offset + size)], at: layout.outputStart(frame), of: range, emit)
            }
        }

        if plan.trailerLength > 0, range.upperBound > layout.trailerStart {
            try emitSlice(ClipWriter.silentFrame(like: plan, length: plan.trailerLength), at: layout.trailerStart, of: range, emit)
        }
    }

    private static func read(_ source: any ByteSource, _ span: Range<Int64>) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(span.count))
        if !span.isEmpty { try source.stream(span) { bytes.append(contentsOf: $0) } }
        guard bytes.count == span.count else { throw TrimError.truncatedSource(offset: span.lowerBound + Int64(bytes.count), expected: span.upperBound) }
        return bytes
    }

    /// Emits the part of `bytes` (placed at clip offset `start`) that falls inside `range`.
    private static func emitSlice<Bytes: RandomAccessCollection>(_ bytes: Bytes, at start: Int64, of range: Range<Int64>,
                                                                  _ emit: (UnsafeRawBufferPointer) throws -> Void) throws
        where Bytes.Element == UInt8, Bytes.Index == Int {
        let from = max(range.lowerBound, start), to = min(range.upperBound, start + Int64(bytes.count))
        guard from < to else { return }
        let lower = bytes.startIndex + Int(from - start)
        try Array(bytes[lower..<(lower + Int(to - from))]).withUnsafeBytes { try emit($0) }
    }
}

/// Where each part of a planned clip sits in the output and, for copied frames, in the source.
struct ClipLayout {
    let plan: ClipPlan
    /// Output offset of each copied frame, plus one past the last.
    private let outputStarts: [Int64]
    /// Source offset of each copied frame (junk between frames skipped).
    private let sourceStarts: [Int64]

    init(_ plan: ClipPlan) {
        self.plan = plan
        var gapBefore: [Int: Int] = [:]
        for gap in plan.skips { gapBefore[gap.beforeFrame - plan.firstFrame, default: 0] += gap.bytes }
        var output = Int64(plan.infoFrameLength + plan.carrierLength)
        var source = plan.readRange.lowerBound + plan.frameSizesBeforeFirst
        var outputs: [Int64] = [], sources: [Int64] = []
        outputs.reserveCapacity(plan.frameCount + 1)
        sources.reserveCapacity(plan.frameCount)
        for (frame, size) in plan.frameSizes.enumerated() {
            source += Int64(gapBefore[frame] ?? 0)
            outputs.append(output)
            sources.append(source)
            output += Int64(size)
            source += Int64(size)
        }
        outputs.append(output)
        outputStarts = outputs
        sourceStarts = sources
    }

    var reservoirEnd: Int64 { plan.readRange.lowerBound + plan.frameSizesBeforeFirst }
    var copiedStart: Int64 { Int64(plan.infoFrameLength + plan.carrierLength) }
    var trailerStart: Int64 { outputStarts[plan.frameCount] }
    func outputStart(_ frame: Int) -> Int64 { outputStarts[frame] }
    func sourceStart(_ frame: Int) -> Int64 { sourceStarts[frame] }

    /// Copied frames with at least one byte inside `range`.
    func frames(overlapping range: Range<Int64>) -> Range<Int> {
        // Binary search: the first frame ending after range.lowerBound, the first starting at or after range.upperBound.
        func firstIndex(where predicate: (Int) -> Bool) -> Int {
            var low = 0, high = plan.frameCount
            while low < high {
                let mid = (low + high) / 2
                if predicate(mid) { high = mid } else { low = mid + 1 }
            }
            return low
        }
        let first = firstIndex { outputStarts[$0 + 1] > range.lowerBound }
        let end = firstIndex { outputStarts[$0] >= range.upperBound }
        return first < end ? first..<end : 0..<0
    }
}
