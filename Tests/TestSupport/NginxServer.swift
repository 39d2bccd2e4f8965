import Foundation

/// A real nginx (Debian's /usr/sbin/nginx) serving a directory as static files on a free loopback
/// port: the oracle for HTTP Range and conditional-request behaviour. Everything it writes (config,
/// pid file, logs, temp paths) lives in its own temporary directory, so it needs no root and
/// leaves nothing behind. It runs in the foreground as a single process (`daemon off;
/// master_process off;`), so stopping the Process stops nginx.
public final class NginxServer: @unchecked Sendable {
    public static let executable = URL(fileURLWithPath: "/usr/sbin/nginx")

    public let port: Int
    /// The directory served at `/`.
    public let root: URL
    private let process: Process
    private let directory: TemporaryDirectory
    private let lock = NSLock()
    private var stopped = false

    public var host: String { "127.0.0.1" }
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    private init(port: Int, root: URL, process: Process, directory: TemporaryDirectory) {
        self.port = port
        self.root = root
        self.process = process
        self.directory = directory
    }

    /// Starts nginx serving `root` and waits until it accepts connections.
    /// - Parameter httpDirectives: extra directives for the `http` block (e.g. `max_ranges 8;`).
    public static func start(serving root: URL, httpDirectives: [String] = [], timeout: TimeInterval = 15) throws -> NginxServer {
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw TestSetupError("nginx is not installed (\(executable.path) is missing): run `make test`, or `apt-get install -y nginx`")
        }
        var lastFailure = ""
        // A port found free can be taken before nginx binds it; try again with another one.
        for _ in 0..<3 {
            let directory = try TemporaryDirectory("nginx")
            let port = try freeLoopbackPort()
            let config = configuration(directory: directory.url, root: root, port: port, httpDirectives: httpDirectives)
            let configFile = directory.url.appendingPathComponent("nginx.conf")
            try config.write(to: configFile, atomically: true, encoding: .utf8)
            let output = directory.url.appendingPathComponent("stderr.log")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)

            let process = Process()
            process.executableURL = executable
            process.arguments = ["-p", directory.path + "/", "-c", configFile.path,
                                 "-e", directory.url.appendingPathComponent("error.log").path]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = try FileHandle(forWritingTo: output)
            process.standardError = try FileHandle(forWritingTo: output)
            try process.run()

            let server = NginxServer(port: port, root: root, process: process, directory: directory)
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline {
                if canConnect(port: port) { return server }
                usleep(20_000)
            }
            lastFailure = server.log
            server.stop()
            if !lastFailure.contains("Address already in use") { break }
        }
        throw TestSetupError("nginx did not start within \(Int(timeout)) s:\n\(lastFailure.suffix(4000))")
    }

    /// Stops nginx and removes its temporary directory (the served directory is the caller's).
    ///
    /// With SIGKILL, not SIGTERM: a process started from a Dispatch or Swift Concurrency thread
    /// inherits that thread's signal mask, which blocks SIGTERM, SIGINT and SIGQUIT, and nginx in
    /// single-process mode never unblocks them (its workers do; this has none), so a SIGTERM is
    /// never delivered. Nothing is lost: nginx writes its logs unbuffered and keeps all its state in
    /// the temporary directory.
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

    deinit { stop() }

    private static func configuration(directory: URL, root: URL, port: Int, httpDirectives: [String]) -> String {
        let d = directory.path
        return """
        daemon off;
        master_process off;
        worker_processes 1;
        pid \(d)/nginx.pid;
        error_log \(d)/error.log warn;
        events { worker_connections 64; }
        http {
            access_log \(d)/access.log;
            client_body_temp_path \(d)/client_body;
            proxy_temp_path \(d)/proxy;
            fastcgi_temp_path \(d)/fastcgi;
            uwsgi_temp_path \(d)/uwsgi;
            scgi_temp_path \(d)/scgi;
            types { audio/mpeg mp3; text/html html; }
            default_type application/octet-stream;
            \(httpDirectives.joined(separator: "\n    "))
            server {
                listen 127.0.0.1:\(port);
                root \(root.path);
            }
        }

        """
    }

    private static func canConnect(port: Int) -> Bool {
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

/// Runs `body` with nginx serving `root`, and always stops nginx afterwards, also when `body` throws.
public func withNginx<T>(serving root: URL, httpDirectives: [String] = [],
                         _ body: (NginxServer) async throws -> T) async throws -> T {
    let server = try NginxServer.start(serving: root, httpDirectives: httpDirectives)
    defer { server.stop() }
    return try await body(server)
}
