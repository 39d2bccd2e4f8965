import Foundation
import Testing
import TestSupport

/// Runs the built `clipproxy` binary and returns (status, stdout, stderr).
func runClipProxy(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
    let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
    let process = Process()
    process.executableURL = binary
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
        for name in ["serve", "trim", "probe", "resolve", "s3", "index", "warm"] {
            #expect(result.stdout.contains("  \(name) "), "missing subcommand \(name)")
        }
        let index = try runClipProxy(["index", "--help"])
        for name in ["stats", "verify", "gc"] { #expect(index.stdout.contains(name)) }
        let s3 = try runClipProxy(["s3", "--help"])
        #expect(s3.stdout.contains("presign"))
    }

    @Test("An unknown subcommand fails with a usage error")
    func unknownSubcommand() throws {
        let result = try runClipProxy(["frobnicate"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("Error"))
    }
}
