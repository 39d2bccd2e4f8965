import Foundation

/// The catalog read from mongoexport JSON-lines files (`episode_metadata.json`,
/// `transcript_chunks_768d.json`), for the embedded default that runs on one machine.
/// Same resolution rules as `MongoCatalog`.
public struct FileCatalog: EpisodeCatalog {
    let guidById: [String: String]
    let feedByGuid: [String: String]
    let chunksByGuid: [String: [TranscriptChunk]]
    /// Both files' documents in file order, for listings and searches.
    let episodes: [EpisodeSummary]
    let chunks: [(guid: String, chunk: TranscriptChunk)]

    /// Loads both files from `directory`. A malformed line is an error naming file and line.
    public init(directory: String) throws {
        var guids: [String: String] = [:]
        var episodes: [EpisodeSummary] = []
        for (line, document) in try Self.documents(directory + "/episode_metadata.json") {
            guard let id = document["_id"]?.objectIdHex ?? document["_id"]?.stringValue else {
                throw CatalogError.invalidData("episode_metadata.json:\(line): no _id")
            }
            if let guid = document["guid"]?.stringValue { guids[id.lowercased()] = guid }
            if let episode = EpisodeSummary(document: document) { episodes.append(episode) }
        }
        var feeds: [String: String] = [:]
        var chunks: [(guid: String, chunk: TranscriptChunk)] = []
        for (_, document) in try Self.documents(directory + "/transcript_chunks_768d.json") {
            guard let guid = document["episode_id"]?.stringValue else { continue }
            if let feed = document["feed_slug"]?.stringValue, feeds[guid] == nil { feeds[guid] = feed }
            if let chunk = TranscriptChunk(document: document) { chunks.append((guid, chunk)) }
        }
        guidById = guids
        feedByGuid = feeds
        chunksByGuid = Dictionary(grouping: chunks, by: \.guid).mapValues { TranscriptChunk.inOrder($0.map(\.chunk)) }
        self.episodes = episodes
        self.chunks = chunks
    }

    /// Loaded into memory at start-up: always able to answer.
    public func ping() {}

    public func resolve(_ episodeId: String) throws -> CatalogEntry {
        var guid = episodeId
        if EpisodeIds.isObjectId(episodeId), let found = guidById[episodeId.lowercased()] { guid = found }
        guard let feedSlug = feedByGuid[guid] else { throw CatalogError.notFound("episode \(episodeId)") }
        return CatalogEntry(episodeId: episodeId, guid: guid, feedSlug: feedSlug)
    }

    public func transcriptChunks(guid: String) -> [TranscriptChunk] { chunksByGuid[guid] ?? [] }

    public func recentEpisodes(limit: Int) -> [EpisodeSummary] {
        Array(episodes.sorted(by: EpisodeSummary.newestFirst).prefix(limit))
    }

    public func episodeSummary(guid: String) -> EpisodeSummary? { episodes.first { $0.guid == guid } }

    /// A scan in memory, in file order (the order a MongoDB collection scan returns them in).
    public func searchTranscripts(_ query: TranscriptQuery, limit: Int) -> [TranscriptHit] {
        TranscriptHit.joined(Array(chunks.lazy.filter { query.matches($0.chunk.text) }.prefix(limit)), episodes: episodes)
    }

    static func documents(_ path: String) throws -> [(Int, JSONValue)] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CatalogError.unavailable("cannot read \(path): \(error.localizedDescription)")
        }
        var out: [(Int, JSONValue)] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty else { continue }
            guard let value = try? JSONValue(parsing: String(trimmed)), case .object = value else {
                throw CatalogError.invalidData("\((path as NSString).lastPathComponent):\(number + 1): not a JSON object")
            }
            out.append((number + 1, value))
        }
        return out
    }
}
