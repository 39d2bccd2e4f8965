import Foundation
import Testing
import TestSupport

/// What the dashboard page (`DashboardPage`) reports in its data- attributes, read from a DOM dump.
struct DashboardDOM {
    let dom: String

    init(_ dom: String) { self.dom = dom }

    /// The attributes of the first element with `id`.
    func attributes(of id: String) -> [String: String] {
        guard let tag = dom.firstMatch(of: try! Regex("<[a-z]+ id=\"\(id)\"[^>]*>"))?.0 else { return [:] }
        return Dictionary(tag.matches(of: /([a-z-]+)="([^"]*)"/).map { (String($0.1), String($0.2)) }) { a, _ in a }
    }

    /// The text of the first element with `id` (no child elements expected).
    func text(of id: String) -> String? {
        dom.firstMatch(of: try! Regex("id=\"\(id)\"[^>]*>([^<]*)<")).map { String($0.output[1].substring ?? "") }
    }

    /// With `check=1`: how many episodes are listed, and the clip URL and duration each row reports.
    func episodeCheck() -> (listed: Int, played: [(url: String, duration: Double)]) {
        let rows = dom.matches(of: /<li class="episode"[^>]*>/).map { String($0.0) }
        let played = rows.compactMap { row -> (String, Double)? in
            guard let url = row.firstMatch(of: /data-src="([^"]*)"/), let duration = row.firstMatch(of: /data-duration="([0-9.]+)"/).flatMap({ Double($0.1) }) else { return nil }
            return (Self.unescaped(String(url.1)), duration)
        }
        return (rows.count, played)
    }

    /// An attribute value as the page set it (outerHTML escapes `&` and `"`).
    static func unescaped(_ value: String) -> String {
        value.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
    }
}

@Suite("The dashboard in a browser: search, play with captions and waveform")
struct DashboardBrowserTests {
    /// The episode list is in (or failed), and the player has its clip's duration, cues and
    /// waveform and shows a caption, or reported an error.
    static let playerDone = "(e => e.dataset.count !== undefined || e.classList.contains('failed'))(document.getElementById('episodes')) && "
        + "(p => 'error' in p.dataset || ('duration' in p.dataset && 'cues' in p.dataset "
        + "&& 'waveformDrawn' in p.dataset && document.getElementById('caption').textContent !== ''))"
        + "(document.getElementById('player'))"

    @Test("/?q=lanterns&autoplay=1: two results with the word marked; the first plays its snapped window with cues and a drawn waveform, a download link beside it")
    func searchAndPlay() throws {
        let work = try TemporaryDirectory("dashboard-browser")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let page = DashboardDOM(try Browser.chromium.dumpDOM(of: server.baseURL + "/?q=lanterns&autoplay=1", until: Self.playerDone))
        #expect(page.attributes(of: "results")["data-count"] == "2", "\(page.dom.prefix(4000))")
        #expect(page.dom.components(separatedBy: "<mark>lanterns</mark>").count - 1 == 2)
        #expect(Int(page.attributes(of: "episodes")["data-count"] ?? "") == 7)

        let player = page.attributes(of: "player")
        #expect(player["hidden"] == nil, "the player is shown")
        #expect(player["data-error"] == nil && !page.dom.contains("data-error"), "\(player)")
        try Self.expectSnappedPlay(page, server)
        #expect((Int(player["data-cues"] ?? "") ?? 0) >= 1, "the track loaded cues: \(player)")
        // A 1000 × 96 canvas: a real waveform inks thousands of pixels; silence would ink one row (1,000).
        #expect((Int(player["data-waveform-drawn"] ?? "") ?? 0) > 5_000, "the waveform is drawn: \(player)")
        #expect(page.text(of: "now-playing") == "The Daily Tones — Clocks That Disagree from 0:15")
        #expect(page.text(of: "caption")?.contains("forty-two lanterns") == true, "the active cue is shown: \(page.text(of: "caption") ?? "none")")
        #expect(server.log.contains("captions") && server.log.contains("peaks"), "the page asked for the clip's captions and peaks")
    }

    /// The player played its clip with `snap=pause`, as long as the window the clip's
    /// `Content-Location` names; the download link beside it is that window with `download=1`.
    static func expectSnappedPlay(_ page: DashboardDOM, _ server: ClipProxyProcess, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let player = page.attributes(of: "player")
        let src = DashboardDOM.unescaped(try #require(player["data-src"], "\(player)", sourceLocation: sourceLocation))
        #expect(src.contains("snap=pause"), "every play snaps: \(src)", sourceLocation: sourceLocation)
        let clip = try fetch(src, method: "HEAD")
        let window = try #require(SnapToPausesTests.window(clip.headers["content-location"]), "\(src): \(clip.headers)", sourceLocation: sourceLocation)
        #expect(Double(player["data-duration"] ?? "").map { abs($0 - Double(window.durationMs) / 1000) <= 0.1 } == true,
                "the snapped window \(window): \(player)", sourceLocation: sourceLocation)
        let href = DashboardDOM.unescaped(try #require(page.attributes(of: "download")["href"], "a download link", sourceLocation: sourceLocation))
        #expect(href == src + "&download=1", "\(href)", sourceLocation: sourceLocation)
        let download = try fetch(href, method: "HEAD")
        #expect(download.status == 200 && download.headers["content-disposition"]?.hasPrefix("attachment;") == true
                && download.headers["content-location"] == clip.headers["content-location"].map { $0 + "&download=1" },
                "the download is the played window: \(download.headers)", sourceLocation: sourceLocation)
    }

    /// A page with one `<audio>` on `url` that reports its duration once it can play through
    /// (or ends), or its error.
    static func playThroughPage(_ url: String) -> String {
        """
        <!doctype html><html><body><pre id="out">{}</pre><audio id="clip" preload="auto" data-src="\(url)"></audio>
        <script>
        const results = {}, out = document.getElementById('out'), a = document.getElementById('clip');
        function report(key, value) { results[key] = value; out.textContent = JSON.stringify(results); out.dataset.done = '1'; }
        a.addEventListener('loadedmetadata', () => { results.duration = a.duration; });
        a.addEventListener('canplaythrough', () => report('canplaythrough', a.duration));
        a.addEventListener('ended', () => report('ended', a.duration));
        a.addEventListener('error', () => report('error', a.error && a.error.code));
        a.src = a.dataset.src;
        </script></body></html>
        """
    }

    @Test("A download=1 clip (snapped) plays: it can play through, as long as the window it holds, no error", .serialized, arguments: Browser.allCases)
    func downloadPlays(browser: Browser) throws {
        let work = try TemporaryDirectory("dashboard-download-\(browser)")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        // The covered episode: the tag carries a cover (APIC) in front of the audio.
        let url = "\(server.baseURL)/clips/\(DownloadTests.covered)/12000?snap=pause&download=1"
        let head = try fetch(url, method: "HEAD")
        let window = try #require(SnapToPausesTests.window(head.headers["content-location"]))
        #expect(head.headers["content-disposition"]?.hasPrefix("attachment;") == true)
        let (results, json) = try BrowserPage.results(in: try browser.dumpDOM(of: try BrowserPage.write(Self.playThroughPage(url), in: work),
                                                                            until: BrowserPage.done))
        #expect(results["error"] == nil, "\(browser): \(json)")
        let played = (results["canplaythrough"] ?? results["ended"]) as? Double
        #expect(played.map { abs($0 - Double(window.durationMs) / 1000) <= 0.1 } == true, "\(browser): window \(window), \(json)")
    }

    @Test("Catalog text is shown as text: markup in a transcript is escaped, only the match is marked")
    func catalogTextIsEscaped() throws {
        try withCaptionServer("dashboard-escaping") { server in
            let page = DashboardDOM(try Browser.chromium.dumpDOM(of: server.baseURL + "/?q=chips+bold&autoplay=1", until: Self.playerDone))
            #expect(page.attributes(of: "results")["data-count"] == "1", "\(page.dom.prefix(4000))")
            #expect(page.dom.contains("Fish &amp; <mark>chips</mark> &lt;b&gt;<mark>bold</mark>&lt;/b&gt; a --&gt; b"), "\(page.dom.prefix(6000))")
            #expect(!page.dom.contains("<b>bold</b>"), "no element was made from catalog text")
            try Self.expectSnappedPlay(page, server)
        }
    }
}
