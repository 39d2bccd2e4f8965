import Foundation

/// WebKit (Safari's engine) as the second browser oracle: `scripts/webkit_page.py` drives
/// WebKitGTK's MiniBrowser through its WebDriver on a private Xvfb display, with the venv's selenium.
/// Unlike Chromium's `--virtual-time-budget`, it runs in real time, so callers say what to wait for.
public enum HeadlessWebKit {
    /// The page's DOM once the JavaScript expression `condition` holds (polled for up to `timeout` s).
    public static func dumpDOM(of url: String, waitFor condition: String, timeout: TimeInterval = 30) throws -> String {
        let output = try load(url, ["--wait-for", condition, "--dom"], timeout: timeout)
        guard let dom = output["dom"] as? String else { throw TestSetupError("webkit_page.py printed no DOM: \(output)") }
        return dom
    }

    private static func load(_ url: String, _ options: [String], timeout: TimeInterval) throws -> [String: Any] {
        let python = try RepoPaths.require(RepoPaths.python, hint: "run `make test` (it prepares .venv with selenium and installs WebKit)")
        let script = RepoPaths.scripts.appendingPathComponent("webkit_page.py").path
        // The script bounds each of its steps; this bound is for a script that hangs anyway.
        let result = try BoundedProcess.run(python.path, [script, url, "--timeout", String(timeout)] + options,
                                            limit: timeout * 3 + 90)
        guard result.status == 0 else {
            throw TestSetupError("WebKit could not load \(url) (webkit_page.py exit \(result.status)): \(result.stderr.suffix(4000))")
        }
        guard let output = try? JSONSerialization.jsonObject(with: result.stdout) as? [String: Any] else {
            throw TestSetupError("webkit_page.py printed no JSON object: \(String(decoding: result.stdout.prefix(2000), as: UTF8.self))")
        }
        return output
    }
}
