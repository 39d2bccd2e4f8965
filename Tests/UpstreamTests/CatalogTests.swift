import Foundation
import Testing
import TestSupport
@testable import Upstream

/// The fixture episodes as make_fixtures.py wrote them (`episodes.json`).
struct FixtureEpisode: Decodable, Sendable {
    let _id: String
    let guid: String
    let feed_slug: String
    let source_key: String?

    static func all() throws -> [FixtureEpisode] {
        let url = try RepoPaths.require(Fixtures.directory.appendingPathComponent("episodes.json"), hint: "run `make fixtures`")
        return try JSONDecoder().decode([FixtureEpisode].self, from: Data(contentsOf: url))
    }
}

@Suite("Catalog: episode ids resolve through MongoDB (wire protocol) and the file stand-in")
struct CatalogTests {
    static let catalogDirectory = Fixtures.directory.appendingPathComponent("catalog")

    /// Checks every id form against `catalog`: ObjectId, plain guid, substack guid, 24-hex guid, unknown.
    func checkResolution(_ catalog: any EpisodeCatalog) throws {
        let episodes = try FixtureEpisode.all()
        #expect(episodes.count >= 5)
        for episode in episodes {
            let byId = try catalog.resolve(episode._id)
            #expect(byId.guid == episode.guid && byId.feedSlug == episode.feed_slug, "\(episode._id)")
            let byGuid = try catalog.resolve(episode.guid)
            #expect(byGuid.guid == episode.guid && byGuid.feedSlug == episode.feed_slug, "\(episode.guid)")
        }
        #expect(episodes.contains { $0.guid.hasPrefix("substack:") })
        let hexGuid = try #require(episodes.first { EpisodeIds.isObjectId($0.guid) }, "a fixture guid that is 24 hex digits")
        #expect(!episodes.contains { $0._id == hexGuid.guid }, "that guid is no _id: it resolves through the guid fallback")
        #expect(try catalog.resolve(hexGuid.guid).feedSlug == hexGuid.feed_slug)
        for unknown in ["ffffffffffffffffffffffff", "no-such-guid", "substack:1", ""] {
            #expect(throws: CatalogError.notFound("episode \(unknown)")) { try catalog.resolve(unknown) }
        }
    }

    @Test("MongoCatalog over libmongoc and the wire-protocol test server")
    func mongoCatalog() async throws {
        try await withTestServer(try TestServer.mongo(dataDirectory: Self.catalogDirectory)) { server in
            let pool = try MongoClientPool(uri: "mongodb://127.0.0.1:\(server.port)/?retryReads=false", database: "podinsight")
            try checkResolution(MongoCatalog(pool: pool))
        }
    }

    @Test("FileCatalog over the mongoexport files")
    func fileCatalog() throws {
        try checkResolution(try FileCatalog(directory: Self.catalogDirectory.path))
    }

    @Test("A stopped MongoDB gives `unavailable` within the timeout")
    func mongoStopped() async throws {
        let server = try TestServer.mongo(dataDirectory: Self.catalogDirectory)
        let pool = try MongoClientPool(uri: "mongodb://127.0.0.1:\(server.port)/?retryReads=false", database: "podinsight",
                                       timeout: .milliseconds(1000))
        _ = try MongoCatalog(pool: pool).resolve("685ba776e4f9ec2f0756267a")
        server.kill9()
        let started = ContinuousClock.now
        #expect { try MongoCatalog(pool: pool).resolve("685ba776e4f9ec2f0756267a") } throws: { error in
            guard case CatalogError.unavailable = error else { return false }
            return true
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        server.stop()
    }

    @Test("The source locator picks the one *_<guid8>_audio.mp3 under <feed>/<guid>/audio/ and ignores decoys")
    func locator() throws {
        let catalog = try FileCatalog(directory: Self.catalogDirectory.path)
        let locator = SourceLocator(catalog: catalog, lister: DirectoryLister(root: Fixtures.directory.appendingPathComponent("source").path))
        for episode in try FixtureEpisode.all() {
            if let key = episode.source_key {
                let resolved = try locator.resolve(episode._id)
                #expect(resolved.sourceKey == key)
                #expect(resolved.size > 0 && !resolved.etag.isEmpty)
                #expect(resolved.alsoMatched.isEmpty)
            } else {
                #expect(throws: CatalogError.self) { try locator.resolve(episode._id) }
            }
        }
    }

    @Test("Several matching objects: the greatest key wins and the rest are reported")
    func severalMatches() throws {
        struct Fixed: ObjectLister {
            func list(prefix: String) throws -> [StoredObject] {
                ["2024-01-01-a_0e983347_audio.mp3", "2024-06-01-b_0e983347_audio.mp3", "cover.jpg", "x_00000000_audio.mp3", "sub/c_0e983347_audio.mp3"]
                    .map { StoredObject(key: prefix + $0, size: 1, etag: "e") }
            }
        }
        let catalog = try FileCatalog(directory: Self.catalogDirectory.path)
        let resolved = try SourceLocator(catalog: catalog, lister: Fixed()).resolve("685ba776e4f9ec2f0756267a")
        #expect(resolved.sourceKey.hasSuffix("2024-06-01-b_0e983347_audio.mp3"))
        #expect(resolved.alsoMatched.count == 1 && resolved.alsoMatched[0].hasSuffix("2024-01-01-a_0e983347_audio.mp3"))
    }

    @Test("A malformed catalog file is an error naming the line")
    func malformedFile() throws {
        let dir = try TemporaryDirectory("catalog")
        defer { dir.remove() }
        try "{\"_id\":{\"$oid\":\"685ba776e4f9ec2f0756267a\"},\"guid\":\"g\"}\nnot json\n".write(toFile: dir.path + "/episode_metadata.json", atomically: true, encoding: .utf8)
        try "".write(toFile: dir.path + "/transcript_chunks_768d.json", atomically: true, encoding: .utf8)
        #expect(throws: CatalogError.invalidData("episode_metadata.json:2: not a JSON object")) { try FileCatalog(directory: dir.path) }
    }
}
