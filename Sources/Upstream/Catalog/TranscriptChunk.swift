/// One chunk of an episode's transcript (`transcript_chunks_768d`): what was said from
/// `startTime` to `endTime`, in seconds of the episode's audio.
public struct TranscriptChunk: Sendable, Equatable {
    public let chunkIndex: Int64
    public let startTime: Double
    /// nil when the document has none (missing or null): the chunk then lasts until the next one starts.
    public let endTime: Double?
    public let text: String

    public init(chunkIndex: Int64, startTime: Double, endTime: Double?, text: String) {
        self.chunkIndex = chunkIndex
        self.startTime = startTime
        self.endTime = endTime
        self.text = text
    }

    /// The only fields a caption needs. The real documents also carry a 768-float embedding that
    /// must never cross the network, so queries project onto these.
    public static let fields = ["start_time", "end_time", "text", "chunk_index"]

    /// A chunk from a catalog document; nil when it cannot be placed in time or has no text
    /// (such chunks exist only to name the episode's feed).
    public init?(document: JSONValue) {
        guard let start = document["start_time"]?.doubleValue, let text = document["text"]?.stringValue else { return nil }
        self.init(chunkIndex: document["chunk_index"]?.integerValue ?? 0, startTime: start,
                  endTime: document["end_time"]?.doubleValue, text: text)
    }

    /// Transcript order: by start time, then chunk index.
    public static func inOrder(_ chunks: [TranscriptChunk]) -> [TranscriptChunk] {
        chunks.sorted { ($0.startTime, $0.chunkIndex) < ($1.startTime, $1.chunkIndex) }
    }
}
