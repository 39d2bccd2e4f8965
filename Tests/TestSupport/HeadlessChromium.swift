import Foundation

/// Headless Chromium as the browser oracle: loads a page and returns the DOM once its scripts ran.
public enum HeadlessChromium {
    public static func dumpDOM(of url: String, virtualTimeMs: Int = 8000) throws -> String {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let chromium else { throw TestSetupError("chromium is not installed: run `make test` (it installs it)") }
        let profile = try TemporaryDirectory("chromium-profile")
        defer { profile.remove() }
        let result = try FFmpegOracle.run(chromium, [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=\(profile.path)",
            "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files",
            "--virtual-time-budget=\(virtualTimeMs)", "--dump-dom", url,
        ])
        guard result.status == 0 else { throw TestSetupError("chromium exited with \(result.status): \(result.stderr.suffix(2000))") }
        return String(decoding: result.stdout, as: UTF8.self)
    }
}
