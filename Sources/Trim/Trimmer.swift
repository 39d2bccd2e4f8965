/// Cuts clips from a source: index (once), plan (pure), then one ranged read streamed through the writer.
public enum Trimmer {
    /// Writes the clip planned for `request` to `emit` as the source bytes arrive; returns the plan.
    /// Blocking: run it off the event loop.
    @discardableResult
    public static func trim(_ source: any ByteSource, index: FrameIndex, request: ClipPlan.Request,
                            emit: (UnsafeRawBufferPointer) throws -> Void) throws -> ClipPlan {
        let plan = try ClipPlan.plan(index, request)
        try write(plan, from: source, emit: emit)
        return plan
    }

    /// Streams `plan.readRange` of `source` through a `ClipWriter`.
    public static func write(_ plan: ClipPlan, from source: any ByteSource, emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard plan.readRange.upperBound <= source.size else {
            throw TrimError.truncatedSource(offset: source.size, expected: plan.readRange.upperBound)
        }
        var writer = ClipWriter(plan: plan)
        try writer.start(emit)
        try source.stream(plan.readRange) { chunk in try writer.consume(chunk, emit) }
        try writer.finish()
    }
}

/// What `clipproxy probe` prints: libavformat's identification plus the MP3 facts from the stream.
public struct SourceDescription: Sendable, Codable, Equatable {
    public var container: String
    public var codec: String
    public var version: String
    public var sampleRate: Int
    public var channels: Int
    public var frames: Int
    public var durationMs: Int64
    public var cbr: Bool
    public var encoderDelay: Int?
    public var encoderPadding: Int?
    public var firstFrameOffset: Int64
    public var samplesPerFrame: Int
    public var vbrTag: String?
    public var encoder: String?
    public var size: Int64

    enum CodingKeys: String, CodingKey {
        case container, codec, version, channels, frames, cbr, encoder, size
        case sampleRate = "sample_rate", durationMs = "duration_ms", encoderDelay = "encoder_delay"
        case encoderPadding = "encoder_padding", firstFrameOffset = "first_frame_offset"
        case samplesPerFrame = "samples_per_frame", vbrTag = "vbr_tag"
    }

    /// Identifies the source with libavformat, then indexes its frames. The head and tail of the
    /// source are read once and shared by both steps.
    public static func probe(_ source: any ByteSource) throws -> (SourceDescription, FrameIndex) {
        try probe(source, coveringMs: nil)
    }

    /// As `probe(_:)`, but a source that needs a scan is indexed only as far as `coveringMs`
    /// (`FrameIndexBuilder.build(_:coveringMs:)`), so a cold clip near the start reads about its
    /// own bytes. With a partial index, `frames` and `durationMs` say how far it reaches (lower
    /// bounds of the episode's); check `index.isComplete`.
    public static func probe(_ source: any ByteSource, coveringMs: Int64?) throws -> (SourceDescription, FrameIndex) {
        let source = HeadTailCachedSource(source, headBytes: FrameIndexBuilder.headBytes, tailBytes: FrameIndexBuilder.tailBytes)
        let format = try FormatProbe.probe(source, probeBytes: FrameIndexBuilder.headBytes)
        guard format.codec == "mp3" else {
            throw TrimError.unsupportedFormat("\(format.container)/\(format.codec): only MP3 sources can be cut without re-encoding")
        }
        let index = try FrameIndexBuilder.build(source, coveringMs: coveringMs)
        let description = SourceDescription(
            container: format.container, codec: format.codec, version: index.header.version.description,
            sampleRate: index.sampleRate, channels: index.header.channels, frames: index.frameCount,
            durationMs: index.durationMs, cbr: index.isConstantBitrate,
            encoderDelay: index.vbrTag?.encoderDelay, encoderPadding: index.vbrTag?.encoderPadding,
            firstFrameOffset: index.tagFrameOffset ?? index.audioStart, samplesPerFrame: index.samplesPerFrame,
            vbrTag: index.vbrTag?.kind.rawValue, encoder: index.vbrTag?.encoder, size: source.size)
        return (description, index)
    }
}
