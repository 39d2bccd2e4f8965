/// Everything needed to cut one clip, computed from the frame index alone (no I/O): which source
/// bytes to read (one contiguous range), which frames to copy, the delay and padding to declare,
/// and the exact byte length of the output.
///
/// Output layout: [Info/Xing frame] [reservoir carrier frame] [source frames, byte for byte].
/// The carrier is a silent frame whose payload holds the main-data bytes (bit reservoir) that the
/// first copied frame refers back to, so every copied frame decodes exactly as in the source;
/// the LAME delay then trims the preroll to the requested sample.
public struct ClipPlan: Sendable, Equatable {
    /// Changes whenever the bytes produced for the same request could change (part of clip keys).
    public static let engineVersion = 1

    public struct Request: Sendable, Equatable {
        public var startMs: Int64
        public var durationMs: Int64
        public init(startMs: Int64, durationMs: Int64) {
            self.startMs = startMs
            self.durationMs = durationMs
        }
    }

    /// First sample of the clip in the source's decoded timeline, and the number of samples.
    public let startSample: Int64
    public let sampleCount: Int64
    public let sampleRate: Int
    /// Source bytes to read: from the first frame feeding the carrier to the end of the last copied frame.
    public let readRange: Range<Int64>
    /// Frames whose main data feeds the carrier: [reservoirFrame, firstFrame).
    public let reservoirFrame: Int
    public let firstFrame: Int
    public let frameCount: Int
    public let reservoirBytes: Int
    public let carrierLength: Int
    public let carrierBitrateIndex: Int
    public let infoFrameLength: Int
    public let encoderDelay: Int
    public let encoderPadding: Int
    /// Exact length of the clip in bytes.
    public let byteCount: Int64
    /// Sizes of the copied frames and junk to skip between them (from the index).
    public let frameSizes: [Int]
    public let skips: [FrameIndex.Gap]
    public let template: FrameHeader
    public let vbr: Bool
    /// A silent frame after the copied ones (0 when none): see `plan` on ffmpeg's skip handling.
    public let trailerLength: Int

    public var durationMs: Int64 { sampleCount * 1000 / Int64(sampleRate) }
    public var copiedBytes: Int64 { Int64(frameSizes.reduce(0, +)) }
    /// Frames declared in the Info tag: carrier, copied frames and the trailer if any.
    public var outputFrameCount: Int { frameCount + 1 + (trailerLength > 0 ? 1 : 0) }

    /// A short, stable description of what is cut, for content-addressed keys.
    public var identity: String {
        "e\(Self.engineVersion):r\(readRange.lowerBound)-\(readRange.upperBound):f\(firstFrame)+\(frameCount):d\(encoderDelay):p\(encoderPadding):n\(byteCount)"
    }
}

extension ClipPlan {
    /// MPEG-1 frames carry two granules, MPEG-2/2.5 one; the decoder's overlap and filterbank
    /// memory reach back less than one granule pair, so this many frames before the one that
    /// produces the first wanted sample make it exact (the carrier supplies their reservoir).
    static func prerollFrames(_ version: MPEGVersion) -> Int { version == .mpeg1 ? 2 : 3 }

    /// Plans the clip `request` of the source described by `index`.
    /// Windows running past the end are cut at the end; a start at or beyond the end is an error.
    ///
    /// A partial index plans a clip exactly as the complete index would, or throws
    /// `FrameIndexTooShort`: every step below that looks at the end of the audio (the start past
    /// the end, the window cut at the end, the last frame, the trailer) would, on a partial
    /// index, see the end of the prefix instead, so reaching any of them means "extend first".
    /// When none is reached with the prefix's (lower-bound) length, none is reached with the
    /// complete length either, and every other input (frames before the end of the window, gaps
    /// among them, the tag) is the same in the prefix.
    public static func plan(_ index: FrameIndex, _ request: Request) throws -> ClipPlan {
        guard request.startMs >= 0, request.durationMs > 0 else {
            throw TrimError.windowOutsideAudio(startMs: request.startMs, durationMs: request.durationMs)
        }
        let outside = TrimError.windowOutsideAudio(startMs: request.startMs, durationMs: request.durationMs)
        // Where a complete index says "past the end", a partial one says "extend to the window's end".
        func endReached() -> any Error {
            guard !index.isComplete else { return outside }
            let (end, overflow) = request.startMs.addingReportingOverflow(request.durationMs)
            return FrameIndexTooShort(neededMs: overflow ? .max : end, coveredMs: index.coveredMs)
        }
        let rate = Int64(index.sampleRate)
        let spf = Int64(index.samplesPerFrame)
        let total = index.decodedSampleCount
        // Clamp before multiplying: a client may send any 64-bit number.
        guard request.startMs <= index.durationMs else { throw endReached() }
        let t0 = (request.startMs * rate + 500) / 1000
        guard t0 < total else { throw endReached() }
        let wanted = (min(request.durationMs, index.durationMs + 1) * rate + 500) / 1000
        // A partial index must hold the whole window, uncut by its own (provisional) end.
        if !index.isComplete && (request.durationMs > index.durationMs + 1 || wanted > total - t0) { throw endReached() }
        var n = min(wanted, total - t0)
        guard n > 0 else { throw outside }

        // Position of the first wanted sample in the source decoder's output.
        let position = t0 + Int64(index.leadingSkip)
        let producing = Int(position / spf)
        let first = max(0, producing - prerollFrames(index.header.version))
        // The carrier sits at frame position first − 1; decoders skip delay + 529 samples.
        let delay = position - 529 - Int64(first - 1) * spf
        precondition((0...4095).contains(delay), "delay \(delay) out of LAME range")

        var outputFrames = Int((delay + 529 + n + spf - 1) / spf)       // carrier included
        if first + outputFrames - 1 > index.frameCount {                 // the source ends sooner
            guard index.isComplete else { throw endReached() }
            outputFrames = index.frameCount - first + 1
            n = min(n, Int64(outputFrames) * spf - delay - 529)
            guard n > 0 else { throw outside }
        }
        let copied = outputFrames - 1
        // ffmpeg replaces a pending start skip with the next packet's skip/discard side data, so the
        // frame where the skip ends must not also carry the end discard. When the window (cut at the
        // end of the episode) is shorter than that, a silent trailer frame takes the discard and the
        // clip keeps a few ms of the decoder's tail past the last sample.
        let skipEndFrame = Int((delay + 529) / spf)
        var trailer = false
        if (delay + 529 + n - 1) / spf == Int64(skipEndFrame) && skipEndFrame == outputFrames - 1 {
            trailer = true
            n = Int64(skipEndFrame + 1) * spf - delay - 529
            outputFrames += 1
        }
        let padding = Int64(outputFrames) * spf - delay - n

        // Reservoir: enough frames before `first` that their payloads cover the longest backstep.
        let template = index.header
        let want = template.maxBackstep
        var reservoirFrame = first
        var gathered = 0
        // Bounded: even the smallest frames (72 bytes) cover the backstep within 64 frames.
        while reservoirFrame > 0 && gathered < want && first - reservoirFrame < 64 {
            reservoirFrame -= 1
            gathered += index.size(of: reservoirFrame) - template.payloadOffset
        }
        let reservoirBytes = min(want, max(0, gathered))
        let carrierIndex = FrameHeader.smallestBitrateIndex(like: template, holding: 4 + template.sideInfoSize + want)!
        let carrierLength = FrameHeader.frameLength(version: template.version, bitrate: FrameHeader.bitratesKbps[template.version]![carrierIndex] * 1000,
                                                    sampleRate: template.sampleRate, padding: false)

        let sizes = (first..<(first + copied)).map { index.size(of: $0) }
        let trailerLength = trailer ? carrierLength : 0
        var skips: [FrameIndex.Gap] = []
        if case .table(_, let gaps) = index.layout {
            skips = gaps.filter { $0.beforeFrame > first && $0.beforeFrame < first + copied }
        }
        let info = InfoFrameBuilder.frameLength(like: template).length
        let byteCount = Int64(info + carrierLength + trailerLength) + Int64(sizes.reduce(0, +))
        return ClipPlan(startSample: t0, sampleCount: n, sampleRate: index.sampleRate,
                        // Ends with the last copied frame, not after junk that may follow it.
                        readRange: index.offset(of: reservoirFrame)..<(index.offset(of: first + copied - 1) + Int64(index.size(of: first + copied - 1))),
                        reservoirFrame: reservoirFrame, firstFrame: first, frameCount: copied,
                        reservoirBytes: reservoirBytes, carrierLength: carrierLength, carrierBitrateIndex: carrierIndex,
                        infoFrameLength: info, encoderDelay: Int(delay), encoderPadding: Int(padding),
                        byteCount: byteCount, frameSizes: sizes, skips: skips, template: template,
                        vbr: !index.isConstantBitrate, trailerLength: trailerLength)
    }

    /// Xing TOC: for each percent of the duration, the byte position in the clip (×256 / length).
    func tableOfContents() -> [UInt8] {
        let frames = frameCount + 1 + (trailerLength > 0 ? 1 : 0)
        var starts = [Int64](repeating: 0, count: frames)
        var position = Int64(infoFrameLength)
        starts[0] = position
        position += Int64(carrierLength)
        for (i, size) in frameSizes.enumerated() {
            starts[i + 1] = position
            position += Int64(size)
        }
        if trailerLength > 0 { starts[frames - 1] = position }
        return (0..<100).map { percent in
            let frame = min(frames - 1, percent * frames / 100)
            return UInt8(min(255, starts[frame] * 256 / byteCount))
        }
    }
}
