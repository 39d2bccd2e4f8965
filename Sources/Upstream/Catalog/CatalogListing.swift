import Foundation

/// An episode as a dashboard lists it (`episode_metadata`): who published it, what it is called,
/// when, and how long it is.
public struct EpisodeSummary: Sendable, Equatable {
    /// `_id` as 24 hex digits: the id `/clips` URLs use.
    public let episodeId: String
    public let guid: String
    public let podcastName: String
    public let episodeTitle: String
    /// ISO 8601 (UTC, milliseconds), nil when the document has no usable date.
    public let publishedDate: String?
    public let durationMs: Int64?

    public init(episodeId: String, guid: String, podcastName: String, episodeTitle: String, publishedDate: String?, durationMs: Int64?) {
        self.episodeId = episodeId
        self.guid = guid
        self.podcastName = podcastName
        self.episodeTitle = episodeTitle
        self.publishedDate = publishedDate
        self.durationMs = durationMs
    }

    /// The only fields a listing needs (plus `_id`): queries project onto these.
    public static let fields = ["guid", "podcast_name", "episode_title", "published_date", "duration_ms"]

    /// From an `episode_metadata` document; nil without an `_id` or a guid (nothing could play it).
    public init?(document: JSONValue) {
        guard let id = document["_id"]?.objectIdHex ?? document["_id"]?.stringValue,
              let guid = document["guid"]?.stringValue, !guid.isEmpty else { return nil }
        self.init(episodeId: id.lowercased(), guid: guid, podcastName: document["podcast_name"]?.stringValue ?? "",
                  episodeTitle: document["episode_title"]?.stringValue ?? "",
                  publishedDate: document["published_date"].flatMap(Self.isoDate),
                  durationMs: document["duration_ms"]?.integerValue)
    }

    /// Newest first; undated episodes last.
    public static func newestFirst(_ a: EpisodeSummary, _ b: EpisodeSummary) -> Bool {
        (a.publishedDate ?? "", a.episodeId) > (b.publishedDate ?? "", b.episodeId)
    }

    /// A date as mongoexport writes it (`{"$date": "2024-05-01T06:00:00.000Z"}`), as canonical
    /// Extended JSON does (`{"$date": {"$numberLong": "…"}}`), or a plain string.
    static func isoDate(_ value: JSONValue) -> String? {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        if let text = value.stringValue ?? value["$date"]?.stringValue {
            let date = (try? style.parse(text)) ?? (try? Date.ISO8601FormatStyle().parse(text))
            return date.map { style.format($0) } ?? text
        }
        guard let millis = value["$date"]?.integerValue else { return nil }
        return style.format(Date(timeIntervalSince1970: Double(millis) / 1000))
    }
}

/// What a transcript search asks for: words that must all appear in a chunk's text, in any case.
public struct TranscriptQuery: Sendable, Equatable {
    public let words: [String]

    /// nil when `text` has no word (only spaces).
    public init?(_ text: String) {
        let words = text.split(whereSeparator: { $0.isWhitespace }).map(String.init)
        guard !words.isEmpty else { return nil }
        self.words = words
    }

    public func matches(_ text: String) -> Bool {
        words.allSatisfy { text.range(of: $0, options: [.caseInsensitive]) != nil }
    }

    /// A word as a regular expression that matches only itself: every ASCII character other than
    /// a letter or digit is escaped (in PCRE, and in Python's `re`, `\` before one is that
    /// character), so `a.b(c` is searched as text, never run as a pattern.
    public static func literalPattern(_ word: String) -> String {
        var out = ""
        for scalar in word.unicodeScalars {
            if scalar.isASCII && !(scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)) { out += "\\" }
            out.unicodeScalars.append(scalar)
        }
        return out
    }
}

/// A transcript chunk a search found, with the episode it belongs to.
public struct TranscriptHit: Sendable, Equatable {
    /// `episode_metadata._id` when the catalog has metadata for the guid, else the guid (which
    /// `/clips` also accepts).
    public let episodeId: String
    public let guid: String
    public let podcastName: String
    public let episodeTitle: String
    public let chunk: TranscriptChunk

    public init(episodeId: String, guid: String, podcastName: String, episodeTitle: String, chunk: TranscriptChunk) {
        self.episodeId = episodeId
        self.guid = guid
        self.podcastName = podcastName
        self.episodeTitle = episodeTitle
        self.chunk = chunk
    }

    /// The fields a search reads of a chunk: never the embedding.
    public static let chunkFields = ["episode_id"] + TranscriptChunk.fields

    /// Joins chunks (with their guid) to what the catalog knows of their episodes.
    static func joined(_ chunks: [(guid: String, chunk: TranscriptChunk)], episodes: [EpisodeSummary]) -> [TranscriptHit] {
        var byGuid: [String: EpisodeSummary] = [:]
        for episode in episodes where byGuid[episode.guid] == nil { byGuid[episode.guid] = episode }
        return chunks.map { found in
            let episode = byGuid[found.guid]
            return TranscriptHit(episodeId: episode?.episodeId ?? found.guid, guid: found.guid, podcastName: episode?.podcastName ?? "",
                                 episodeTitle: episode?.episodeTitle ?? "", chunk: found.chunk)
        }
    }
}
