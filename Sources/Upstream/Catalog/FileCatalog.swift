import Foundation

/// The catalog read from mongoexport JSON-lines files (`episode_metadata.json`,
/// `transcript_chunks_768d.json`), for the embedded default that runs on one machine.
/// Same resolution rules as `MongoCatalog`.
public struct FileCatalog: EpisodeCatalog {
    let guidById: [String: String]
    let feedByGuid: [String: String]
    let chunksByGuid: [String: [TranscriptChunk]]

    /// Loads both files from `directory`. A malformed line is an error naming file and line.
    public init(directory: String) throws {
        var guids: [String: String] = [:]
        for (line, document) in try Self.documents(directory + "/episode_metadata.json") {
            guard let id = document["_id"]?.objectIdHex ?? document["_id"]?.stringValue else {
                throw CatalogError.invalidData("episode_metadata.json:\(line): no _id")
            }
            if let guid = document["guid"]?.stringValue { guids[id.lowercased()] = guid }
        }
        var feeds: [String: String] = [:]
        var chunks: [String: [TranscriptChunk]] = [:]
        for (_, document) in try Self.documents(directory + "/transcript_chunks_768d.json") {
            guard let guid = document["episode_id"]?.stringValue else { continue }
            if let feed = document["feed_slug"]?.stringValue, feeds[guid] == nil { feeds[guid] = feed }
            if let chunk = TranscriptChunk(document: document) { chunks[guid, default: []].append(chunk) }
        }
        guidById = guids
        feedByGuid = feeds
        chunksByGuid = chunks.mapValues(TranscriptChunk.inOrder)
    }

    /// Loaded into memory at start-up: always able to answer.
    public func ping() {}

    /// Every episode id (`_id`) with a feed, sorted: what a demo page can list.
    public var episodeIds: [String] {
        guidById.filter { feedByGuid[$0.value] != nil }.map(\.key).sorted()
    }

    public func resolve(_ episodeId: String) throws -> CatalogEntry {
        var guid = episodeId
        if EpisodeIds.isObjectId(episodeId), let found = guidById[episodeId.lowercased()] { guid = found }
        guard let feedSlug = feedByGuid[guid] else { throw CatalogError.notFound("episode \(episodeId)") }
        return CatalogEntry(episodeId: episodeId, guid: guid, feedSlug: feedSlug)
    }

    public func transcriptChunks(guid: String) -> [TranscriptChunk] { chunksByGuid[guid] ?? [] }

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
