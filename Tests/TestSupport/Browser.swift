import Foundation

/// The engines the browser tests run in: Chromium, and WebKit (Safari's engine, the pickiest
/// `<audio>` client about Range and lengths). `scripts/browser_page.py` drives either through its
/// WebDriver, in real time: callers say what to wait for, so a server slowed by a busy machine
/// makes a test slower, never wrong. (Under Chromium's `--virtual-time-budget`, a busy machine
/// could make the budget run out before any clip had loaded.)
public enum Browser: String, CaseIterable, Sendable, CustomStringConvertible {
    case chromium, webkit

    public var description: String { rawValue }

    /// Loads `url` and returns its DOM once the JavaScript expression `done` holds (polled for up
    /// to `timeout` seconds; past it, the error shows the page as it was). The bound is generous
    /// because a page returns as soon as `done` holds, and on a busy machine a browser has been
    /// seen to sit on a media response for a minute before going on.
    public func dumpDOM(of url: String, until done: String, timeout: TimeInterval = 120) throws -> String {
        let python = try RepoPaths.require(RepoPaths.python, hint: "run `make test` (it prepares .venv with selenium and installs the browsers)")
        let script = RepoPaths.scripts.appendingPathComponent("browser_page.py").path
        // Everything the script and the browser write to temporary files, removed even after a kill.
        let temporary = try TemporaryDirectory("browser-\(rawValue)")
        defer { temporary.remove() }
        // The script bounds each of its steps; this bound is for a script that hangs anyway.
        let result = try BoundedProcess.run(python.path, [script, "--browser", rawValue, url, "--timeout", String(timeout),
                                                          "--temp-dir", temporary.path, "--wait-for", done],
                                            limit: timeout * 3 + 90)
        guard result.status == 0 else {
            throw TestSetupError("\(self) could not load \(url) (browser_page.py exit \(result.status)): \(result.stderr.suffix(4000))")
        }
        guard let output = try? JSONSerialization.jsonObject(with: result.stdout) as? [String: Any], let dom = output["dom"] as? String else {
            throw TestSetupError("browser_page.py printed no JSON object with a DOM: \(String(decoding: result.stdout.prefix(2000), as: UTF8.self))")
        }
        return dom
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
