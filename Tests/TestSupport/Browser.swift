import Foundation

/// The engines the browser tests run in: Chromium, and WebKit (Safari's engine, the pickiest
/// `<audio>` client about Range and lengths).
public enum Browser: String, CaseIterable, Sendable, CustomStringConvertible {
    case chromium, webkit

    public var description: String { rawValue }

    /// Loads `url` and returns the DOM once its scripts are done. `done` is a JavaScript expression
    /// that holds by then: WebKit polls it in real time for up to `timeout` seconds; Chromium
    /// runs `virtualSeconds` of virtual time instead (skipping idle time) and ignores it.
    public func dumpDOM(of url: String, until done: String, virtualSeconds: Int = 15, timeout: TimeInterval = 60) throws -> String {
        switch self {
        case .chromium: try HeadlessChromium.dumpDOM(of: url, virtualTimeMs: virtualSeconds * 1000)
        case .webkit: try HeadlessWebKit.dumpDOM(of: url, waitFor: done, timeout: timeout)
        }
    }
}

/// Test pages that report in one place: a `<pre id="out">` holding a JSON object, marked
/// `data-done` once the page has every answer it waits for.
public enum BrowserPage {
    /// The `done` condition for `Browser.dumpDOM` on such a page.
    public static let done = "document.querySelector('#out[data-done]')"

    /// Writes `html` as page.html in `directory` and returns its file URL.
    public static func write(_ html: String, in directory: TemporaryDirectory) throws -> String {
        let url = directory.url.appendingPathComponent("page.html")
        try html.write(to: url, atomically: true, encoding: .utf8)
        return url.absoluteString
    }

    /// The JSON object in `<pre id="out">`, and its text for messages.
    public static func results(in dom: String) throws -> (values: [String: Any], text: String) {
        guard let match = dom.firstMatch(of: /<pre id="out"[^>]*>([^<]*)<\/pre>/) else {
            throw TestSetupError("the page has no <pre id=\"out\">: \(dom.prefix(2000))")
        }
        // outerHTML escapes these three in text.
        let text = String(match.1).replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
        guard let values = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestSetupError("<pre id=\"out\"> holds no JSON object: \(text)")
        }
        return (values, text)
    }
}
