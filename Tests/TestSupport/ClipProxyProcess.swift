import Foundation

/// `clipproxy serve` as a real process on a free port, configured through its environment.
public final class ClipProxyProcess: @unchecked Sendable {
    public let baseURL: String
    /// The admin listener as it printed itself: `unix:PATH` or `HOST:PORT` (`admin.listen`).
    public let adminListener: String
    public let process: Process
    /// The variables given to `init`, to start the same configuration again.
    public let environment: [String: String]
    private let stderrFile: URL

    /// `arguments` follow the executable (`serve`, optionally with `--config FILE`).
    public init(environment extra: [String: String], arguments: [String] = ["serve"], timeout: TimeInterval = 60) throws {
        self.environment = extra
        let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
        var environment = ProcessInfo.processInfo.environment
        environment["CLIPPROXY_HTTP_PORT"] = "0"
        for (k, v) in extra { environment[k] = v }
        process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("clipproxy-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        try process.run()
        // Read stdout on its own thread: a blocking read here could neither time out nor notice an exit.
        let lines = LineCollector()
        Thread { 
            while true {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { lines.close(); return }
                lines.append(chunk)
            }
        }.start()
        // Both listeners print a line once they accept connections, in either order.
        let seen = lines.wait(for: ["clipproxy listening on", "clipproxy admin listening on"], timeout: timeout)
        guard let range = seen.range(of: #"clipproxy listening on http://[0-9.]+:[0-9]+"#, options: .regularExpression),
              let admin = seen.range(of: #"clipproxy admin listening on [^\n]+"#, options: .regularExpression) else {
            let running = process.isRunning
            if running { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            let log = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
            throw TestSetupError("clipproxy serve did not start within \(Int(timeout)) s (still running: \(running), "
                                 + "exit \(process.terminationStatus), reason \(process.terminationReason.rawValue)); stdout: \(seen)\nstderr: \(log.suffix(3000))")
        }
        baseURL = String(seen[range].dropFirst("clipproxy listening on ".count))
        adminListener = String(seen[admin].dropFirst("clipproxy admin listening on ".count))
    }

    /// The admin socket's path (nil when the admin listener is a TCP port).
    public var adminSocket: String? { adminListener.hasPrefix("unix:") ? String(adminListener.dropFirst(5)) : nil }

    /// The base URL that reaches the admin listener (with `adminSocket` as the connection when set).
    public var adminBaseURL: String { adminSocket == nil ? "http://" + adminListener : "http://localhost" }

    /// Waits until `text` appears in the log at least `count` times (fills finish just after their
    /// last byte is sent, so a test that expects an L1 hit next waits for "fill finished").
    @discardableResult
    public func waitForLog(_ text: String, count: Int = 1, timeout: TimeInterval = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if log.components(separatedBy: text).count - 1 >= count { return true }
            usleep(20_000)
        }
        return false
    }

    /// The server's log so far (swift-log lines on stderr).
    public var log: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    /// SIGTERM, then wait (graceful shutdown); returns the exit status.
    @discardableResult
    public func stop() -> Int32 {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: stderrFile)
    }
}

/// Collects a child's stdout and lets a test wait for a line, with a timeout.
private final class LineCollector: @unchecked Sendable {
    private let condition = NSCondition()
    private var text = ""
    private var closed = false

    func append(_ data: Data) {
        condition.lock()
        text += String(decoding: data, as: UTF8.self)
        condition.broadcast()
        condition.unlock()
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Everything read when every marker appeared, the stream closed, or the time ran out.
    func wait(for markers: [String], timeout: TimeInterval) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !markers.allSatisfy(text.contains) && !closed && condition.wait(until: deadline) {}
        return text
    }
}
