/// Why a source could not be probed, indexed, planned or cut. Messages say what to do where
/// something can be done; ClipProxy maps these to HTTP statuses.
public enum TrimError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The source bytes could not be read at all.
    case sourceUnavailable(String)
    /// The source ended before `expected` (it is shorter than its headers or index say).
    case truncatedSource(offset: Int64, expected: Int64)
    /// Not a stream clipproxy can cut (not MP3, no audio, unsupported layer).
    case unsupportedFormat(String)
    /// The bytes claim to be MP3 but are damaged beyond use.
    case corrupt(String)
    /// The requested window does not overlap the audio.
    case windowOutsideAudio(startMs: Int64, durationMs: Int64)
    /// A stored frame index was written by another version or is damaged; rebuild it.
    case badFrameIndex(String)

    public var description: String {
        switch self {
        case .sourceUnavailable(let why): "source unavailable: \(why)"
        case .truncatedSource(let offset, let expected): "source ends at byte \(offset), expected \(expected) bytes"
        case .unsupportedFormat(let why): "unsupported audio: \(why)"
        case .corrupt(let why): "corrupt MP3: \(why)"
        case .windowOutsideAudio(let start, let duration):
            "the window starting at \(start) ms (\(duration) ms long) is outside the audio"
        case .badFrameIndex(let why): "stored frame index unusable: \(why)"
        }
    }
}

/// A clip reaches past what a partial frame index covers. Not a fault of the source or the
/// request (so not a `TrimError`, which ClipProxy maps to statuses): extend the index to cover
/// `neededMs` (`FrameIndexBuilder.extend(_:source:coveringMs:)`) and plan again, which then succeeds
/// or, if the index turned out complete, gives the complete index's answer.
public struct FrameIndexTooShort: Error, Sendable, Equatable, CustomStringConvertible {
    /// Decoded audio, in ms from the start, the index must cover: the end of the requested window.
    public let neededMs: Int64
    /// What the index covers now.
    public let coveredMs: Int64

    public init(neededMs: Int64, coveredMs: Int64) {
        self.neededMs = neededMs
        self.coveredMs = coveredMs
    }

    public var description: String { "the frame index covers \(coveredMs) ms; this clip needs it to reach \(neededMs) ms" }
}
