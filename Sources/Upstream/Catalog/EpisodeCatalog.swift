/// An episode as the catalog knows it: its guid and the feed it belongs to.
public struct CatalogEntry: Sendable, Equatable {
    public let episodeId: String
    public let guid: String
    public let feedSlug: String
}

public enum CatalogError: Error, CustomStringConvertible, Sendable, Equatable {
    /// No such episode (or no feed for it). Maps to 404.
    case notFound(String)
    /// The catalog cannot be asked right now (server down, timeout). Maps to 502/503.
    case unavailable(String)
    /// The catalog answered with data clipproxy cannot use (a document without a guid, ...).
    case invalidData(String)

    public var description: String {
        switch self {
        case .notFound(let what): "not found: \(what)"
        case .unavailable(let why): "catalog unavailable: \(why)"
        case .invalidData(let why): "catalog data unusable: \(why)"
        }
    }
}

/// Resolves an episode id to its guid and feed slug.
///
/// A 24-hex id is first looked up as `episode_metadata._id`; its `guid` then finds `feed_slug`
/// in `transcript_chunks_768d` (`episode_id = guid`). Any other id, and a 24-hex id that is no
/// `_id` (some guids are themselves 24 hex digits), is taken as a guid. Blocking: call it off the
/// event loop.
public protocol EpisodeCatalog: Sendable {
    func resolve(_ episodeId: String) throws -> CatalogEntry
    /// The episode's transcript chunks (`transcript_chunks_768d` with `episode_id = guid`) that
    /// can be placed in time, in transcript order; empty when it has none.
    func transcriptChunks(guid: String) throws -> [TranscriptChunk]
    /// At most `limit` episodes of `episode_metadata`, the most recently published first.
    func recentEpisodes(limit: Int) throws -> [EpisodeSummary]
    /// The `episode_metadata` document of `guid` (names, date), nil when there is none.
    func episodeSummary(guid: String) throws -> EpisodeSummary?
    /// At most `limit` transcript chunks whose text holds every word of `query` in any case, in
    /// the catalog's order, each with its episode's names.
    func searchTranscripts(_ query: TranscriptQuery, limit: Int) throws -> [TranscriptHit]
    /// Throws when the catalog cannot answer right now (readiness checks).
    func ping() throws
}

enum EpisodeIds {
    static func isObjectId(_ id: String) -> Bool {
        id.utf8.count == 24 && id.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || (0x41...0x46).contains($0) }
    }
}

/// The catalog in MongoDB, through a libmongoc client pool.
public struct MongoCatalog: EpisodeCatalog {
    let pool: MongoClientPool

    public init(pool: MongoClientPool) { self.pool = pool }

    public func ping() throws { try pool.ping() }

    public func resolve(_ episodeId: String) throws -> CatalogEntry {
        try asCatalogErrors {
            var guid = episodeId
            if EpisodeIds.isObjectId(episodeId) {
                let documents = try pool.find(collection: "episode_metadata", filter: [("_id", .objectId(episodeId.lowercased()))],
                                              projection: ["guid"], limit: 1)
                if let document = documents.first {
                    guard let found = document["guid"]?.stringValue, !found.isEmpty else {
                        throw CatalogError.invalidData("episode_metadata \(episodeId) has no guid")
                    }
                    guid = found
                }
            }
            let chunks = try pool.find(collection: "transcript_chunks_768d", filter: [("episode_id", .string(guid))],
                                       projection: ["feed_slug"], limit: 1)
            guard let feedSlug = chunks.first?["feed_slug"]?.stringValue, !feedSlug.isEmpty else {
                throw CatalogError.notFound("episode \(episodeId)")
            }
            return CatalogEntry(episodeId: episodeId, guid: guid, feedSlug: feedSlug)
        }
    }

    /// Projected onto the caption fields, `_id` excluded: nothing else of a chunk is transferred.
    public func transcriptChunks(guid: String) throws -> [TranscriptChunk] {
        try asCatalogErrors {
            let documents = try pool.find(collection: "transcript_chunks_768d", filter: [("episode_id", .string(guid))],
                                          projection: TranscriptChunk.fields, includeId: false)
            return TranscriptChunk.inOrder(documents.compactMap(TranscriptChunk.init(document:)))
        }
    }

    /// Newest first by `published_date`, projected onto the listing's fields.
    public func recentEpisodes(limit: Int) throws -> [EpisodeSummary] {
        try asCatalogErrors {
            try pool.find(collection: "episode_metadata", filter: [], projection: EpisodeSummary.fields,
                          sort: [("published_date", false)], limit: limit).compactMap(EpisodeSummary.init(document:))
        }
    }

    /// One `find` by guid, projected onto the listing's fields.
    public func episodeSummary(guid: String) throws -> EpisodeSummary? {
        try asCatalogErrors {
            try pool.find(collection: "episode_metadata", filter: [("guid", .oneOf([guid]))], projection: EpisodeSummary.fields,
                          limit: 1).compactMap(EpisodeSummary.init(document:)).first
        }
    }

    /// One regular expression per word (escaped: the words are text), projected onto the fields
    /// a hit needs so the embedding never crosses the network; then the hits' episodes by guid.
    /// Without a text index this scans the collection until `limit` chunks matched.
    public func searchTranscripts(_ query: TranscriptQuery, limit: Int) throws -> [TranscriptHit] {
        try asCatalogErrors {
            let documents = try pool.find(collection: "transcript_chunks_768d",
                                          filter: [("text", .matchingAll(query.words.map(TranscriptQuery.literalPattern)))],
                                          projection: TranscriptHit.chunkFields, includeId: false, limit: limit)
            let chunks = documents.compactMap { document -> (guid: String, chunk: TranscriptChunk)? in
                guard let guid = document["episode_id"]?.stringValue, let chunk = TranscriptChunk(document: document) else { return nil }
                return (guid, chunk)
            }
            var guids: [String] = []
            for found in chunks where !guids.contains(found.guid) { guids.append(found.guid) }
            let episodes = guids.isEmpty ? [] : try pool.find(collection: "episode_metadata", filter: [("guid", .oneOf(guids))],
                                                               projection: EpisodeSummary.fields)
            return TranscriptHit.joined(chunks, episodes: episodes.compactMap(EpisodeSummary.init(document:)))
        }
    }

    /// MongoDB's failures as the catalog's: no server is an outage, a refused query bad data.
    private func asCatalogErrors<T>(_ query: () throws -> T) throws -> T {
        do {
            return try query()
        } catch let error as MongoError {
            switch error.kind {
            case .unavailable, .invalidURI: throw CatalogError.unavailable(error.description)
            case .commandFailed, .badDocument: throw CatalogError.invalidData(error.description)
            }
        }
    }
}
