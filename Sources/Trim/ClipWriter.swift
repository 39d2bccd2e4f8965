/// Writes a planned clip as the source bytes of `plan.readRange` arrive, in any chunking:
/// first the Info frame (before any source byte), then the reservoir carrier once the frames that
/// feed it have arrived, then the copied frames byte for byte. Every copied frame's header is
/// checked against the plan, so a source that changed under the index fails instead of producing
/// a wrong clip. The bytes emitted always add up to `plan.byteCount`.
public struct ClipWriter {
    public let plan: ClipPlan
    private var position: Int64            // next source offset expected
    private var reservoirPending: [UInt8] = []
    private var carrierDone = false
    private var emitted: Int64 = 0
    private var frame = 0                  // copied frame being written
    private var frameRemaining = 0         // bytes of it still to come
    private var skipRemaining = 0          // junk bytes to drop before the next frame
    private var headerBytes: [UInt8] = []  // header of the current frame, until 4 bytes are seen
    private let skipsByFrame: [Int: Int]

    public init(plan: ClipPlan) {
        self.plan = plan
        position = plan.readRange.lowerBound
        var skips: [Int: Int] = [:]
        for gap in plan.skips { skips[gap.beforeFrame - plan.firstFrame, default: 0] += gap.bytes }
        skipsByFrame = skips
    }

    /// The Info/Xing frame that opens the clip.
    public mutating func start(_ emit: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        let info = InfoFrameBuilder.build(like: plan.template, vbr: plan.vbr, frames: plan.outputFrameCount,
                                          bytes: Int(plan.byteCount), toc: plan.tableOfContents(),
                                          encoderDelay: plan.encoderDelay, encoderPadding: plan.encoderPadding)
        try emitBytes(info, emit)
    }

    /// Feeds the next source bytes (contiguous with the previous ones, starting at readRange.lowerBound).
    public mutating func consume(_ chunk: UnsafeRawBufferPointer, _ emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        var local = chunk[...]
        let carrierEnd = reservoirEnd
        if !carrierDone {
            let take = Int(min(Int64(local.count), carrierEnd - position))
            reservoirPending.append(contentsOf: local.prefix(take))
            position += Int64(take)
            local = local.dropFirst(take)
            if position == carrierEnd {
                try emitBytes(try buildCarrier(), emit)
                carrierDone = true
                reservoirPending = []
                frameRemaining = 0
                beginFrame()
            }
        }
        while !local.isEmpty {
            guard frame < plan.frameCount else {
                throw TrimError.corrupt("source sent \(local.count) bytes past the planned range")
            }
            if skipRemaining > 0 {
                let n = min(skipRemaining, local.count)
                skipRemaining -= n
                position += Int64(n)
                local = local.dropFirst(n)
                continue
            }
            // Check the frame header as its first four bytes go by (they may straddle chunks).
            if headerBytes.count < 4 {
                let need = 4 - headerBytes.count
                headerBytes.append(contentsOf: local.prefix(need))
                if headerBytes.count == 4 { try checkHeader() }
            }
            let n = min(frameRemaining, local.count)
            let slice = UnsafeRawBufferPointer(rebasing: local.prefix(n))
            try emit(slice)
            emitted += Int64(n)
            frameRemaining -= n
            position += Int64(n)
            local = local.dropFirst(n)
            if frameRemaining == 0 {
                frame += 1
                beginFrame()
                if frame == plan.frameCount && plan.trailerLength > 0 { try emitBytes(silentFrame(plan.trailerLength), emit) }
            }
        }
    }

    /// Call after the last source byte: checks that the clip is complete.
    public func finish() throws {
        guard carrierDone, frame == plan.frameCount, emitted == plan.byteCount else {
            throw TrimError.truncatedSource(offset: position, expected: plan.readRange.upperBound)
        }
    }

    // MARK: - Internals

    private var reservoirEnd: Int64 {
        plan.readRange.lowerBound + Int64(plan.frameSizesBeforeFirst)
    }

    private mutating func beginFrame() {
        guard frame < plan.frameCount else { return }
        frameRemaining = plan.frameSizes[frame]
        skipRemaining = skipsByFrame[frame] ?? 0
        headerBytes = []
    }

    private func checkHeader() throws {
        guard let h = FrameHeader(headerBytes), h.isCompatible(with: plan.template), h.frameLength == plan.frameSizes[frame] else {
            throw TrimError.corrupt("frame \(plan.firstFrame + frame) is not where the index says; re-index the source")
        }
    }

    /// The carrier: a silent frame whose payload ends with the main-data bytes preceding the first
    /// copied frame.
    private func buildCarrier() throws -> [UInt8] {
        var mainData: [UInt8] = []
        var p = 0
        while p + 4 <= reservoirPending.count {
            guard let h = FrameHeader(reservoirPending[p..<(p + 4)]), h.isCompatible(with: plan.template) else {
                p += 1   // junk between frames carries no main data
                continue
            }
            let end = min(reservoirPending.count, p + h.frameLength)
            if p + h.payloadOffset < end { mainData.append(contentsOf: reservoirPending[(p + h.payloadOffset)..<end]) }
            p = end
        }
        let tail = mainData.suffix(plan.reservoirBytes)
        var carrier = silentFrame(plan.carrierLength)
        carrier.replaceSubrange((plan.carrierLength - tail.count)..<plan.carrierLength, with: tail)
        return carrier
    }

    /// A frame of the carrier's bitrate with zero side info (main_data_begin 0, empty granules):
    /// it decodes to silence and leaves its whole payload in the decoder's reservoir.
    private func silentFrame(_ length: Int) -> [UInt8] { Self.silentFrame(like: plan, length: length) }

    static func silentFrame(like plan: ClipPlan, length: Int) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: length)
        f.replaceSubrange(0..<4, with: FrameHeader.synthesized(like: plan.template, bitrateIndex: plan.carrierBitrateIndex))
        return f
    }

    private mutating func emitBytes(_ bytes: [UInt8], _ emit: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        try bytes.withUnsafeBytes { try emit($0) }
        emitted += Int64(bytes.count)
    }
}

extension ClipPlan {
    /// Bytes of source from readRange.lowerBound up to the first copied frame.
    var frameSizesBeforeFirst: Int64 { readRange.upperBound - readRange.lowerBound - copiedBytes - Int64(skips.reduce(0) { $0 + $1.bytes }) }
}
