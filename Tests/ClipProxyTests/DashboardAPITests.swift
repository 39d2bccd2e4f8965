import Foundation
import Testing
import TestSupport
@testable import Upstream

/// GET a dashboard endpoint and read its JSON array (or fail saying what came back).
func dashboardJSON(_ url: String) throws -> [[String: Any]] {
    let response = try fetch(url)
    try #require(response.status == 200, "\(url): \(response.status) \(String(decoding: response.body, as: UTF8.self))")
    #expect(response.headers["content-type"] == "application/json" && response.headers["cache-control"] == "no-store")
    return try #require(try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]])
}

@Suite("Dashboard API: /api/v1/episodes and /api/v1/search")
struct DashboardAPITests {
    static let missingAudio = "685ba776e4f9ec2f07562680"

    /// Each link of an answer plays: the clip is 30 s of MP3, the captions WebVTT, the peaks JSON,
    /// the download a file to keep.
    func expectPlayable(_ item: [String: Any], captionsContain: String? = nil) throws {
        let clip = try fetch(try #require(item["clip_url"] as? String))
        #expect(clip.status == 200 && clip.headers["content-type"] == "audio/mpeg", "\(item)")
        let captions = try fetch(try #require(item["captions_url"] as? String))
        let text = String(decoding: captions.body, as: UTF8.self)
        #expect(captions.status == 200 && text.hasPrefix("WEBVTT"), "\(text)")
        if let captionsContain { #expect(text.contains(captionsContain), "\(text)") }
        let peaks = try fetch(try #require(item["peaks_url"] as? String))
        let wave = try JSONSerialization.jsonObject(with: Data(peaks.body)) as? [String: Any]
        #expect(peaks.status == 200 && wave?["version"] as? Int == 2 && (wave?["length"] as? Int ?? 0) > 100)
        let download = try fetch(try #require(item["download_url"] as? String), method: "HEAD")
        #expect(download.status == 200 && download.headers["content-disposition"]?.hasPrefix("attachment;") == true, "\(item)")
    }

    @Test("Episodes: every playable one from the catalog, by podcast then newest first, with links that play")
    func episodes() throws {
        let work = try TemporaryDirectory("dashboard-episodes")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let episodes = try dashboardJSON(server.baseURL + "/api/v1/episodes")
        let ids = episodes.compactMap { $0["episode_id"] as? String }
        let catalog = try FileCatalog(directory: Fixtures.directory.appendingPathComponent("catalog").path)
        let all = catalog.recentEpisodes(limit: 100)
        #expect(Set(ids) == Set(all.map(\.episodeId)).subtracting([Self.missingAudio]), "all but the one without audio: \(ids)")
        let order = episodes.map { ($0["podcast_name"] as? String ?? "", $0["published_date"] as? String ?? "") }
        #expect(order.map(\.0) == order.map(\.0).sorted(), "by podcast: \(order)")
        for (a, b) in zip(order, order.dropFirst()) where a.0 == b.0 { #expect(a.1 > b.1, "newest first within a podcast: \(order)") }
        let clocks = try #require(episodes.first { $0["episode_id"] as? String == ServerTests.episode })
        #expect(clocks["guid"] as? String == CaptionCatalog.guid && clocks["podcast_name"] as? String == "The Daily Tones"
                && clocks["episode_title"] as? String == "Clocks That Disagree" && clocks["duration_ms"] as? Int == 72_000
                && clocks["published_date"] as? String == "2024-05-01T06:00:00.000Z", "\(clocks)")
        try expectPlayable(clocks, captionsContain: "Welcome to the daily tones")

        // limit keeps the most recent ones.
        let two = try dashboardJSON(server.baseURL + "/api/v1/episodes?limit=2").compactMap { $0["episode_id"] as? String }
        #expect(Set(two) == Set(all.prefix(2).map(\.episodeId)), "\(two)")
        for bad in ["limit=0", "limit=201", "limit=ten", "limit=1&limit=2", "limit=-1"] {
            try expectProblem(server.baseURL + "/api/v1/episodes?" + bad, 400, "invalid_limit")
        }
    }

    @Test("Search: every word in any case, links that play from the chunk's start, episodes without audio left out")
    func search() throws {
        let work = try TemporaryDirectory("dashboard-search")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let hits = try dashboardJSON(server.baseURL + "/api/v1/search?q=LANTERNS+harbour")
        #expect(hits.count == 2)
        #expect(hits.map { $0["episode_id"] as? String } == [ServerTests.episode, "685ba776e4f9ec2f0756267b"])
        #expect(hits.map { $0["start_ms"] as? Int } == [15_000, 0] && hits.map { $0["end_ms"] as? Int } == [30_000, 15_000])
        let first = try #require(hits.first)
        #expect(first["podcast_name"] as? String == "The Daily Tones" && first["episode_title"] as? String == "Clocks That Disagree")
        #expect(first["text"] as? String == "Seven tired sailors counted forty-two lanterns on the harbour wall.")
        #expect(first["clip_url"] as? String == "\(server.baseURL)/clips/\(ServerTests.episode)/15000?snap=pause")
        #expect(first["download_url"] as? String == "\(server.baseURL)/clips/\(ServerTests.episode)/15000?snap=pause&download=1")
        try expectPlayable(first, captionsContain: "lanterns")
        #expect(try dashboardJSON(server.baseURL + "/api/v1/search?q=harbour%20lanterns").count == 2, "%20 and + are both spaces")

        // The catalog has hits in an episode without audio; the API does not offer them.
        let catalog = try FileCatalog(directory: Fixtures.directory.appendingPathComponent("catalog").path)
        let inCatalog = catalog.searchTranscripts(try #require(TranscriptQuery("bit reservoirs")), limit: 20)
        #expect(inCatalog.contains { $0.episodeId == Self.missingAudio })
        let offered = try dashboardJSON(server.baseURL + "/api/v1/search?q=bit+reservoirs")
        #expect(offered.count == inCatalog.count - 1 && !offered.contains { $0["episode_id"] as? String == Self.missingAudio })

        #expect(try dashboardJSON(server.baseURL + "/api/v1/search?q=qwxz").isEmpty, "no chunk says qwxz")
        #expect(try dashboardJSON(server.baseURL + "/api/v1/search?q=a.b(c").isEmpty)
        #expect(try dashboardJSON(server.baseURL + "/api/v1/search?q=the&limit=2").count == 2)
        #expect(try dashboardJSON(server.baseURL + "/api/v1/search?q=the&limit=100").count > 2)

        let tooLong = String(repeating: "a", count: 201)
        let tooMany = (1...11).map { "w\($0)" }.joined(separator: "+")
        for (query, error) in [("", "invalid_q"), ("q=", "invalid_q"), ("q=+++", "invalid_q"), ("q=\(tooLong)", "invalid_q"),
                               ("q=\(tooMany)", "invalid_q"), ("q=a%01b", "invalid_q"), ("q=a&q=b", "invalid_q"),
                               ("q=%zz", "invalid_query"), ("q=a&limit=0", "invalid_limit"), ("q=a&limit=101", "invalid_limit")] {
            try expectProblem(server.baseURL + "/api/v1/search?" + query, 400, error)
        }
        let post = try fetch(server.baseURL + "/api/v1/search?q=a", method: "POST")
        #expect(post.status == 405 && post.headers["allow"] == "GET")
    }

    @Test("With signing.key set, every link is signed and plays; the same path unsigned is refused")
    func signedLinks() throws {
        let work = try TemporaryDirectory("dashboard-signed")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_SIGNING_KEY"] = "dashboard-test-key"
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let hit = try #require(try dashboardJSON(server.baseURL + "/api/v1/search?q=lanterns").first)
        let episode = try #require(try dashboardJSON(server.baseURL + "/api/v1/episodes").first)
        for item in [hit, episode] {
            for key in ["clip_url", "captions_url", "peaks_url", "download_url"] {
                let url = try #require(item[key] as? String)
                #expect(url.contains("?snap=pause&") && url.contains("&exp=") && url.contains("&sig="), "\(key): \(url)")
                #expect(try fetch(String(url.prefix { $0 != "?" })).status == 403, "unsigned \(key) is refused")
            }
            try expectPlayable(item)
        }
    }

    @Test("Through the MongoDB catalog the answers are the file catalog's")
    func mongoCatalog() async throws {
        let work = try TemporaryDirectory("dashboard-mongo")
        defer { work.remove() }
        try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
            var environment = EmbeddedServer(work: work).environment
            environment["CLIPPROXY_CATALOG_KIND"] = "mongo"
            environment["CLIPPROXY_MONGO_URI"] = "mongodb://127.0.0.1:\(mongo.port)/?retryReads=false"
            let viaMongo = try ClipProxyProcess(environment: environment)
            defer { viaMongo.stop() }
            let fileWork = try TemporaryDirectory("dashboard-file")
            defer { fileWork.remove() }
            let viaFile = try EmbeddedServer(work: fileWork).start()
            defer { viaFile.stop() }
            for path in ["/api/v1/episodes", "/api/v1/episodes?limit=3", "/api/v1/search?q=lanterns", "/api/v1/search?q=the&limit=7", "/api/v1/search?q=a.b(c"] {
                let mongoAnswer = try dashboardJSON(viaMongo.baseURL + path).map { Self.withoutHost($0, viaMongo.baseURL) }
                let fileAnswer = try dashboardJSON(viaFile.baseURL + path).map { Self.withoutHost($0, viaFile.baseURL) }
                #expect(mongoAnswer == fileAnswer, "\(path)")
            }
        }
    }

    /// An answer as text with the server's own address taken out, to compare two servers'.
    static func withoutHost(_ item: [String: Any], _ base: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: item, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: base, with: "")
    }
}

/// The JSON error a bad request must get: `status`, `error`, a `detail` that says what to do.
func expectProblem(_ url: String, _ status: Int, _ error: String) throws {
    let response = try fetch(url)
    let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: String]
    #expect(response.status == status && json?["error"] == error, "\(url): \(response.status) \(json ?? [:])")
    #expect((json?["detail"] ?? "").count > 20, "\(url)")
}
