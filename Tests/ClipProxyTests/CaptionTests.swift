import Foundation
import Testing
import TestSupport
@testable import ClipProxy
@testable import Trim
@testable import Upstream

/// A cue as a test reads it back from a WebVTT body.
struct ParsedCue: Equatable, CustomStringConvertible {
    let startMs: Int64
    let endMs: Int64
    let text: String
    var description: String { "\(startMs)-\(endMs) \(text)" }
}

/// The fixture catalog with two episodes' transcripts replaced, in a directory of its own (the
/// shared fixtures stay as every other test expects them):
/// - `oddEpisode`: chunks with text WebVTT must escape, an end_time that is null, one that is
///   missing, stored out of order, each with a 768-float embedding as in the real collection;
/// - `silentEpisode`: one chunk that names the feed but has no text or times (no transcript).
enum CaptionCatalog {
    static let episode = ServerTests.episode
    static let guid = "0e983347-7815-4b33-8a7e-2b1c9f0e1a11"
    static let oddEpisode = "685ba776e4f9ec2f0756267e"
    static let oddGuid = "e2c7f1d0-3b1a-4c55-9d7e-6a5b4c3d2e1f"
    static let silentEpisode = "685ba776e4f9ec2f0756267d"
    static let silentGuid = "tag:example.org,2024:ep-10"
    static let fixtureCatalog = Fixtures.directory.appendingPathComponent("catalog")

    /// The odd episode's captions for the clip from 5 s (a 44.1 kHz source, so 5 s is sample
    /// 220500 exactly): escaped, one line each, chunk 1 ending where chunk 2 starts, chunk 2
    /// ending with the clip.
    static let oddCaptionsFrom5s = """
        WEBVTT

        00:00:00.000 --> 00:00:05.000
        Fish &amp; chips &lt;b&gt;bold&lt;/b&gt; a --&gt; b

        00:00:05.000 --> 00:00:15.500
        Line one Line two Line three

        00:00:15.500 --> 00:00:30.000
        Ça va? 日本語 — “quotes” 🎧

        """

    /// Writes the catalog into `directory`; `suffix` is appended to every text of `episode` (a
    /// transcript that changed).
    static func write(into directory: URL, suffix: String = "") throws {
        let embedding = (0..<768).map { Double($0) / 768 }
        let odd: [[String: Any]] = [
            ["chunk_index": 2, "start_time": 20.5, "text": "Ça va? 日本語 — “quotes” 🎧"],
            ["chunk_index": 0, "start_time": 0.0, "end_time": 10.0, "text": "Fish & chips <b>bold</b> a --> b"],
            ["chunk_index": 1, "start_time": 10.0, "end_time": NSNull(), "text": "Line one\nLine two\r\n\r\nLine three"],
        ].map { $0.merging(["episode_id": oddGuid, "feed_slug": "low-rate-talk", "embedding_768d": embedding]) { a, _ in a } }
        let silent: [[String: Any]] = [["episode_id": silentGuid, "feed_slug": "tagged-and-covered", "chunk_index": 0]]
        var lines: [String] = []
        let original = try String(contentsOf: fixtureCatalog.appendingPathComponent("transcript_chunks_768d.json"), encoding: .utf8)
        for line in original.split(separator: "\n") {
            guard var document = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
            let owner = document["episode_id"] as? String
            if owner == oddGuid || owner == silentGuid { continue }
            if owner == guid, !suffix.isEmpty { document["text"] = (document["text"] as? String ?? "") + suffix }
            lines.append(try jsonLine(document))
        }
        lines += try (odd + silent).map(jsonLine)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(to: directory.appendingPathComponent("transcript_chunks_768d.json"), atomically: true, encoding: .utf8)
        let metadata = fixtureCatalog.appendingPathComponent("episode_metadata.json")
        try? FileManager.default.removeItem(at: directory.appendingPathComponent("episode_metadata.json"))
        try FileManager.default.copyItem(at: metadata, to: directory.appendingPathComponent("episode_metadata.json"))
    }

    static func jsonLine(_ document: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
    }

    /// What the fixture catalog says `guid` said, in transcript order (every fixture chunk has an end).
    static func fixtureChunks(_ guid: String) throws -> [(start: Double, end: Double, text: String)] {
        let text = try String(contentsOf: fixtureCatalog.appendingPathComponent("transcript_chunks_768d.json"), encoding: .utf8)
        return try text.split(separator: "\n").compactMap { line -> (Double, Double, String, Int)? in
            let document = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            guard document["episode_id"] as? String == guid else { return nil }
            return (try #require(document["start_time"] as? Double), try #require(document["end_time"] as? Double),
                    try #require(document["text"] as? String), try #require(document["chunk_index"] as? Int))
        }.sorted { ($0.0, $0.3) < ($1.0, $1.3) }.map { ($0.0, $0.1, $0.2) }
    }

    /// The cues a clip must carry, worked out from the fixture transcript and the clip's plan
    /// (the sample it starts on and its exact length), as a listener hears it.
    static func expectedCues(guid: String, sourceKey: String, startMs: Int64, durationMs: Int64) throws -> (cues: [ParsedCue], plan: ClipPlan) {
        let source = try FileByteSource(path: Fixtures.directory.appendingPathComponent("source/\(sourceKey)").path)
        let plan = try ClipPlan.plan(try FrameIndexBuilder.build(source), .init(startMs: startMs, durationMs: durationMs))
        let rate = Double(plan.sampleRate)
        let clipStart = Double(plan.startSample) / rate
        let lengthMs = Int64((Double(plan.sampleCount) / rate * 1000).rounded())
        let cues = try fixtureChunks(guid).compactMap { chunk -> ParsedCue? in
            let start = max(0, Int64(((chunk.start - clipStart) * 1000).rounded()))
            let end = min(lengthMs, Int64(((chunk.end - clipStart) * 1000).rounded()))
            return end > start ? ParsedCue(startMs: start, endMs: end, text: chunk.text) : nil
        }
        return (cues, plan)
    }
}

/// Reads a WebVTT body the way the tests need: the header, then blocks of a timing line and one
/// line of text. A block of any other shape fails the parse.
func parseWebVTT(_ body: String) throws -> [ParsedCue] {
    var blocks = body.components(separatedBy: "\n\n")
    #expect(blocks.removeFirst() == "WEBVTT", "the file starts with the WEBVTT header alone on its line")
    #expect(body.hasSuffix("\n"))
    return try blocks.filter { !$0.trimmingCharacters(in: .newlines).isEmpty }.map { block in
        let lines = block.trimmingCharacters(in: .newlines).components(separatedBy: "\n")
        try #require(lines.count == 2, "a cue is a timing line and one text line: \(block)")
        let match = try #require(lines[0].wholeMatch(of: /(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)/), "timing \(lines[0])")
        func ms(_ h: Substring, _ m: Substring, _ s: Substring, _ f: Substring) -> Int64 {
            Int64(h)! * 3_600_000 + Int64(m)! * 60_000 + Int64(s)! * 1000 + Int64(f)!
        }
        return ParsedCue(startMs: ms(match.1, match.2, match.3, match.4), endMs: ms(match.5, match.6, match.7, match.8), text: lines[1])
    }
}

/// Runs `body` against an embedded server of its own whose catalog is `CaptionCatalog` (with
/// `suffix` on the fixture episode's texts) and whose environment adds `extra`.
func withCaptionServer<T>(_ label: String, suffix: String = "", extra: [String: String] = [:],
                          _ body: (ClipProxyProcess) throws -> T) throws -> T {
    let work = try TemporaryDirectory(label)
    defer { work.remove() }
    let catalog = work.url.appendingPathComponent("catalog")
    try CaptionCatalog.write(into: catalog, suffix: suffix)
    var environment = EmbeddedServer(work: work).environment
    environment["CLIPPROXY_CATALOG_DIR"] = catalog.path
    let server = try ClipProxyProcess(environment: environment.merging(extra) { $1 })
    defer { server.stop() }
    return try body(server)
}

@Suite("Captions: pure cue timing and WebVTT writing")
struct CaptionFormatTests {
    @Test("Timestamps are HH:MM:SS.mmm; hours keep counting past a day")
    func timestamps() {
        #expect(WebVTT.timestamp(0) == "00:00:00.000")
        #expect(WebVTT.timestamp(3_723_004) == "01:02:03.004")
        #expect(WebVTT.timestamp(100 * 3_600_000 + 59_999) == "100:00:59.999")
    }

    @Test("Cue text: & < > escaped, no literal -->, line breaks and controls folded into one line, non-ASCII kept")
    func cueText() {
        #expect(WebVTT.cueText("a & b <i>c</i> --> d") == "a &amp; b &lt;i&gt;c&lt;/i&gt; --&gt; d")
        #expect(WebVTT.cueText("  one\r\n\r\ntwo\n\nthree\u{2028}four\tfive  ") == "one two three four five")
        #expect(WebVTT.cueText("Ça 日本語 🎧") == "Ça 日本語 🎧")
        #expect(WebVTT.document([CaptionCue(startMs: 0, endMs: 5, text: " \n ")]) == "WEBVTT\n", "a cue with nothing to show is left out")
    }

    @Test("Chunks are ordered, re-timed to the clip's first sample, cut to its length; a missing end is the next start")
    func timing() {
        let chunks = [
            TranscriptChunk(chunkIndex: 3, startTime: 40, endTime: nil, text: "last"),
            TranscriptChunk(chunkIndex: 1, startTime: 10, endTime: 12, text: "before"),
            TranscriptChunk(chunkIndex: 2, startTime: 12, endTime: nil, text: "open"),
            TranscriptChunk(chunkIndex: 0, startTime: 12, endTime: 15, text: "tie"),
            TranscriptChunk(chunkIndex: 4, startTime: 80, endTime: 90, text: "after"),
        ]
        // The clip: 30 s at 48 kHz from 11.5 s.
        let cues = CaptionCues.cues(chunks, startSample: 552_000, sampleCount: 1_440_000, sampleRate: 48_000)
        #expect(cues == [
            CaptionCue(startMs: 0, endMs: 500, text: "before"),
            CaptionCue(startMs: 500, endMs: 3500, text: "tie"),          // same start: chunk index decides
            CaptionCue(startMs: 500, endMs: 28_500, text: "open"),       // to the next later start (40 s)
            CaptionCue(startMs: 28_500, endMs: 30_000, text: "last"),    // the last open chunk: to the clip's end
        ])
    }
}

@Suite("Captions: GET /clips/<episode>/<start>.vtt against the embedded default")
struct CaptionServerTests {
    @Test("Cues match the fixture transcript on the clip's planned window (a window past the end ends with the audio)",
          arguments: [(Int64(0), Int64(30_000)), (12_345, 30_000), (50_000, 30_000), (25_000, 10_000)])
    func fixtureTranscript(startMs: Int64, durationMs: Int64) throws {
        try withCaptionServer("captions") { server in
            let (expected, plan) = try CaptionCatalog.expectedCues(guid: CaptionCatalog.guid, sourceKey: ServerTests.sourceKey,
                                                                   startMs: startMs, durationMs: durationMs)
            #expect(expected.count >= 2)
            let query = durationMs == 30_000 ? "" : "?duration_ms=\(durationMs)"
            let url = "\(server.baseURL)/clips/\(CaptionCatalog.episode)/\(startMs).vtt\(query)"
            let response = try fetch(url)
            let body = String(decoding: response.body, as: UTF8.self)
            #expect(response.status == 200, "\(body)")
            #expect(response.headers["content-type"] == "text/vtt; charset=utf-8")
            #expect(response.headers["content-length"] == String(response.body.count))
            #expect(response.headers["cache-control"] == "public, max-age=31536000, immutable")
            #expect(response.headers["access-control-allow-origin"] == "*")
            #expect(try parseWebVTT(body) == expected)
            if startMs == 50_000 {
                // 22 s of audio are left from 50 s: the last cue ends with them, not at the 30 s asked for.
                #expect(plan.sampleCount < Int64(plan.sampleRate) * 30)
                #expect(expected.last?.endMs == Int64((Double(plan.sampleCount) * 1000 / Double(plan.sampleRate)).rounded()))
            }

            // The ETag starts with the clip's; HEAD has GET's headers and no body.
            let clip = try fetch(url.replacingOccurrences(of: ".vtt", with: ""), method: "HEAD")
            let clipTag = try #require(clip.headers["etag"])
            let etag = try #require(response.headers["etag"])
            #expect(etag.wholeMatch(of: /"[0-9a-f]{16}-[0-9a-f]{16}"/) != nil, "\(etag)")
            #expect(etag.prefix(17) == clipTag.prefix(17), "\(etag) is derived from the clip key of \(clipTag)")
            let head = try fetch(url, method: "HEAD")
            #expect(head.status == 200 && head.body.isEmpty)
            #expect(head.headers["etag"] == etag && head.headers["content-length"] == String(response.body.count))
        }
    }

    @Test("Escaped odd text, null and missing end_time; an episode without a transcript gets a valid empty track")
    func oddTextAndNoTranscript() throws {
        try withCaptionServer("captions-odd") { server in
            let odd = try fetch("\(server.baseURL)/clips/\(CaptionCatalog.oddEpisode)/5000.vtt")
            #expect(odd.status == 200)
            #expect(String(decoding: odd.body, as: UTF8.self) == CaptionCatalog.oddCaptionsFrom5s)

            // A window past the episode's end: the open last chunk ends with the audio the clip holds.
            let source = try #require(try FullStackTests.Episode.all().first { $0._id == CaptionCatalog.oddEpisode }?.source_key)
            let file = try FileByteSource(path: Fixtures.directory.appendingPathComponent("source/\(source)").path)
            let plan = try ClipPlan.plan(try FrameIndexBuilder.build(file), .init(startMs: 50_000, durationMs: 30_000))
            let endMs = Int64((Double(plan.sampleCount) * 1000 / Double(plan.sampleRate)).rounded())
            #expect(endMs < 25_000, "the episode ends about 21 s into this clip")
            let tail = try fetch("\(server.baseURL)/clips/\(CaptionCatalog.oddEpisode)/50000.vtt")
            #expect(try parseWebVTT(String(decoding: tail.body, as: UTF8.self)) == [ParsedCue(startMs: 0, endMs: endMs, text: "Ça va? 日本語 — “quotes” 🎧")])

            let silent = try fetch("\(server.baseURL)/clips/\(CaptionCatalog.silentEpisode)/0.vtt")
            #expect(silent.status == 200 && silent.headers["content-type"] == "text/vtt; charset=utf-8")
            #expect(String(decoding: silent.body, as: UTF8.self) == "WEBVTT\n")
        }
    }

    static let errors = clipDocumentProblems(".vtt")

    @Test("Errors are the clip's JSON problems, with CORS; preflight answers like the clip's")
    func errors() throws {
        try withCaptionServer("captions-errors") { server in
            try expectClipProblems(server.baseURL, Self.errors)
            try expectClipPreflight("\(server.baseURL)/clips/\(CaptionCatalog.episode)/0.vtt")
            let post = try fetch("\(server.baseURL)/clips/\(CaptionCatalog.episode)/0.vtt", method: "POST")
            #expect(post.status == 405)
        }
    }

    @Test("ETag: If-None-Match gives 304, If-Match a mismatch 412; the tag changes with the transcript, not with the node")
    func etagAndConditionals() throws {
        let path = "/clips/\(CaptionCatalog.episode)/12345.vtt"
        let etag = try withCaptionServer("captions-etag") { server in
            try expectEntityTagConditionals(server.baseURL + path)
        }
        // Same transcript on a fresh node: same tag. A changed transcript: same clip, new tag.
        try withCaptionServer("captions-etag-fresh") { server in
            let again = try fetch(server.baseURL + path)
            #expect(again.headers["etag"] == etag)
        }
        try withCaptionServer("captions-etag-changed", suffix: " (corrected)") { server in
            let reworded = try fetch(server.baseURL + path)
            let newTag = try #require(reworded.headers["etag"])
            #expect(newTag != etag && newTag.prefix(17) == etag.prefix(17), "\(newTag) vs \(etag)")
            #expect(String(decoding: reworded.body, as: UTF8.self).contains("in particular. (corrected)"))
            #expect(try fetch(server.baseURL + path, headers: [("If-None-Match", etag)]).status == 200)
        }
    }

    @Test("With URL signing on, the .vtt path needs its own signature")
    func signedURLs() throws {
        let key = ["CLIPPROXY_SIGNING_KEY": "captions-test-signing-key-0123456789"]
        let environment = ProcessInfo.processInfo.environment.merging(key) { $1 }
        func signed(_ path: String) throws -> String { try signedPath(path, environment: environment) }
        let captions = "/clips/\(CaptionCatalog.episode)/5000.vtt"
        try withCaptionServer("captions-signed", extra: key) { server in
            let unsigned = try fetch(server.baseURL + captions)
            #expect(unsigned.status == 403 && String(decoding: unsigned.body, as: UTF8.self).contains("signature_required"))
            let good = try fetch(server.baseURL + (try signed(captions)))
            #expect(good.status == 200 && String(decoding: good.body, as: UTF8.self).hasPrefix("WEBVTT\n"))
            // The clip's signature does not open its captions.
            let clipQuery = try signed("/clips/\(CaptionCatalog.episode)/5000").split(separator: "?", maxSplits: 1)[1]
            let borrowed = try fetch("\(server.baseURL)\(captions)?\(clipQuery)")
            #expect(borrowed.status == 403 && String(decoding: borrowed.body, as: UTF8.self).contains("signature_invalid"))
        }
    }
}

@Suite("Captions: MongoDB catalog (wire server) and S3 source (moto)")
struct CaptionMongoTests {
    /// The find commands on the transcript collection the MongoDB server received.
    static func transcriptFinds(_ log: URL) throws -> [[String: Any]] {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return try text.split(separator: "\n").compactMap { line in
            let command = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return command?["find"] as? String == "transcript_chunks_768d" ? command : nil
        }
    }

    @Test("Captions through the MongoDB catalog equal the file catalog's; the chunk query projects away the embedding")
    func mongoCatalog() async throws {
        let work = try TemporaryDirectory("captions-mongo")
        defer { work.remove() }
        let catalog = work.url.appendingPathComponent("catalog")
        try CaptionCatalog.write(into: catalog)
        let log = work.url.appendingPathComponent("mongo-commands.jsonl")
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: catalog, commandLog: log)) { mongo in
                _ = try FullStackTests.seedBucket(s3)
                let server = try ClipProxyProcess(environment: FullStackTests.environment(s3: s3, mongo: mongo, work: work))
                defer { server.stop() }
                let (expected, _) = try CaptionCatalog.expectedCues(guid: CaptionCatalog.guid, sourceKey: ServerTests.sourceKey,
                                                                    startMs: 12_345, durationMs: 30_000)
                let fixture = try fetch("\(server.baseURL)/clips/\(CaptionCatalog.episode)/12345.vtt")
                #expect(fixture.status == 200)
                #expect(try parseWebVTT(String(decoding: fixture.body, as: UTF8.self)) == expected)
                let odd = try fetch("\(server.baseURL)/clips/\(CaptionCatalog.oddEpisode)/5000.vtt")
                #expect(String(decoding: odd.body, as: UTF8.self) == CaptionCatalog.oddCaptionsFrom5s)
                let silent = try fetch("\(server.baseURL)/clips/\(CaptionCatalog.silentEpisode)/0.vtt")
                #expect(silent.status == 200 && String(decoding: silent.body, as: UTF8.self) == "WEBVTT\n")
                #expect(try fetch("\(server.baseURL)/clips/ffffffffffffffffffffffff/0.vtt").status == 404)
                #expect(try fetch("\(server.baseURL)/clips/\(CaptionCatalog.episode)/900000.vtt").status == 422)

                // What went over the wire: every chunk query with a projection, the captions' one exactly the caption fields.
                let finds = try Self.transcriptFinds(log)
                let oddQueries = finds.filter { ($0["filter"] as? [String: Any])?["episode_id"] as? String == CaptionCatalog.oddGuid }
                let projections = oddQueries.compactMap { $0["projection"] as? [String: Int] }
                #expect(projections.count == oddQueries.count && !projections.isEmpty, "every query projects: \(oddQueries)")
                #expect(projections.contains(["start_time": 1, "end_time": 1, "text": 1, "chunk_index": 1, "_id": 0]), "\(projections)")
                #expect(!projections.contains { $0["embedding_768d"] != nil })

                // The embedding is there to be left out: without the projection it comes back.
                let pool = try MongoClientPool(uri: "mongodb://127.0.0.1:\(mongo.port)/?retryReads=false", database: "podinsight")
                let filter: [(field: String, value: MongoFilterValue)] = [("episode_id", .string(CaptionCatalog.oddGuid))]
                let whole = try pool.find(collection: "transcript_chunks_768d", filter: filter)
                #expect(whole.count == 3 && whole.allSatisfy { $0["embedding_768d"] != nil })
                let projected = try pool.find(collection: "transcript_chunks_768d", filter: filter, projection: TranscriptChunk.fields, includeId: false)
                #expect(projected.count == 3)
                for document in projected {
                    guard case .object(let fields) = document else { Issue.record("not a document: \(document)"); continue }
                    #expect(Set(fields.keys).isSubset(of: Set(TranscriptChunk.fields)), "\(fields.keys.sorted())")
                }
            }
        }
    }

    @Test("Chunks are cached for catalog.ttl_s, forgotten on purge, and served stale while MongoDB is down")
    func cachePurgeAndOutage() async throws {
        let work = try TemporaryDirectory("captions-cache")
        defer { work.remove() }
        let (before, after) = (work.url.appendingPathComponent("before"), work.url.appendingPathComponent("after"))
        try CaptionCatalog.write(into: before)
        try CaptionCatalog.write(into: after, suffix: " (corrected)")
        let port = try freeLoopbackPort()
        let url = "/clips/\(CaptionCatalog.episode)/0.vtt"
        var mongo = try TestServer.mongo(dataDirectory: before, port: port)
        defer { mongo.stop() }
        let environment = [
            "CLIPPROXY_CATALOG_KIND": "mongo", "CLIPPROXY_MONGO_URI": "mongodb://127.0.0.1:\(port)/?retryReads=false",
            "CLIPPROXY_MONGO_DATABASE": "podinsight",
            "CLIPPROXY_SOURCE_KIND": "dir", "CLIPPROXY_SOURCE_DIR": Fixtures.directory.appendingPathComponent("source").path,
            "CLIPPROXY_CACHE_DIR": work.path + "/cache", "CLIPPROXY_SECOND_TIER_DIR": work.path + "/l2",
        ]
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let original = String(decoding: try fetch(server.baseURL + url).body, as: UTF8.self)
        #expect(original.contains("in particular.\n"))

        // The catalog now says something else: within the TTL the node does not ask it again.
        mongo.stop()
        mongo = try TestServer.mongo(dataDirectory: after, port: port)
        #expect(String(decoding: try fetch(server.baseURL + url).body, as: UTF8.self) == original)
        // The pool's connections died with the old server: wait until the node reaches the new one.
        let deadline = Date().addingTimeInterval(10)
        while try fetch(server.baseURL + "/readyz").status != 200 && Date() < deadline { usleep(200_000) }
        // A purge forgets the chunks with the episode.
        #expect(try adminFetch(server, "/admin/purge/\(CaptionCatalog.episode)").status == 200)
        let corrected = String(decoding: try fetch(server.baseURL + url).body, as: UTF8.self)
        #expect(corrected.contains("in particular. (corrected)\n"), "\(corrected)")

        // Past the TTL with MongoDB gone, the last answer is served (stale-if-error).
        let shortTTL = try TemporaryDirectory("captions-stale")
        defer { shortTTL.remove() }
        var staleEnvironment = environment
        staleEnvironment["CLIPPROXY_CATALOG_TTL_S"] = "1"
        staleEnvironment["CLIPPROXY_CACHE_DIR"] = shortTTL.path + "/cache"
        let staleServer = try ClipProxyProcess(environment: staleEnvironment)
        defer { staleServer.stop() }
        let fresh = try fetch(staleServer.baseURL + url)
        #expect(fresh.status == 200)
        mongo.kill9()
        try await Task.sleep(for: .milliseconds(1500))
        let stale = try fetch(staleServer.baseURL + url)
        #expect(stale.status == 200 && sameBytes(stale.body, fresh.body), "\(String(decoding: stale.body, as: UTF8.self))")
        #expect(staleServer.waitForLog("serving the last known transcript"))
    }
}

@Suite("Captions in a browser")
struct CaptionBrowserTests {
    /// A player with the clip's captions as its default track; reports the cues once loaded.
    static func trackPage(clip: String) -> String {
        """
        <!doctype html><html><head><meta charset="utf-8"></head><body><pre id="out">{}</pre>
        <audio id="player" crossorigin="anonymous" preload="auto" src="\(clip)">
          <track id="captions" default kind="captions" srclang="en" label="English" src="\(clip).vtt">
        </audio>
        <script>
        const track = document.getElementById('captions'), out = document.getElementById('out');
        function report(results) { out.textContent = JSON.stringify(results); out.dataset.done = '1'; }
        track.addEventListener('load', () => {
          const cues = track.track.cues;
          report({count: cues.length, text: cues[0].text, start: cues[0].startTime, end: cues[0].endTime});
        });
        track.addEventListener('error', () => report({error: track.readyState}));
        // WebKit leaves even a default captions track disabled (not fetched) unless the user's
        // caption preference is on; a page that shows its own captions asks for the cues.
        if (track.track.mode === 'disabled') track.track.mode = 'hidden';
        </script></body></html>
        """
    }

    @Test("A clip's captions load through <track> on an <audio crossorigin> element", .serialized, arguments: Browser.allCases)
    func trackLoadsCues(browser: Browser) throws {
        try withCaptionServer("captions-browser-\(browser)") { server in
            let clip = "\(server.baseURL)/clips/\(CaptionCatalog.episode)/12345"
            let served = try parseWebVTT(String(decoding: try fetch(clip + ".vtt").body, as: UTF8.self))
            let first = try #require(served.first)
            let folder = try TemporaryDirectory("captions-page")
            defer { folder.remove() }
            let page = try BrowserPage.write(Self.trackPage(clip: clip), in: folder)
            let (result, json) = try BrowserPage.results(in: try browser.dumpDOM(of: page, until: BrowserPage.done))
            #expect(result["count"] as? Int == served.count, "\(json)")
            #expect(result["text"] as? String == first.text, "\(json)")
            #expect((result["start"] as? Double).map { abs($0 * 1000 - Double(first.startMs)) < 1 } == true, "\(json)")
            #expect((result["end"] as? Double).map { abs($0 * 1000 - Double(first.endMs)) < 1 } == true, "\(json)")
        }
    }
}
