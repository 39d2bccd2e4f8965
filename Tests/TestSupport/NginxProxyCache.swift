import Foundation

/// nginx as the CDN in front of clipproxy, configured from `conf/cdn/nginx-proxy-cache.conf`
/// itself: that file's placeholders are filled in and it is included into a throw-away nginx.conf
/// that only adds what a test run needs (foreground single process, pid, error log and temp paths
/// in a temporary directory). The caching configuration under test is therefore exactly the one
/// an operator installs.
public final class NginxProxyCache: @unchecked Sendable {
    /// The operator's configuration (an `http`-level snippet with @PLACEHOLDERS@).
    public static var template: URL { RepoPaths.root.appendingPathComponent("conf/cdn/nginx-proxy-cache.conf") }

    private let nginx: NginxProcess
    private var directory: TemporaryDirectory { nginx.directory }

    public var port: Int { nginx.port }
    public var host: String { "127.0.0.1" }
    public var endpoint: String { "http://127.0.0.1:\(port)" }
    /// Where nginx keeps the cached clips.
    public var cacheDirectory: URL { directory.url.appendingPathComponent("cache") }

    private init(nginx: NginxProcess) { self.nginx = nginx }

    /// Starts nginx in front of `upstreams` (each `host:port`) and waits until it accepts
    /// connections.
    public static func start(upstreams: [String], timeout: TimeInterval = 15) throws -> NginxProxyCache {
        let template = try String(contentsOf: RepoPaths.require(Self.template, hint: "it is part of the repository"), encoding: .utf8)
        let nginx = try NginxProcess.launch(label: "nginx-cdn", timeout: timeout) { directory, port in
            let d = directory.path
            let snippet = try render(template, values: [
                "LISTEN": "127.0.0.1:\(port)",
                "CACHE_DIR": d + "/cache",
                "ACCESS_LOG": d + "/access.log",
            ], upstreams: upstreams)
            try snippet.write(toFile: d + "/clipproxy-cdn.conf", atomically: true, encoding: .utf8)
            try NginxProcess.mainConfiguration(directory: d, include: "clipproxy-cdn.conf", generatedBy: "NginxProxyCache").write(toFile: d + "/nginx.conf", atomically: true, encoding: .utf8)
        }
        return NginxProxyCache(nginx: nginx)
    }

    /// Fills in `@NAME@` placeholders. The line holding `@UPSTREAM@` is repeated once per upstream
    /// (that is how the file says to list several nodes). Any placeholder left over is an error, so
    /// a new one added to the file cannot go unnoticed.
    public static func render(_ template: String, values: [String: String], upstreams: [String]) throws -> String {
        guard !upstreams.isEmpty else { throw TestSetupError("at least one upstream is needed") }
        var lines: [String] = []
        var upstreamLines = 0
        for line in template.split(separator: "\n", omittingEmptySubsequences: false) {
            // Comments document the placeholders; only directives are filled in.
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("#") { lines.append(String(line)); continue }
            var filled = String(line)
            for (name, value) in values { filled = filled.replacingOccurrences(of: "@\(name)@", with: value) }
            if filled.contains("@UPSTREAM@") {
                upstreamLines += 1
                lines += upstreams.map { filled.replacingOccurrences(of: "@UPSTREAM@", with: $0) }
            } else {
                lines.append(filled)
            }
        }
        guard upstreamLines == 1 else {
            throw TestSetupError("expected exactly one directive line with @UPSTREAM@ in the template, found \(upstreamLines)")
        }
        let text = lines.joined(separator: "\n")
        let directives = text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("#") }
        if let left = directives.first(where: { $0.contains(/@[A-Z_]+@/) }) {
            throw TestSetupError("placeholder not filled in: \(left)")
        }
        return text
    }

    /// Stops nginx and removes its directory, cache included.
    public func stop() { nginx.stop() }

    public var isRunning: Bool { nginx.isRunning }

    /// nginx's error log and anything it printed, for failure messages.
    public var log: String { nginx.log }

    /// The access log in the file's `clipproxy_cdn` format: request, status, Range, cache status,
    /// upstream address (`-` when no node was asked).
    public var accessLog: String {
        (try? String(contentsOf: directory.url.appendingPathComponent("access.log"), encoding: .utf8)) ?? ""
    }

    /// The access log once it has at least `lines` lines (or after `timeout`). nginx writes a
    /// request's line after sending the last byte of the response, so a client that has the
    /// whole response can still read the log before the line is there.
    public func accessLog(lines: Int, timeout: TimeInterval = 5) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        var text = accessLog
        while text.split(separator: "\n").count < lines && Date() < deadline {
            usleep(10_000)
            text = accessLog
        }
        return text
    }
}
