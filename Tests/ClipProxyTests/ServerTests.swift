import Foundation
import Testing
import TestSupport
@testable import Trim
@testable import Upstream

/// A GET or HEAD through libcurl: status, lowercased headers, body.
func fetch(_ url: String, method: String = "GET", headers: [(name: String, value: String)] = [],
           unixSocket: String? = nil) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
    var body: [UInt8] = []
    var request = HTTPRequest(method: method, url: url, headers: headers)
    request.unixSocketPath = unixSocket
    let head = try CurlTransfer().perform(request) { chunk in
        body.append(contentsOf: chunk)
        return true
    }
    return (head.status, Dictionary(head.headers.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a }), body)
}

/// A request to the server's admin listener (`POST /admin/purge/...` by default).
func adminFetch(_ server: ClipProxyProcess, _ pathAndQuery: String, method: String = "POST") throws -> (status: Int, headers: [String: String], body: [UInt8]) {
    try fetch(server.adminBaseURL + pathAndQuery, method: method, unixSocket: server.adminSocket)
}

/// The embedded default (catalog files, source directory, clip directory) on the fixtures.
struct EmbeddedServer {
    let work: TemporaryDirectory
    var environment: [String: String] {
        [
            "CLIPPROXY_CACHE_DIR": work.path + "/cache", "CLIPPROXY_SECOND_TIER_DIR": work.path + "/l2",
            "CLIPPROXY_CATALOG_KIND": "file", "CLIPPROXY_CATALOG_DIR": Fixtures.directory.appendingPathComponent("catalog").path,
            "CLIPPROXY_SOURCE_KIND": "dir", "CLIPPROXY_SOURCE_DIR": Fixtures.directory.appendingPathComponent("source").path,
        ]
    }
    func start() throws -> ClipProxyProcess { try ClipProxyProcess(environment: environment) }
}

/// What `clipproxy trim` makes of the same window: the reference bytes for the server.
func trimmed(_ sourceKey: String, startMs: Int64, durationMs: Int64 = 30_000) throws -> [UInt8] {
    let source = try FileByteSource(path: Fixtures.directory.appendingPathComponent("source/\(sourceKey)").path)
    let index = try FrameIndexBuilder.build(source)
    var out: [UInt8] = []
    try Trimmer.trim(source, index: index, request: .init(startMs: startMs, durationMs: durationMs)) { out.append(contentsOf: $0) }
    return out
}

@Suite("clipproxy serve: /clips end to end (embedded default)")
struct ServerTests {
    static let episode = "685ba776e4f9ec2f0756267a"
    static let sourceKey = "the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/audio/2024-05-01-clocks-that-disagree_0e983347_audio.mp3"

    @Test("Cold request = clipproxy trim bytes with exact Content-Length; then L1; wiped L1 refills from the second tier")
    func tiers() throws {
        let work = try TemporaryDirectory("server")
        defer { work.remove() }
        let config = EmbeddedServer(work: work)
        let expected = try trimmed(Self.sourceKey, startMs: 12_345)
        var server = try config.start()
        let url = "\(server.baseURL)/clips/\(Self.episode)/12345"

        let cold = try fetch(url)
        #expect(cold.status == 200)
        #expect(cold.headers["content-length"] == String(expected.count))
        #expect(cold.headers["content-type"] == "audio/mpeg")
        #expect(cold.headers["x-clip-tier"] == "fill")
        #expect(sameBytes(cold.body, expected))
        #expect(server.waitForLog("fill finished"))

        let warm = try fetch(url + ".mp3")
        #expect(warm.headers["x-clip-tier"] == "l1_hit")
        #expect(warm.headers["etag"] == cold.headers["etag"])
        #expect(sameBytes(warm.body, expected))

        let head = try fetch(url, method: "HEAD")
        #expect(head.status == 200 && head.body.isEmpty && head.headers["content-length"] == String(expected.count))

        #expect(server.stop() == 0, "SIGTERM shuts down cleanly")
        try FileManager.default.removeItem(atPath: work.path + "/cache")
        server = try config.start()
        let fromSecondTier = try fetch("\(server.baseURL)/clips/\(Self.episode)/12345")
        #expect(fromSecondTier.headers["x-clip-tier"] == "l2_hit")
        #expect(sameBytes(fromSecondTier.body, expected))
        #expect(!server.log.contains("fill started"), "served without a new trim")
        #expect(server.waitForLog("local copy from the second tier finished"))
        let refilled = try fetch("\(server.baseURL)/clips/\(Self.episode)/12345")
        #expect(refilled.headers["x-clip-tier"] == "l1_hit")
        server.stop()
    }

    @Test("200 concurrent requests for one cold clip share one fill and get identical bytes")
    func coalescing() throws {
        let work = try TemporaryDirectory("coalesce")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let expected = try trimmed(Self.sourceKey, startMs: 40_000, durationMs: 20_000)
        let url = "\(server.baseURL)/clips/\(Self.episode)/40000?duration_ms=20000"
        // curl's own parallel mode: 200 transfers at once from one process.
        var arguments = ["--silent", "--parallel", "--parallel-immediate", "--parallel-max", "200"]
        for i in 0..<200 { arguments += ["-o", work.path + "/out\(i).mp3", url] }
        let result = try FFmpegOracle.run("/usr/bin/curl", arguments)
        #expect(result.status == 0, "\(result.stderr)")
        for i in 0..<200 {
            let body = try [UInt8](Data(contentsOf: URL(fileURLWithPath: work.path + "/out\(i).mp3")))
            #expect(sameBytes(body, expected), "response \(i)")
        }
        let fills = server.log.components(separatedBy: "fill started").count - 1
        #expect(fills == 1, "one fill for 200 requests, saw \(fills)")
    }

    static let badRequests: [(path: String, status: Int, error: String)] = [
        ("/clips/685ba776e4f9ec2f0756267a/abc", 400, "invalid_start_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/-5", 400, "invalid_start_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/1e5", 400, "invalid_start_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/99999999999999999999", 400, "invalid_start_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/0?duration_ms=0", 400, "invalid_duration_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/0?duration_ms=60001", 400, "invalid_duration_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/0?duration_ms=ten", 400, "invalid_duration_ms"),
        ("/clips/ffffffffffffffffffffffff/0", 404, "not_found"),
        ("/clips/no-such-guid/0", 404, "not_found"),
        ("/clips/685ba776e4f9ec2f07562680/0", 404, "not_found"),
        ("/clips/685ba776e4f9ec2f0756267a/900000", 422, "window_outside_episode"),
        ("/clips/%00bad/0", 400, "invalid_episode_id"),
    ]

    @Test("Bad requests get a JSON error with the right status, never a 500")
    func badRequests() throws {
        let work = try TemporaryDirectory("errors")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        for (path, status, error) in Self.badRequests {
            let response = try fetch(server.baseURL + path)
            #expect(response.status == status, "\(path): \(String(decoding: response.body, as: UTF8.self))")
            #expect(response.headers["content-type"] == "application/json", "\(path)")
            let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: String]
            #expect(json?["error"] == error, "\(path)")
            #expect((json?["detail"] ?? "").count > 10, "\(path)")
        }
    }
}

/// What the dashboard's `check=1` mode showed once loaded: each listed episode's row gets its
/// first clip's duration, or an error (`data-duration`, `data-error`).
struct DashboardPlayers {
    /// The list failed, or it is there and every row has reported.
    static let done = "document.getElementById('episodes').classList.contains('failed') || "
        + "(document.getElementById('episodes').dataset.count !== undefined && "
        + "[...document.querySelectorAll('li.episode')].every(r => 'duration' in r.dataset || 'error' in r.dataset))"

    let players: Int
    /// Each reporting row's clip URL and the duration its player found.
    let played: [(url: String, duration: Double)]
    let errors: Int

    init(dom: String) {
        (players, played) = DashboardDOM(dom).episodeCheck()
        errors = dom.components(separatedBy: "data-error=").count - 1
    }

    /// Loads the page at `url` in `browser`.
    static func load(_ url: String, in browser: Browser) throws -> (DashboardPlayers, dom: String) {
        let dom = try browser.dumpDOM(of: url, until: done)
        return (DashboardPlayers(dom: dom), dom)
    }

    /// Every player loaded its clip, a snapped 30 s one, as long as the window its URL names in
    /// `Content-Location`, and none reported an error.
    func expectAllPlayed(_ browser: Browser, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(played.count == players, "\(browser): every player loaded: \(played.count) of \(players)", sourceLocation: sourceLocation)
        for (url, duration) in played {
            let window = (try? fetch(url, method: "HEAD")).flatMap { SnapToPausesTests.window($0.headers["content-location"]) }
            #expect(url.contains("snap=pause") && window.map { $0.durationMs >= 29_000 && abs(duration - Double($0.durationMs) / 1000) <= 0.1 } == true,
                    "\(browser): \(url) played \(duration) s of the window \(String(describing: window))", sourceLocation: sourceLocation)
        }
        #expect(errors == 0, "\(browser): \(errors) player(s) reported an error", sourceLocation: sourceLocation)
    }
}

@Suite("The demo page plays clips in a browser")
struct DemoPageTests {
    @Test("The dashboard at / with check=1: every listed episode's snapped clip plays as long as its window", .serialized, arguments: Browser.allCases)
    func demoPagePlays(browser: Browser) throws {
        let work = try TemporaryDirectory("demo-\(browser)")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let (page, _) = try DashboardPlayers.load(server.baseURL + "/?check=1", in: browser)
        #expect(page.players == 7, "the page lists the fixture episodes that have audio")
        page.expectAllPlayed(browser)
    }
}

@Suite("Graceful shutdown")
struct ShutdownTests {
    @Test("SIGTERM during a transfer lets it finish; a restarted server serves the cached clip at once")
    func sigtermDuringTransfer() throws {
        let work = try TemporaryDirectory("shutdown")
        defer { work.remove() }
        let config = EmbeddedServer(work: work)
        var server = try config.start()
        let url = "\(server.baseURL)/clips/\(ServerTests.episode)/5000"
        let expected = try trimmed(ServerTests.sourceKey, startMs: 5000)
        _ = try fetch(url)  // cached now
        // A client reading at 100 kB/s needs about 5 s for the clip.
        let download = Process()
        download.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        download.arguments = ["--silent", "--limit-rate", "100k", "-o", work.path + "/slow.mp3", "-w", "%{http_code}", url]
        let out = Pipe()
        download.standardOutput = out
        try download.run()
        usleep(1_000_000)
        #expect(server.stop() == 0, "SIGTERM: clean exit after in-flight responses")
        download.waitUntilExit()
        let status = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(download.terminationStatus == 0 && status == "200")
        #expect(sameBytes(try [UInt8](Data(contentsOf: URL(fileURLWithPath: work.path + "/slow.mp3"))), expected),
                "the transfer in flight completed with every byte")
        // (Loopback socket buffers can hold a whole clip, so when the server finished writing is
        // not observable here; what matters is that the client got every byte and a 200.)

        server = try config.start()
        defer { server.stop() }
        let again = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/5000")
        #expect(again.headers["x-clip-tier"] == "l1_hit")
        #expect(sameBytes(again.body, expected))
    }
}

@Suite("Browsers: play and seek clips served by clipproxy")
struct BrowserSeekTests {
    /// Two players that load their clip, report duration and errors, seek to 20 s and report where
    /// they landed and their readyState.
    static func seekPage(cold: String, warm: String, preload: String) -> String {
        """
        <!doctype html><html><body><pre id="out">{}</pre>
        <audio id="cold" preload="\(preload)" data-src="\(cold)"></audio>
        <audio id="warm" preload="\(preload)" data-src="\(warm)"></audio>
        <script>
        const results = {}, out = document.getElementById('out'), players = [...document.querySelectorAll('audio')];
        function report() {
          out.textContent = JSON.stringify(results);
          if (players.every(a => (a.id + '_seeked') in results || (a.id + '_error') in results)) out.dataset.done = '1';
        }
        for (const a of players) {
          a.addEventListener('loadedmetadata', () => { results[a.id + '_duration'] = a.duration; a.currentTime = 20; });
          a.addEventListener('seeked', () => { results[a.id + '_seeked'] = a.currentTime; results[a.id + '_ready'] = a.readyState; report(); });
          a.addEventListener('error', () => { results[a.id + '_error'] = a.error && a.error.code; report(); });
          a.src = a.dataset.src;  // after the listeners, so no event is missed
        }
        </script></body></html>
        """
    }

    @Test("Plays a cold and a warm clip: 30 s, no error; the seek to 20 s lands; Range requests answered 206",
          .serialized, arguments: Browser.allCases)
    func playAndSeek(browser: Browser) throws {
        let work = try TemporaryDirectory("seek-\(browser)")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        // Every browser request goes through the proxy, which lists them with their Range headers.
        let proxy = try TestServer.faultProxy(address: String(server.baseURL.dropFirst("http://".count)))
        defer { proxy.stop() }
        let clips = ["cold": (episode: "685ba776e4f9ec2f0756267b", start: 2000), "warm": (episode: ServerTests.episode, start: 1000)]
        func path(_ id: String) -> String { "/clips/\(clips[id]!.episode)/\(clips[id]!.start)" }
        _ = try fetch(server.baseURL + path("warm"))  // warm: in L1 before the browser asks
        #expect(server.waitForLog("fill finished"))

        // WebKit with preload="auto" downloads the whole clip in one 200 and seeks inside it without
        // another request; with "metadata" it stops after the first frames and fetches the rest for
        // the seek with `Range: bytes=N-`. Chromium asks `bytes=0-` either way; with "metadata"
        // on a busy machine it sometimes left that response unread for a minute before seeking,
        // and whether its seek asks for a later byte depends on what it had buffered by then.
        let preload = browser == .webkit ? "metadata" : "auto"
        let page = try BrowserPage.write(Self.seekPage(cold: proxy.endpoint + path("cold"), warm: proxy.endpoint + path("warm"),
                                                       preload: preload), in: work)
        let (results, json) = try BrowserPage.results(in: try browser.dumpDOM(of: page, until: BrowserPage.done))
        let requests = try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body)
        for (id, clip) in clips {
            #expect((results["\(id)_duration"] as? Double).map { abs($0 - 30) <= 0.1 } == true, "\(id): \(json)")
            #expect((results["\(id)_seeked"] as? Double).map { abs($0 - 20) <= 0.1 } == true, "\(id): \(json)")
            #expect((results["\(id)_ready"] as? Int).map { $0 >= 2 } == true, "\(id) has the data at 20 s: \(json)")
            #expect(results["\(id)_error"] == nil, "\(id): \(json)")
            // Chromium's Range request is its first, `bytes=0-`; WebKit's first request has no
            // Range, so its Range request is the seek's.
            let ranges = requests.filter { $0.path == path(id) }.compactMap(\.range)
            let fromLaterByte = ranges.contains { $0.firstMatch(of: /^bytes=[1-9][0-9]*-/) != nil }
            #expect(!ranges.isEmpty && (browser == .chromium || fromLaterByte), "\(id): \(browser) asked \(ranges)")
            #expect(server.log.split(separator: "\n").contains {
                $0.contains("clip.start_ms=\(clip.start) ") && $0.contains("episode.id=\(clip.episode) ") && $0.contains("http.status=206")
            }, "\(id): the range request was answered with 206")
        }
        #expect(server.log.contains("clip.tier=fill") && server.log.contains("clip.tier=l1_hit"))
    }
}

@Suite("Observability and CORS")
struct MetricsAndCORSTests {
    @Test("/metrics counts requests by tier, responses by class and bytes; CORS echoes allowed origins and answers preflight")
    func metricsAndCORS() throws {
        let work = try TemporaryDirectory("metrics")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_HTTP_CORS_ORIGINS"] = "https://dash.example.com, https://other.example.com"
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let url = "\(server.baseURL)/clips/\(ServerTests.episode)/3000"
        let cold = try fetch(url, headers: [("Origin", "https://dash.example.com")])
        #expect(cold.headers["access-control-allow-origin"] == "https://dash.example.com" && cold.headers["vary"] == "Origin")
        let foreign = try fetch(url, headers: [("Origin", "https://evil.example")])
        #expect(foreign.headers["access-control-allow-origin"] == nil)
        _ = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/zzz")
        let preflight = try fetch(url, method: "OPTIONS", headers: [("Origin", "https://other.example.com"), ("Access-Control-Request-Headers", "range")])
        #expect(preflight.status == 204)
        #expect(preflight.headers["access-control-allow-headers"]?.contains("Range") == true)

        // The fill records its duration when it commits, which may be just after the response ends.
        var metrics = ""
        for _ in 0..<50 {
            metrics = String(decoding: try fetch("\(server.baseURL)/metrics").body, as: UTF8.self)
            // Bytes are counted after each write, so the last chunk may trail the client too.
            if metrics.contains("clipproxy_fill_duration_seconds_count 1")
                && metrics.contains("clipproxy_bytes_served_total \(cold.body.count * 2)") { break }
            usleep(100_000)
        }
        #expect(metrics.contains(#"clipproxy_clip_requests_total{tier="fill"} 1"#), "\(metrics)")
        // The second request is an L1 hit, or joins the fill if it is still committing.
        let secondTier = try #require(foreign.headers["x-clip-tier"])
        #expect(["l1_hit", "coalesced"].contains(secondTier))
        #expect(metrics.contains("clipproxy_clip_requests_total{tier=\"\(secondTier)\"} 1"))
        #expect(metrics.contains(#"clipproxy_responses_total{class="4xx"} 1"#))
        #expect(metrics.contains(#"clipproxy_fill_duration_seconds_count 1"#))
        #expect(metrics.contains("clipproxy_bytes_served_total \(cold.body.count * 2)"))
    }
}

@Suite("Date and Last-Modified")
struct DateHeaderTests {
    /// RFC 9110 8.8.2.1: an origin must not send a Last-Modified later than its Date. A clip's
    /// Last-Modified is the moment it was cut; the Date comes from the clock as the head is written.
    @Test("Last-Modified is never later than Date: cold clips and their hits, fast path and router", arguments: [true, false])
    func lastModifiedNotAfterDate(fastPath: Bool) throws {
        let work = try TemporaryDirectory("date-header")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_HTTP_FAST_PATH"] = String(fastPath)
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        var checked = 0
        for index in 0..<20 {
            let url = "\(server.baseURL)/clips/\(ServerTests.episode)/\(index * 1_500)"
            for attempt in ["cold", "hit"] {
                let response = try fetch(url)
                let date = try #require(response.headers["date"].flatMap(parseImfFixdate), "\(attempt) \(url): no Date")
                let modified = try #require(response.headers["last-modified"].flatMap(parseImfFixdate), "\(attempt) \(url): no Last-Modified")
                #expect(modified <= date, "\(attempt) \(url): Last-Modified \(response.headers["last-modified"]!) after Date \(response.headers["date"]!)")
                checked += 1
                if attempt == "cold" { #expect(server.waitForLog("fill finished", count: index + 1)) }
            }
        }
        #expect(checked == 40)
    }
}
