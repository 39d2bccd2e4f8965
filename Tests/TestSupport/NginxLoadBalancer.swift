import Foundation

/// nginx as the load balancer in front of three clipproxy nodes, configured from
/// `conf/multinode/nginx.conf` itself: its placeholders are filled in and the result is included
/// into a throw-away nginx.conf that only adds what a test run needs (foreground single process,
/// pid, error log and temp paths in a temporary directory). The balancing configuration under test
/// is exactly the one an operator installs.
public final class NginxLoadBalancer: @unchecked Sendable {
    /// The operator's configuration (an `http`-level snippet with @PLACEHOLDERS@).
    public static var template: URL { RepoPaths.root.appendingPathComponent("conf/multinode/nginx.conf") }
    /// The placeholders naming the nodes, in order.
    public static let nodePlaceholders = ["NODE_A", "NODE_B", "NODE_C"]

    private let nginx: NginxProcess

    public var port: Int { nginx.port }
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    private init(nginx: NginxProcess) { self.nginx = nginx }

    /// Starts nginx in front of exactly three `nodes` (each `host:port`) and waits until it
    /// accepts connections.
    public static func start(nodes: [String], timeout: TimeInterval = 15) throws -> NginxLoadBalancer {
        guard nodes.count == nodePlaceholders.count else {
            throw TestSetupError("conf/multinode/nginx.conf lists \(nodePlaceholders.count) nodes, got \(nodes.count)")
        }
        let template = try String(contentsOf: RepoPaths.require(Self.template, hint: "it is part of the repository"), encoding: .utf8)
        let nginx = try NginxProcess.launch(label: "nginx-lb", timeout: timeout) { directory, port in
            let d = directory.path
            var values = ["LISTEN": "127.0.0.1:\(port)", "ACCESS_LOG": d + "/access.log"]
            for (name, node) in zip(nodePlaceholders, nodes) { values[name] = node }
            try render(template, values: values).write(toFile: d + "/clipproxy-lb.conf", atomically: true, encoding: .utf8)
            try NginxProcess.mainConfiguration(directory: d, include: "clipproxy-lb.conf", generatedBy: "NginxLoadBalancer").write(toFile: d + "/nginx.conf", atomically: true, encoding: .utf8)
        }
        return NginxLoadBalancer(nginx: nginx)
    }

    /// Fills in `@NAME@` placeholders on directive lines (comments document them and stay as they
    /// are). A placeholder left over is an error, so a new one added to the file cannot go unnoticed.
    public static func render(_ template: String, values: [String: String]) throws -> String {
        var lines: [String] = []
        for line in template.split(separator: "\n", omittingEmptySubsequences: false) {
            guard !line.trimmingCharacters(in: .whitespaces).hasPrefix("#") else { lines.append(String(line)); continue }
            var filled = String(line)
            for (name, value) in values { filled = filled.replacingOccurrences(of: "@\(name)@", with: value) }
            if filled.contains(/@[A-Z_]+@/) { throw TestSetupError("placeholder not filled in: \(filled)") }
            lines.append(filled)
        }
        return lines.joined(separator: "\n")
    }

    /// Stops nginx (SIGKILL, see `NginxProcess.stop`) and removes its directory.
    public func stop() { nginx.stop() }

    /// nginx's error log and anything it printed, for failure messages.
    public var log: String { nginx.log }

    /// The access log in the file's `clipproxy_lb` format (request, status, the node or nodes
    /// tried as `upstream=`, their statuses), once it has at least `lines` lines or after `timeout`:
    /// nginx writes a request's line after the response's last byte.
    public func accessLog(lines: Int = 0, timeout: TimeInterval = 5) -> String {
        let url = nginx.directory.url.appendingPathComponent("access.log")
        let deadline = Date().addingTimeInterval(timeout)
        var text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        while text.split(separator: "\n").count < lines && Date() < deadline {
            usleep(10_000)
            text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        }
        return text
    }
}
