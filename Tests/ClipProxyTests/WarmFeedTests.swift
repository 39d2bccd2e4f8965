import Foundation
import Testing
import TestSupport
@testable import ClipProxy

/// A podcast RSS feed around the given `<item>` elements, with the Podcasting 2.0 namespace bound to `podcast`.
func podcastFeed(_ items: String) -> Data {
    Data("""
    <?xml version="1.0" encoding="UTF-8"?>
    <rss version="2.0" xmlns:podcast="https://podcastindex.org/namespace/1.0">
    <channel>
    <title>Test show</title>
    \(items)
    </channel>
    </rss>
    """.utf8)
}

@Suite("warm --feed: reading soundbites from a podcast feed")
struct SoundbiteFeedTests {
    @Test("Soundbites are matched by namespace URI, whatever the prefix; other namespaces' soundbites are not")
    func namespaces() throws {
        let items = try SoundbiteFeed.parse(podcastFeed("""
        <item><title>One</title><guid isPermaLink="false"> guid-1 </guid>
          <podcast:soundbite startTime="10" duration="5">First</podcast:soundbite>
          <other:soundbite xmlns:other="https://example.com/not-podcast" startTime="20" duration="5">Not ours</other:soundbite>
        </item>
        <item xmlns:pi="https://podcastindex.org/namespace/1.0"><title><![CDATA[Two & more]]></title><guid>guid-2</guid>
          <pi:soundbite startTime="30" duration="6">Second</pi:soundbite>
          <old:soundbite xmlns:old="https://github.com/Podcastindex-org/podcast-namespace/blob/main/docs/1.0.md" startTime="40" duration="7"/>
        </item>
        """))
        #expect(items.map(\.guid) == ["guid-1", "guid-2"])
        #expect(items.map(\.title) == ["One", "Two & more"])
        #expect(items[0].soundbites.map(\.timing) == [.clip(startMs: 10_000, durationMs: 5_000)])
        #expect(items[0].soundbites.map(\.title) == ["First"])
        #expect(items[1].soundbites.map(\.timing) == [.clip(startMs: 30_000, durationMs: 6_000), .clip(startMs: 40_000, durationMs: 7_000)])
    }

    @Test("A soundbite whose prefix is not declared is reported, not silently lost")
    func undeclaredPrefix() throws {
        let items = try SoundbiteFeed.parse(Data("""
        <rss><channel><item><guid>g</guid><ps:soundbite startTime="1" duration="2">Lost?</ps:soundbite></item></channel></rss>
        """.utf8))
        let timing = try #require(items.first?.soundbites.first?.timing)
        #expect(timing == .invalid(#"the prefix ps: is not declared (add xmlns:ps="https://podcastindex.org/namespace/1.0" to <rss>)"#))
    }

    @Test("Seconds with decimals become whole milliseconds, rounded to the nearest")
    func decimals() throws {
        let cases: [(String, Int64)] = [("73.5", 73_500), ("45.0", 45_000), ("7", 7_000), (".25", 250), ("12.3456", 12_346),
                                        ("0.0004", 0), (" 1.5 ", 1_500), ("3600.001", 3_600_001)]
        for (text, ms) in cases {
            #expect(try SoundbiteFeed.milliseconds(text, attribute: "startTime").get() == ms, "\(text)")
        }
    }

    @Test("Negative, non-numeric, missing and zero values are kept as invalid soundbites that say what is wrong")
    func badValues() throws {
        let bad: [(attributes: String, says: String)] = [
            (#"startTime="-3" duration="5""#, #"startTime="-3" is negative"#),
            (#"startTime="abc" duration="5""#, "not a number of seconds"),
            (#"startTime="1e3" duration="5""#, "not a number of seconds"),
            (#"startTime="NaN" duration="5""#, "not a number of seconds"),
            (#"startTime="10" duration="-1.5""#, #"duration="-1.5" is negative"#),
            (#"startTime="10" duration="""#, "not a number of seconds"),
            (#"startTime="10" duration="0""#, "is zero"),
            (#"startTime="10" duration="0.0001""#, "is zero"),
            (#"startTime="10""#, "no duration attribute"),
            (#"duration="10""#, "no startTime attribute"),
        ]
        let items = try SoundbiteFeed.parse(podcastFeed("<item><guid>g</guid>"
            + bad.map { "<podcast:soundbite \($0.attributes)>x</podcast:soundbite>\n" }.joined() + "</item>"))
        let timings = try #require(items.first?.soundbites.map(\.timing))
        #expect(timings.count == bad.count)
        for (timing, expected) in zip(timings, bad) {
            guard case .invalid(let reason) = timing else {
                Issue.record("\(expected.attributes) was accepted as \(timing)")
                continue
            }
            #expect(reason.contains(expected.says), "\(expected.attributes): \(reason)")
        }
    }

    @Test("XML without a <channel> is refused, naming its root element")
    func noChannel() throws {
        let atom = Data(#"<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><entry><id>x</id></entry></feed>"#.utf8)
        #expect {
            try SoundbiteFeed.parse(atom)
        } throws: { error in
            "\(error)".contains("no <channel>") && "\(error)".contains("<feed>")
        }
    }

    @Test("Data that is not XML is refused with the parser's line and column")
    func notXML() throws {
        let broken = Data("<rss>\n<channel>\n<item><guid>a</guid>\n</channel>\n</rss>\n".utf8)
        let error = try #require(throws: SoundbiteFeed.ParseError.self) { try SoundbiteFeed.parse(broken) }
        #expect(error.line == 4, "\(error)")
        #expect((error.column ?? 0) > 0, "\(error)")
        #expect(error.description.hasPrefix("not XML: line 4, column "), "\(error)")
        let html = try #require(throws: SoundbiteFeed.ParseError.self) { try SoundbiteFeed.parse(Data("Not Found\n".utf8)) }
        #expect(html.line == 1 && html.description.contains("not XML"), "\(html)")
        #expect(throws: SoundbiteFeed.ParseError.self) { try SoundbiteFeed.parse(Data()) }
    }

    @Test("Items without a guid are warned about and skipped; long soundbites are capped; bad values are listed")
    func plan() throws {
        let items = try SoundbiteFeed.parse(podcastFeed("""
        <item><title>Trailer</title><podcast:soundbite startTime="0" duration="5"/></item>
        <item><title>Long</title><guid>g-long</guid>
          <podcast:soundbite startTime="1.5" duration="90">Too long</podcast:soundbite>
          <podcast:soundbite startTime="2" duration="30">Fine</podcast:soundbite>
          <podcast:soundbite startTime="-2" duration="30">Bad</podcast:soundbite>
        </item>
        <item><title>Quiet</title><guid>g-quiet</guid></item>
        <item><title>Blog</title><guid>https://example.org/?p=12</guid><podcast:soundbite startTime="3" duration="20"/></item>
        """))
        let plan = WarmPlan(items: items, maxDurationMs: 60_000)
        #expect(plan.itemsWithSoundbites == 3)
        #expect(plan.jobs.map(\.guid) == ["g-long", "g-long"])
        #expect(plan.jobs.map(\.startMs) == [1_500, 2_000])
        #expect(plan.jobs.map(\.durationMs) == [60_000, 30_000])
        #expect(plan.jobs.map(\.capped) == [true, false])
        #expect(plan.warnings.count == 2)
        #expect(plan.warnings.contains { $0.contains("\"Trailer\"") && $0.contains("no <guid>") }, "\(plan.warnings)")
        #expect(plan.warnings.contains { $0.contains("\"Long\" (guid g-long), soundbite at 1.5 s") && $0.contains("60000 ms") }, "\(plan.warnings)")
        #expect(plan.invalid.count == 2 && plan.invalid[0].contains("negative"), "\(plan.invalid)")
        #expect(plan.invalid[1].contains("https://example.org/?p=12") && plan.invalid[1].contains("ObjectId"), "\(plan.invalid)")
    }
}

/// `clipproxy warm --feed` as a subprocess against `clipproxy serve` on the fixture catalog.
@Suite("warm --feed: the running server cuts a feed's soundbites")
struct WarmFeedTests {
    static let daily = (guid: "0e983347-7815-4b33-8a7e-2b1c9f0e1a11", sourceKey: ServerTests.sourceKey)
    static let tagged = (guid: "tag:example.org,2024:ep-10",
                         sourceKey: "tagged-and-covered/tag:example.org,2024:ep-10/audio/cover-art-special_tag:exam_audio.mp3")

    /// The soundbites that can be cut, as (guid, source key, start ms, duration ms the server is asked for).
    static let good: [(guid: String, sourceKey: String, startMs: Int64, durationMs: Int64)] = [
        (daily.guid, daily.sourceKey, 5_500, 10_250),
        (daily.guid, daily.sourceKey, 1_000, 60_000),  // 90 s in the feed, capped
        (tagged.guid, tagged.sourceKey, 12_345, 7_500),
    ]

    /// Items with the good soundbites (the second under another prefix), and with `failing` the
    /// ones that cannot be: past the episode's end, an unknown guid, an item without a guid.
    static func feed(failing: Bool) -> Data {
        podcastFeed("""
        <item><title>Clocks That Disagree</title><guid>\(daily.guid)</guid>
          <podcast:soundbite startTime="5.5" duration="10.25">Ticks</podcast:soundbite>
          <podcast:soundbite startTime="1" duration="90">The long one</podcast:soundbite>
          \(failing ? #"<podcast:soundbite startTime="900" duration="10">After the end</podcast:soundbite>"# : "")
        </item>
        <item xmlns:pi="https://podcastindex.org/namespace/1.0"><title>Cover Art Special</title><guid>\(tagged.guid)</guid>
          <pi:soundbite startTime="12.345" duration="7.5">Covered</pi:soundbite>
        </item>
        """ + (failing ? """
        <item><title>Gone</title><guid>no-such-episode-guid</guid>
          <podcast:soundbite startTime="1" duration="5"/><podcast:soundbite startTime="2" duration="5"/>
        </item>
        <item><title>Trailer</title><podcast:soundbite startTime="0" duration="5"/></item>
        """ : ""))
    }

    static func write(_ data: Data, to work: TemporaryDirectory, as name: String) throws -> String {
        let path = work.path + "/" + name
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    static func environment(_ server: EmbeddedServer, signingKey: String? = nil) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CLIPPROXY_") }
        environment.merge(server.environment) { $1 }
        if let signingKey { environment["CLIPPROXY_SIGNING_KEY"] = signingKey }
        return environment
    }

    /// `body` with a work directory and `clipproxy serve` on the fixtures (plus `extra` variables), both removed after.
    static func withServer(_ name: String, extra: [String: String] = [:],
                           _ body: (TemporaryDirectory, EmbeddedServer, ClipProxyProcess) throws -> Void) throws {
        let work = try TemporaryDirectory(name)
        defer { work.remove() }
        let embedded = EmbeddedServer(work: work)
        let server = try ClipProxyProcess(environment: embedded.environment.merging(extra) { $1 })
        defer { server.stop() }
        try body(work, embedded, server)
    }

    /// After a warm: each good soundbite is a local hit whose bytes are `clipproxy trim`'s for its window.
    static func expectWarmed(_ server: ClipProxyProcess, signer: URLSigner? = nil) throws {
        for clip in good {
            let path = ClipURLTools.clipPath(clip.guid, startMs: clip.startMs, durationMs: clip.durationMs, signer: signer)
            let response = try fetch(server.baseURL + path)
            #expect(response.status == 200, "\(path): \(String(decoding: response.body.prefix(300), as: UTF8.self))")
            #expect(response.headers["x-clip-tier"] == "l1_hit", "\(path)")
            #expect(sameBytes(response.body, try trimmed(clip.sourceKey, startMs: clip.startMs, durationMs: clip.durationMs)), "\(path)")
        }
    }

    @Test("Good soundbites are warmed (a long one capped); an unknown guid, a window past the end and an item without a guid are reported")
    func warmFeedFile() throws {
        try Self.withServer("warm-feed") { work, embedded, server in
            let feed = try Self.write(Self.feed(failing: true), to: work, as: "feed.xml")
            let run = try runClipProxy(["warm", "--feed", feed, "--server", server.baseURL, "--concurrency", "2"],
                                       environment: Self.environment(embedded))
            #expect(run.status == 1, "\(run.stdout)\n\(run.stderr)")
            #expect(run.stdout.contains("warm finished:"), "\(run.stdout)")
            #expect(IndexSourcesTests.count("soundbites", in: run.stdout) == 6, "\(run.stdout)")
            #expect(IndexSourcesTests.count("warmed", in: run.stdout) == 3, "\(run.stdout)")
            #expect(IndexSourcesTests.count("already cached", in: run.stdout) == 0, "\(run.stdout)")
            #expect(IndexSourcesTests.count("capped", in: run.stdout) == 1, "\(run.stdout)")
            #expect(IndexSourcesTests.count("failed", in: run.stdout) == 3, "\(run.stdout)")
            let bytes = try #require(IndexSourcesTests.count("bytes", in: run.stdout))
            let expectedBytes = try Self.good.reduce(0) { $0 + (try trimmed($1.sourceKey, startMs: $1.startMs, durationMs: $1.durationMs)).count }
            #expect(bytes == expectedBytes, "\(run.stdout)")
            #expect(run.stdout.contains("unknown episodes (HTTP 404 not_found): 1 guid, 2 soundbites"), "\(run.stdout)")
            #expect(run.stdout.contains("\"Gone\" (guid no-such-episode-guid): soundbites at 1 s, 2 s"), "\(run.stdout)")
            #expect(run.stdout.contains("\"Clocks That Disagree\" (guid \(Self.daily.guid)), soundbite at 900 s: HTTP 422 window_outside_episode: "),
                    "\(run.stdout)")
            #expect(run.stderr.contains("\"Clocks That Disagree\" (guid \(Self.daily.guid)), soundbite at 1 s lasts 90000 ms"), "\(run.stderr)")
            #expect(run.stderr.contains("\"Trailer\" (line ") && run.stderr.contains("has no <guid>"), "\(run.stderr)")
            #expect(server.waitForLog("fill finished", count: 3))
            try Self.expectWarmed(server)
        }
    }

    @Test("A feed over HTTP (through a redirect) warms; run again, every clip is already cached; a missing feed URL fails")
    func warmFeedOverHTTP() throws {
        try Self.withServer("warm-feed-http") { work, embedded, server in
            _ = try Self.write(Self.feed(failing: false), to: work, as: "feed.xml")
            let feedServer = try TestServer.start(name: "feed-http", executable: RepoPaths.python, arguments: ["-c", Self.feedServer, work.path])
            defer { feedServer.stop() }
            let arguments = ["warm", "--feed", feedServer.endpoint + "/moved", "--server", server.baseURL]
            let first = try runClipProxy(arguments, environment: Self.environment(embedded))
            #expect(first.status == 0, "\(first.stdout)\n\(first.stderr)")
            #expect(IndexSourcesTests.count("warmed", in: first.stdout) == 3 && IndexSourcesTests.count("failed", in: first.stdout) == 0, "\(first.stdout)")
            #expect(server.waitForLog("fill finished", count: 3))
            let again = try runClipProxy(arguments, environment: Self.environment(embedded))
            #expect(again.status == 0, "\(again.stdout)\n\(again.stderr)")
            #expect(IndexSourcesTests.count("warmed", in: again.stdout) == 0, "\(again.stdout)")
            #expect(again.stdout.contains("already cached:  3 (l1_hit 3, l2_hit 0)"), "\(again.stdout)")
            try Self.expectWarmed(server)

            let missing = try runClipProxy(["warm", "--feed", feedServer.endpoint + "/nothing.xml", "--server", server.baseURL],
                                           environment: Self.environment(embedded))
            #expect(missing.status != 0 && missing.stderr.contains("HTTP 404"), "\(missing.stderr)")
        }
    }

    @Test("With signing.key the URLs are signed; without the key the server's 403 is reported")
    func warmSigned() throws {
        let key = "warm-feed-test-key-0123456789abcdef"
        try Self.withServer("warm-feed-signed", extra: ["CLIPPROXY_SIGNING_KEY": key]) { work, embedded, server in
            let feed = try Self.write(Self.feed(failing: false), to: work, as: "feed.xml")

            let unsigned = try runClipProxy(["warm", "--feed", feed, "--server", server.baseURL], environment: Self.environment(embedded))
            #expect(unsigned.status == 1, "\(unsigned.stdout)\n\(unsigned.stderr)")
            #expect(IndexSourcesTests.count("failed", in: unsigned.stdout) == 3, "\(unsigned.stdout)")
            #expect(unsigned.stdout.contains("HTTP 403"), "\(unsigned.stdout)")

            let signed = try runClipProxy(["warm", "--feed", feed, "--server", server.baseURL], environment: Self.environment(embedded, signingKey: key))
            #expect(signed.status == 0, "\(signed.stdout)\n\(signed.stderr)")
            #expect(signed.stdout.contains("(signed URLs)") && IndexSourcesTests.count("warmed", in: signed.stdout) == 3, "\(signed.stdout)")
            #expect(server.waitForLog("fill finished", count: 3))
            try Self.expectWarmed(server, signer: URLSigner(key: key, previousKey: ""))
        }
    }

    @Test("Ctrl-C: the clip in flight finishes, nothing more starts, a summary and exit 130")
    func interrupt() throws {
        try Self.withServer("warm-feed-interrupt") { work, embedded, server in
            // Every request held back 0.3 s, so the run is still going when the signal comes.
            let slow = try TestServer.start(name: "slow-forwarder", executable: RepoPaths.python,
                                            arguments: ["-c", Self.slowForwarder, server.baseURL, "0.3"])
            defer { slow.stop() }
            let soundbites = (0..<30).map { #"<podcast:soundbite startTime="\#($0)" duration="1"/>"# }.joined()
            let feed = try Self.write(podcastFeed("<item><guid>\(Self.daily.guid)</guid>\(soundbites)</item>"), to: work, as: "feed.xml")
            let run = try ToolProcess(["warm", "--feed", feed, "--server", slow.endpoint, "--concurrency", "1", "--progress-interval", "0.3"],
                                      environment: Self.environment(embedded))
            let progressed = run.waitForOutput(timeout: 60) { text in
                text.matches(of: /progress: (\d+)\/30 done/).contains { (Int($0.output.1) ?? 0) >= 2 }
            }
            #expect(progressed, "no progress line showed 2 clips done: \(run.stdout)")
            kill(run.process.processIdentifier, SIGINT)
            let result = run.finish(timeout: 30)
            #expect(result.status == 130, "\(result.stdout)\n\(result.stderr)")
            #expect(result.stderr.contains("warm: stopping after the 1 clip in flight"), "\(result.stderr)")
            #expect(result.stdout.contains("warm interrupted:") && result.stdout.contains("Run the same command again"), "\(result.stdout)")
            let warmed = try #require(IndexSourcesTests.count("warmed", in: result.stdout))
            let notStarted = try #require(IndexSourcesTests.count("not started", in: result.stdout))
            #expect(warmed >= 2 && notStarted > 0 && warmed + notStarted == 30, "\(result.stdout)")
            #expect(IndexSourcesTests.count("failed", in: result.stdout) == 0, "\(result.stdout)")
        }
    }

    @Test("Feeds that cannot be used exit non-zero saying why; a feed without soundbites warms nothing and exits 0")
    func badFeeds() throws {
        let work = try TemporaryDirectory("warm-feed-bad")
        defer { work.remove() }
        // No server: all of these stop before the first request.
        let unreachable = ["--server", "http://127.0.0.1:1"]
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CLIPPROXY_") }
        let cases: [(name: String, content: String?, says: String)] = [
            ("broken.xml", "<rss>\n<channel>\n<item>\n</channel>\n", "not XML: line 4, column "),
            ("atom.xml", #"<feed xmlns="http://www.w3.org/2005/Atom"/>"#, "no <channel> element (the document's root is <feed>)"),
            ("absent.xml", nil, "does not exist"),
        ]
        for (name, content, says) in cases {
            let path = try content.map { try Self.write(Data($0.utf8), to: work, as: name) } ?? work.path + "/" + name
            let run = try runClipProxy(["warm", "--feed", path] + unreachable, environment: environment)
            #expect(run.status != 0 && run.stderr.contains(says), "\(name): \(run.stderr)")
        }
        let quiet = try Self.write(podcastFeed("<item><guid>g</guid><title>No bites</title></item>"), to: work, as: "quiet.xml")
        let run = try runClipProxy(["warm", "--feed", quiet] + unreachable, environment: environment)
        #expect(run.status == 0 && run.stdout.contains("nothing to warm"), "\(run.stdout)\n\(run.stderr)")

        let down = try Self.write(Self.feed(failing: false), to: work, as: "feed.xml")
        let noServer = try runClipProxy(["warm", "--feed", down] + unreachable, environment: environment)
        #expect(noServer.status != 0 && noServer.stderr.contains("no server answers at http://127.0.0.1:1"), "\(noServer.stderr)")

        let help = try runClipProxy(["warm", "--help"])
        #expect(help.stdout.contains("--feed") && help.stdout.contains("podcast:soundbite") && help.stdout.contains("max_duration_ms"), "\(help.stdout)")
    }

    /// Forwards each GET to the server at argv[1] after argv[2] seconds, answering with its
    /// status, headers and body (one request a connection, so no keep-alive state to mind).
    static let slowForwarder = """
    import http.server, sys, time, urllib.error, urllib.request
    target, delay = sys.argv[1], float(sys.argv[2])
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(delay)
            try:
                answer = urllib.request.urlopen(target + self.path)
            except urllib.error.HTTPError as error:
                answer = error
            body = answer.read()
            self.send_response(answer.status)
            for name in ("Content-Type", "X-Clip-Tier"):
                if answer.headers.get(name):
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("LISTENING", server.server_address[1], flush=True)
    server.serve_forever()
    """

    /// Serves the directory in argv[1]; `/moved` redirects to `/feed.xml`.
    static let feedServer = """
    import http.server, os, sys
    os.chdir(sys.argv[1])
    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/moved":
                self.send_response(301)
                self.send_header("Location", "/feed.xml")
                self.end_headers()
                return
            super().do_GET()
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print("LISTENING", server.server_address[1], flush=True)
    server.serve_forever()
    """
}
