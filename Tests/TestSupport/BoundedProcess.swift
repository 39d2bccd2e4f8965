import Foundation

/// A child process with a time limit: past it, the child and everything it started is killed.
public enum BoundedProcess {
    /// Runs `executable` to its end, or kills its process group after `limit` seconds (status -1).
    /// Output goes through files, so a chatty child can never block on a full pipe.
    public static func run(_ executable: String, _ arguments: [String], limit: TimeInterval) throws -> (status: Int32, stdout: Data, stderr: String) {
        let work = try TemporaryDirectory("bounded-process")
        defer { work.remove() }
        let outURL = work.url.appendingPathComponent("stdout"), errURL = work.url.appendingPathComponent("stderr")
        for url in [outURL, errURL] { _ = FileManager.default.createFile(atPath: url.path, contents: nil) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        try process.run()
        let deadline = Date().addingTimeInterval(limit)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        let overran = process.isRunning
        if overran {
            // Foundation makes the child the leader of its own process group: this reaches its children too.
            kill(-process.processIdentifier, SIGKILL)
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        var stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        if overran { stderr += "\n(killed after \(Int(limit)) s)" }
        return (overran ? -1 : process.terminationStatus, (try? Data(contentsOf: outURL)) ?? Data(), stderr)
    }
}
