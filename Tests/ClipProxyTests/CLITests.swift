import Foundation
import Testing
import TestSupport
import Index

/// Runs the built `clipproxy` binary and returns (status, stdout, stderr).
func runClipProxy(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
    let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
    return try runProcess(binary.path, arguments, environment: environment)
}

/// Runs `executable` with `arguments` to its end; its exit status and output.
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

@Suite("clipproxy command line")
struct CLITests {
    @Test("--help lists every subcommand of the design")
    func helpListsSubcommands() throws {
        let result = try runClipProxy(["--help"])
        #expect(result.status == 0)
        for name in ["serve", "trim", "probe", "resolve", "s3", "index", "warm", "sign"] {
            #expect(result.stdout.contains("  \(name) "), "missing subcommand \(name)")
        }
        let index = try runClipProxy(["index", "--help"])
        for name in ["stats", "verify", "gc"] { #expect(index.stdout.contains(name)) }
        let s3 = try runClipProxy(["s3", "--help"])
        #expect(s3.stdout.contains("presign"))
    }

    @Test("warm asks the running server for each clip: afterwards they are local hits; a bad start is reported and fails the run")
    func warm() throws {
        let work = try TemporaryDirectory("warm")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let environment = ProcessInfo.processInfo.environment.merging(EmbeddedServer(work: work).environment) { $1 }
        let good = try runClipProxy(["warm", ServerTests.episode, "1000", "31000", "--server", server.baseURL], environment: environment)
        #expect(good.status == 0, "\(good.stdout) \(good.stderr)")
        #expect(good.stdout.components(separatedBy: "fill").count - 1 == 2, "\(good.stdout)")
        #expect(server.waitForLog("fill finished", count: 2))
        for start in [1000, 31000] {
            #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/\(start)").headers["x-clip-tier"] == "l1_hit")
        }
        let bad = try runClipProxy(["warm", ServerTests.episode, "999999999", "1000", "--server", server.baseURL], environment: environment)
        #expect(bad.status != 0 && bad.stdout.contains("HTTP 422") && bad.stderr.contains("1 of 2"), "\(bad.stdout) \(bad.stderr)")
        let down = try runClipProxy(["warm", ServerTests.episode, "0", "--server", "http://127.0.0.1:1"], environment: environment)
        #expect(down.status != 0 && down.stdout.contains("is `clipproxy serve` running"), "\(down.stdout)")
    }

    @Test("An unknown subcommand fails with a usage error")
    func unknownSubcommand() throws {
        let result = try runClipProxy(["frobnicate"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("Error"))
    }
}

@Suite("clipproxy index stats|verify|gc")
struct IndexCLITests {
    @Test("verify exits 1 and names a clip whose bytes changed; gc reconciles; stats counts")
    func verifyAndGC() throws {
        let dir = try TemporaryDirectory("index-cli")
        defer { dir.remove() }
        var keys: [String] = []
        do {
            let store = try ClipStore(.init(directory: dir.path, maxBytes: 1 << 30))
            for i in 0..<3 {
                let fill = try store.beginFill(ClipKey(identity: "clip\(i)"))
                try fill.write([UInt8](repeating: UInt8(i), count: 10_000))
                try store.commit(fill)
                keys.append(ClipKey(identity: "clip\(i)").hex)
            }
        }
        let environment = ["CLIPPROXY_CACHE_DIR": dir.path]
        var result = try runClipProxy(["index", "verify"], environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"clean\" : true"))

        let victim = "\(dir.path)/blobs/\(keys[1].prefix(2))/\(keys[1].dropFirst(2).prefix(2))/\(keys[1])"
        var data = try Data(contentsOf: URL(fileURLWithPath: victim))
        data[5] ^= 0x80
        try data.write(to: URL(fileURLWithPath: victim))
        result = try runClipProxy(["index", "verify"], environment: environment)
        #expect(result.status == 1)
        #expect(result.stdout.contains(keys[1]))

        try Data([1]).write(to: URL(fileURLWithPath: "\(dir.path)/tmp/leftover.partial"))
        result = try runClipProxy(["index", "gc"], environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("\"temporary_files_removed\" : 1"))
        result = try runClipProxy(["index", "stats"], environment: environment)
        #expect(result.stdout.contains("\"clips\" : 3"))
    }

    @Test("A bad configuration stops the command with a message naming the key")
    func badConfiguration() throws {
        let result = try runClipProxy(["index", "stats"], environment: ["CLIPPROXY_CACHE_MAX_BYTES": "lots"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("cache.max_bytes"))
    }
}
