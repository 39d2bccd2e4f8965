import Foundation

/// A real server process for a test (moto's S3, the MongoDB wire server), on a free loopback port.
/// The process prints `LISTENING <port>` when ready; until then `start` waits, and if it exits or
/// stays silent, `start` throws with the server's stderr so the failure says why.
public final class TestServer: @unchecked Sendable {
    public let name: String
    public let port: Int
    private let process: Process
    private let stderrFile: URL
    private let lock = NSLock()
    private var stopped = false

    public var host: String { "127.0.0.1" }
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    private init(name: String, port: Int, process: Process, stderrFile: URL) {
        self.name = name
        self.port = port
        self.process = process
        self.stderrFile = stderrFile
    }

    public static func start(name: String, executable: URL, arguments: [String],
                             timeout: TimeInterval = 30) throws -> TestServer {
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw TestSetupError("\(name): \(executable.path) not found; run `make test` (it creates the venv)")
        }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let stdout = Pipe()
        process.standardOutput = stdout
        let stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString).stderr")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        process.standardInput = FileHandle.nullDevice
        try process.run()

        // Read stdout on a thread until the LISTENING line; keep draining afterwards so a chatty
        // server never blocks on a full pipe.
        let found = PortBox()
        let thread = Thread {
            var pending = Data()
            while true {
                let chunk = stdout.fileHandleForReading.availableData
                if chunk.isEmpty { found.finish(nil); return }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    if line.hasPrefix("LISTENING "), let port = Int(line.dropFirst(10).trimmingCharacters(in: .whitespaces)) {
                        found.finish(port)
                    }
                }
            }
        }
        thread.start()
        guard let port = found.wait(timeout: timeout) else {
            process.terminate()
            process.waitUntilExit()
            let log = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(at: stderrFile)
            throw TestSetupError("\(name) did not start within \(Int(timeout)) s (exit status \(process.terminationStatus)). stderr:\n\(log.suffix(4000))")
        }
        return TestServer(name: name, port: port, process: process, stderrFile: stderrFile)
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within two seconds.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(2)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: stderrFile)
    }

    /// Kills the server at once, as a crash would (for failure tests).
    public func kill9() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    public var isRunning: Bool { process.isRunning }

    /// What the server wrote to stderr so far.
    public var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    deinit { stop() }
}

/// One-shot handoff of the port from the reader thread.
private final class PortBox: @unchecked Sendable {
    private let condition = NSCondition()
    private var done = false
    private var port: Int?

    func finish(_ port: Int?) {
        condition.lock()
        defer { condition.unlock() }
        guard !done else { return }
        done = true
        self.port = port
        condition.broadcast()
    }

    func wait(timeout: TimeInterval) -> Int? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(timeout)
        while !done && condition.wait(until: deadline) {}
        return port
    }
}

extension TestServer {
    /// moto's S3 API server.
    public static func s3() throws -> TestServer {
        try start(name: "moto-s3", executable: RepoPaths.python,
                  arguments: [RepoPaths.scripts.appendingPathComponent("s3_test_server.py").path])
    }

    /// The MongoDB wire-protocol test server, serving the JSON-lines files in `dataDirectory`.
    /// With `commandLog`, every command it receives is appended there (one JSON line each); a
    /// `port` other than 0 lets a test bring "the same" server back with other data.
    public static func mongo(dataDirectory: URL, delayMs: Int = 0, commandLog: URL? = nil, port: Int = 0) throws -> TestServer {
        var arguments = [RepoPaths.scripts.appendingPathComponent("mongo_wire_server.py").path, "--dir", dataDirectory.path,
                         "--port", String(port)]
        if delayMs > 0 { arguments += ["--delay-ms", String(delayMs)] }
        if let commandLog { arguments += ["--log-commands", commandLog.path] }
        return try start(name: "mongo-wire", executable: RepoPaths.python, arguments: arguments)
    }
}

/// Runs `body` with a started server and always stops it afterwards, also when `body` throws.
public func withTestServer<T>(_ server: @autoclosure () throws -> TestServer,
                              _ body: (TestServer) async throws -> T) async throws -> T {
    let started = try server()
    defer { started.stop() }
    return try await body(started)
}
