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

    /// With `check=1`: how many episodes are listed, and the clip durations their rows report.
    func episodeCheck() -> (listed: Int, durations: [Double]) {
        let rows = dom.matches(of: /<li class="episode"[^>]*>/).map { String($0.0) }
        let durations = rows.compactMap { $0.firstMatch(of: /data-duration="([0-9.]+)"/).flatMap { Double($0.1) } }
        return (rows.count, durations)
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

    @Test("/?q=lanterns&autoplay=1: two results with the word marked; the first plays 30 s with cues and a drawn waveform")
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
        #expect(Double(player["data-duration"] ?? "").map { abs($0 - 30) <= 0.1 } == true, "30 s clip: \(player)")
        #expect((Int(player["data-cues"] ?? "") ?? 0) >= 1, "the track loaded cues: \(player)")
        // A 1000 × 96 canvas: a real waveform inks thousands of pixels; silence would ink one row (1,000).
        #expect((Int(player["data-waveform-drawn"] ?? "") ?? 0) > 5_000, "the waveform is drawn: \(player)")
        #expect(page.text(of: "now-playing") == "The Daily Tones — Clocks That Disagree from 0:15")
        #expect(page.text(of: "caption")?.contains("forty-two lanterns") == true, "the active cue is shown: \(page.text(of: "caption") ?? "none")")
        #expect(server.log.contains("captions") && server.log.contains("peaks"), "the page asked for the clip's captions and peaks")
    }

    @Test("Catalog text is shown as text: markup in a transcript is escaped, only the match is marked")
    func catalogTextIsEscaped() throws {
        try withCaptionServer("dashboard-escaping") { server in
            let page = DashboardDOM(try Browser.chromium.dumpDOM(of: server.baseURL + "/?q=chips+bold&autoplay=1", until: Self.playerDone))
            #expect(page.attributes(of: "results")["data-count"] == "1", "\(page.dom.prefix(4000))")
            #expect(page.dom.contains("Fish &amp; <mark>chips</mark> &lt;b&gt;<mark>bold</mark>&lt;/b&gt; a --&gt; b"), "\(page.dom.prefix(6000))")
            #expect(!page.dom.contains("<b>bold</b>"), "no element was made from catalog text")
            #expect(Double(page.attributes(of: "player")["data-duration"] ?? "").map { abs($0 - 30) <= 0.1 } == true)
        }
    }
}
