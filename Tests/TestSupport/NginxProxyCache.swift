import Foundation

/// nginx as the CDN in front of clipproxy, configured from `conf/cdn/nginx-proxy-cache.conf`
/// itself: that file's placeholders are filled in and it is included into a throw-away nginx.conf
/// that only adds what a test run needs (foreground single process, pid, error log and temp paths
/// in a temporary directory). The caching configuration under test is therefore exactly the one
/// an operator installs.
public final class NginxProxyCache: @unchecked Sendable {
    public static let executable = URL(fileURLWithPath: "/usr/sbin/nginx")
    /// The operator's configuration (an `http`-level snippet with @PLACEHOLDERS@).
    public static var template: URL { RepoPaths.root.appendingPathComponent("conf/cdn/nginx-proxy-cache.conf") }

    public let port: Int
    private let process: Process
    private let directory: TemporaryDirectory
    private let lock = NSLock()
    private var stopped = false

    public var host: String { "127.0.0.1" }
    public var endpoint: String { "http://127.0.0.1:\(port)" }
    /// Where nginx keeps the cached clips.
    public var cacheDirectory: URL { directory.url.appendingPathComponent("cache") }

    private init(port: Int, process: Process, directory: TemporaryDirectory) {
        self.port = port
        self.process = process
        self.directory = directory
    }

    /// Starts nginx in front of `upstreams` (each `host:port`) and waits until it accepts
    /// connections.
    public static func start(upstreams: [String], timeout: TimeInterval = 15) throws -> NginxProxyCache {
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw TestSetupError("nginx is not installed (\(executable.path) is missing): run `make test`, or `apt-get install -y nginx`")
        }
        let template = try String(contentsOf: RepoPaths.require(Self.template, hint: "it is part of the repository"), encoding: .utf8)
        var lastFailure = ""
        // A port found free can be taken before nginx binds it; try again with another one.
        for _ in 0..<3 {
            let directory = try TemporaryDirectory("nginx-cdn")
            let d = directory.path
            let port = try freeLoopbackPort()
            let snippet = try render(template, values: [
                "LISTEN": "127.0.0.1:\(port)",
                "CACHE_DIR": d + "/cache",
                "ACCESS_LOG": d + "/access.log",
            ], upstreams: upstreams)
            try snippet.write(toFile: d + "/clipproxy-cdn.conf", atomically: true, encoding: .utf8)
            try wrapper(directory: d).write(toFile: d + "/nginx.conf", atomically: true, encoding: .utf8)
            _ = FileManager.default.createFile(atPath: d + "/stderr.log", contents: nil)

            let process = Process()
            process.executableURL = executable
            process.arguments = ["-p", d + "/", "-c", d + "/nginx.conf", "-e", d + "/error.log"]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: d + "/stderr.log"))
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: d + "/stderr.log"))
            try process.run()

            let server = NginxProxyCache(port: port, process: process, directory: directory)
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline {
                if acceptsConnections(port: port) { return server }
                usleep(20_000)
            }
            lastFailure = server.log
            server.stop()
            if !lastFailure.contains("Address already in use") { break }
        }
        throw TestSetupError("nginx (conf/cdn/nginx-proxy-cache.conf) did not start within \(Int(timeout)) s:\n\(lastFailure.suffix(4000))")
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

    /// The main-context settings a throw-away instance needs, around the operator's snippet.
    private static func wrapper(directory d: String) -> String {
        """
        # Generated by NginxProxyCache for one test run; the caching configuration is the include.
        daemon off;
        master_process off;
        worker_processes 1;
        pid \(d)/nginx.pid;
        error_log \(d)/error.log info;
        events { worker_connections 1024; }
        http {
            client_body_temp_path \(d)/client_body;
            proxy_temp_path \(d)/proxy;
            fastcgi_temp_path \(d)/fastcgi;
            uwsgi_temp_path \(d)/uwsgi;
            scgi_temp_path \(d)/scgi;
            include \(d)/clipproxy-cdn.conf;
        }

        """
    }

    /// Stops nginx and removes its directory, cache included.
    ///
    /// SIGKILL: a process started from a Swift thread inherits a mask that blocks SIGTERM, and
    /// nginx in single-process mode never unblocks it (see NginxServer.stop). Nothing of value is
    /// lost; everything it wrote is in the temporary directory, which goes too.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        directory.remove()
    }

    public var isRunning: Bool { process.isRunning }

    /// nginx's error log and anything it printed, for failure messages.
    public var log: String {
        ["error.log", "stderr.log"].compactMap {
            try? String(contentsOf: directory.url.appendingPathComponent($0), encoding: .utf8)
        }.joined(separator: "\n")
    }

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

    deinit { stop() }

    private static func acceptsConnections(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
