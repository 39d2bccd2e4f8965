import Foundation
import Testing
import TestSupport
@testable import Upstream

/// libmongoc speaking the real wire protocol to the mockupdb-based test server.
@Suite("libmongoc: queries through the wire-protocol test server")
struct MongoSmokeTests {
    static func writeCatalog(into dir: TemporaryDirectory) throws {
        let metadata = """
        {"_id":{"$oid":"685ba776e4f9ec2f0756267a"},"guid":"0e983347-7815-4b33-8a7e-2b1c9f0e1a11","episode_title":"One","duration_ms":{"$numberLong":"3600000"}}
        {"_id":{"$oid":"685ba776e4f9ec2f0756267b"},"guid":"substack:160734941","episode_title":"Two"}
        """
        let chunks = """
        {"_id":{"$oid":"785ba776e4f9ec2f07562670"},"episode_id":"0e983347-7815-4b33-8a7e-2b1c9f0e1a11","feed_slug":"the-daily-tones","chunk_index":0}
        {"_id":{"$oid":"785ba776e4f9ec2f07562671"},"episode_id":"0e983347-7815-4b33-8a7e-2b1c9f0e1a11","feed_slug":"the-daily-tones","chunk_index":1}
        {"_id":{"$oid":"785ba776e4f9ec2f07562672"},"episode_id":"substack:160734941","feed_slug":"substack-show","chunk_index":0}
        """
        try metadata.write(to: dir.url.appendingPathComponent("episode_metadata.json"), atomically: true, encoding: .utf8)
        try chunks.write(to: dir.url.appendingPathComponent("transcript_chunks_768d.json"), atomically: true, encoding: .utf8)
    }

    @Test("find by ObjectId and by string field, with projection and limit")
    func findDocuments() async throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        try Self.writeCatalog(into: data)
        try await withTestServer(try TestServer.mongo(dataDirectory: data.url)) { server in
            let pool = try MongoClientPool(uri: "mongodb://127.0.0.1:\(server.port)/?retryReads=false", database: "podcasts")
            try pool.ping()

            let byId = try pool.find(collection: "episode_metadata", filter: [("_id", .objectId("685ba776e4f9ec2f0756267a"))],
                                     projection: ["guid"], limit: 1)
            #expect(byId.count == 1)
            #expect(byId.first?["guid"]?.stringValue == "0e983347-7815-4b33-8a7e-2b1c9f0e1a11")
            #expect(byId.first?["episode_title"] == nil, "projection keeps only guid and _id")
            #expect(byId.first?["_id"]?.objectIdHex == "685ba776e4f9ec2f0756267a")

            let chunks = try pool.find(collection: "transcript_chunks_768d",
                                       filter: [("episode_id", .string("0e983347-7815-4b33-8a7e-2b1c9f0e1a11"))])
            #expect(chunks.count == 2)
            #expect(chunks.allSatisfy { $0["feed_slug"]?.stringValue == "the-daily-tones" })

            let none = try pool.find(collection: "episode_metadata", filter: [("_id", .objectId("000000000000000000000000"))])
            #expect(none.isEmpty)
        }
    }

    @Test("A server that is gone gives `unavailable` within the timeout, not a hang")
    func unavailable() throws {
        let port = try freeLoopbackPort()
        let pool = try MongoClientPool(uri: "mongodb://127.0.0.1:\(port)/", database: "podcasts", timeout: .milliseconds(800))
        let started = ContinuousClock.now
        let error = #expect(throws: MongoError.self) { try pool.ping() }
        #expect(error?.kind == .unavailable)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test("A malformed URI is rejected with a typed error")
    func badURI() {
        let error = #expect(throws: MongoError.self) { try MongoClientPool(uri: "mongo://nope", database: "x") }
        #expect(error?.kind == .invalidURI)
    }
}
