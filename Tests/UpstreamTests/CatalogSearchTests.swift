import Foundation
import Testing
import TestSupport
@testable import Upstream

/// The fixture catalog with a 768-float embedding on every transcript chunk, as the real
/// collection has: a search must never bring it back.
enum EmbeddedCatalog {
    static func write(into directory: URL) throws {
        let fixture = CatalogTests.catalogDirectory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: fixture.appendingPathComponent("episode_metadata.json"),
                                         to: directory.appendingPathComponent("episode_metadata.json"))
        let embedding = (0..<768).map { Double($0) / 768 }
        let lines = try String(contentsOf: fixture.appendingPathComponent("transcript_chunks_768d.json"), encoding: .utf8)
            .split(separator: "\n").map { line -> String in
                var document = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                document["embedding_768d"] = embedding
                return String(decoding: try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys]), as: UTF8.self)
            }
        try (lines.joined(separator: "\n") + "\n").write(to: directory.appendingPathComponent("transcript_chunks_768d.json"),
                                                          atomically: true, encoding: .utf8)
    }
}

@Suite("Catalog: recent episodes and transcript search (file catalog and MongoDB over the wire)")
struct CatalogSearchTests {
    /// The checks both catalogs must pass, with the answers they gave (to compare the two).
    func checkListingAndSearch(_ catalog: any EpisodeCatalog) throws -> (episodes: [EpisodeSummary], hits: [TranscriptHit]) {
        let episodes = try catalog.recentEpisodes(limit: 100)
        #expect(episodes.count == 8, "every fixture episode: \(episodes.map(\.episodeId))")
        let dates = episodes.compactMap(\.publishedDate)
        #expect(dates.count == 8 && dates == dates.sorted(by: >), "newest first: \(dates)")
        let clocks = try #require(episodes.first { $0.episodeId == "685ba776e4f9ec2f0756267a" })
        #expect(clocks == EpisodeSummary(episodeId: "685ba776e4f9ec2f0756267a", guid: "0e983347-7815-4b33-8a7e-2b1c9f0e1a11",
                                         podcastName: "The Daily Tones", episodeTitle: "Clocks That Disagree",
                                         publishedDate: "2024-05-01T06:00:00.000Z", durationMs: 72_000))
        #expect(try catalog.recentEpisodes(limit: 2).map(\.episodeId) == Array(episodes.prefix(2).map(\.episodeId)))

        // Every word, any case, any order.
        let hits = try catalog.searchTranscripts(try #require(TranscriptQuery("HARBOUR  lanterns")), limit: 20)
        #expect(hits.count == 2, "\(hits)")
        #expect(hits.allSatisfy { $0.chunk.text == "Seven tired sailors counted forty-two lanterns on the harbour wall." })
        #expect(hits.map(\.episodeId) == ["685ba776e4f9ec2f0756267a", "685ba776e4f9ec2f0756267b"])
        #expect(hits.map(\.podcastName) == ["The Daily Tones", "The Substack Show"])
        #expect(hits.map(\.episodeTitle) == ["Clocks That Disagree", "Bit Reservoirs, Explained"])
        #expect(hits.map(\.chunk.startTime) == [15, 0] && hits.map(\.chunk.endTime) == [30, 15])
        #expect(try catalog.searchTranscripts(try #require(TranscriptQuery("lanterns zebra")), limit: 20).isEmpty, "all words must appear")

        // Words are text: regular-expression characters match only themselves.
        for literal in ["a.b(c", "l.nterns", "lantern[s]", "^seven", ".*", "\\"] {
            #expect(try catalog.searchTranscripts(try #require(TranscriptQuery(literal)), limit: 20).isEmpty, "\(literal) is text, not a pattern")
        }
        let dots = try catalog.searchTranscripts(try #require(TranscriptQuery("waves..")), limit: 20)
        #expect(!dots.isEmpty && dots.allSatisfy { $0.chunk.text.hasSuffix("sine waves..") }, "\(dots)")

        // The limit bounds the answer; the most common word has more chunks than that.
        #expect(try catalog.searchTranscripts(try #require(TranscriptQuery("the")), limit: 100).count > 3)
        #expect(try catalog.searchTranscripts(try #require(TranscriptQuery("the")), limit: 3).count == 3)
        return (episodes, hits)
    }

    @Test("FileCatalog lists newest first and searches in memory, words as text")
    func fileCatalog() throws {
        _ = try checkListingAndSearch(try FileCatalog(directory: CatalogTests.catalogDirectory.path))
    }

    @Test("MongoCatalog answers as the file catalog; the wire shows escaped regexes, limits and projections without the embedding")
    func mongoCatalog() async throws {
        let work = try TemporaryDirectory("catalog-search")
        defer { work.remove() }
        let data = work.url.appendingPathComponent("catalog")
        try EmbeddedCatalog.write(into: data)
        let log = work.url.appendingPathComponent("commands.jsonl")
        try await withTestServer(try TestServer.mongo(dataDirectory: data, commandLog: log)) { server in
            let pool = try MongoClientPool(uri: "mongodb://127.0.0.1:\(server.port)/?retryReads=false", database: "podinsight")
            let mongo = try checkListingAndSearch(MongoCatalog(pool: pool))
            let file = try checkListingAndSearch(try FileCatalog(directory: data.path))
            #expect(mongo.episodes == file.episodes)
            #expect(mongo.hits == file.hits)

            let commands = try String(contentsOf: log, encoding: .utf8).split(separator: "\n").compactMap {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            let searches = commands.filter { $0["find"] as? String == "transcript_chunks_768d" }
            #expect(!searches.isEmpty)
            for search in searches {
                #expect(search["projection"] as? [String: Int] == ["episode_id": 1, "start_time": 1, "end_time": 1, "text": 1, "chunk_index": 1, "_id": 0],
                        "\(search)")
                #expect(search["limit"] != nil, "bounded: \(search)")
            }
            func regexes(_ command: [String: Any]) -> [[String: String]] {
                ((command["filter"] as? [String: Any])?["$and"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? [String: String] }
            }
            #expect(searches.contains { regexes($0) == [["$regex": "a\\.b\\(c", "$options": "i"]] }, "escaped: \(searches.map(regexes))")
            #expect(searches.contains { regexes($0).count == 2 }, "one regex per word")

            let listings = commands.filter { $0["find"] as? String == "episode_metadata" && $0["sort"] != nil }
            #expect(!listings.isEmpty && listings.allSatisfy { $0["sort"] as? [String: Int] == ["published_date": -1] && $0["limit"] != nil })
            let lookups = commands.filter { $0["find"] as? String == "episode_metadata" }
            #expect(lookups.allSatisfy { ($0["projection"] as? [String: Int]).map { $0.count == EpisodeSummary.fields.count } == true }, "\(lookups)")

            // The embedding is there to be left out: an unprojected find returns it.
            let whole = try pool.find(collection: "transcript_chunks_768d", filter: [], limit: 1)
            #expect(whole.first?["embedding_768d"] != nil)
        }
    }

    @Test("literalPattern escapes every ASCII character that is not a letter or digit, and nothing else")
    func literalPattern() {
        #expect(TranscriptQuery.literalPattern("a.b(c") == "a\\.b\\(c")
        #expect(TranscriptQuery.literalPattern("forty-two?") == "forty\\-two\\?")
        #expect(TranscriptQuery.literalPattern("Ça_va日本") == "Ça\\_va日本")
        #expect(TranscriptQuery("   ") == nil)
        #expect(TranscriptQuery(" a\tb\nc ")?.words == ["a", "b", "c"])
    }
}
