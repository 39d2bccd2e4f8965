import Foundation

/// `clipproxy serve` as a real process on a free port, configured through its environment.
public final class ClipProxyProcess: @unchecked Sendable {
    public let baseURL: String
    public let process: Process
    private let stderrFile: URL

    public init(environment extra: [String: String], timeout: TimeInterval = 30) throws {
        let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
        var environment = ProcessInfo.processInfo.environment
        environment["CLIPPROXY_HTTP_PORT"] = "0"
        for (k, v) in extra { environment[k] = v }
        process = Process()
        process.executableURL = binary
        process.arguments = ["serve"]
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("clipproxy-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        try process.run()
        var seen = ""
        let deadline = Date().addingTimeInterval(timeout)
        while !seen.contains("listening on") && Date() < deadline && process.isRunning {
            seen += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        }
        guard let range = seen.range(of: #"http://[0-9.]+:[0-9]+"#, options: .regularExpression) else {
            process.terminate()
            let log = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
            throw TestSetupError("clipproxy serve did not start: \(seen)\n\(log.suffix(3000))")
        }
        baseURL = String(seen[range])
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
