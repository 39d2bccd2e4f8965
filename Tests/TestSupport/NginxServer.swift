import Foundation

/// A real nginx (Debian's /usr/sbin/nginx) serving a directory as static files on a free loopback
/// port: the oracle for HTTP Range and conditional-request behaviour. Everything it writes (config,
/// pid file, logs, temp paths) lives in its own temporary directory, so it needs no root and
/// leaves nothing behind. It runs in the foreground as a single process (`daemon off;
/// master_process off;`), so stopping the Process stops nginx.
public final class NginxServer: @unchecked Sendable {
    /// The directory served at `/`.
    public let root: URL
    private let nginx: NginxProcess

    public var port: Int { nginx.port }
    public var host: String { "127.0.0.1" }
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    private init(root: URL, nginx: NginxProcess) {
        self.root = root
        self.nginx = nginx
    }

    /// Starts nginx serving `root` and waits until it accepts connections.
    /// - Parameter httpDirectives: extra directives for the `http` block (e.g. `max_ranges 8;`).
    public static func start(serving root: URL, httpDirectives: [String] = [], timeout: TimeInterval = 15) throws -> NginxServer {
        let nginx = try NginxProcess.launch(label: "nginx", timeout: timeout) { directory, port in
            try configuration(directory: directory.url, root: root, port: port, httpDirectives: httpDirectives)
                .write(to: directory.url.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
        }
        return NginxServer(root: root, nginx: nginx)
    }

    /// Stops nginx and removes its temporary directory (the served directory is the caller's).
    public func stop() { nginx.stop() }

    public var isRunning: Bool { nginx.isRunning }

    /// nginx's error log and anything it printed, for failure messages.
    public var log: String { nginx.log }

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
}

/// Runs `body` with nginx serving `root`, and always stops nginx afterwards, also when `body` throws.
public func withNginx<T>(serving root: URL, httpDirectives: [String] = [],
                         _ body: (NginxServer) async throws -> T) async throws -> T {
    let server = try NginxServer.start(serving: root, httpDirectives: httpDirectives)
    defer { server.stop() }
    return try await body(server)
}
