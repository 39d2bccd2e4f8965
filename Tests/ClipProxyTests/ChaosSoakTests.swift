import Foundation
import Testing
import TestSupport

/// The chaos soak of issue 12 in its short form: `scripts/chaos.py` against the debug build, 40 s
/// of faults (S3 resets, 5xx and stalls, MongoDB killed, cache disk full, clipproxy SIGKILLed)
/// and 20 s of eviction pressure. `make chaos` runs the long form. The script checks every body
/// against `clipproxy trim`; these tests read its JSON summary.
@Suite("Chaos soak (scripts/chaos.py)", .serialized)
struct ChaosSoakTests {
    struct Summary: Decodable {
        struct Broken: Decodable {
            let total: Int
            let by_cause: [String: Int]
            let short_body_l1_hit: Int
            let responses: [Response]
        }
        struct Response: Decodable {
            let path: String
            let range: String?
            let status: Int
            let tier: String?
            let cause: String
            let problems: [String]
        }
        struct SourceDied: Decodable { let total: Int }
        struct Cache: Decodable {
            struct Verify: Decodable { let clean: Bool?; let exit: Int; let checked: Int? }
            let partials_left: [String]
            let index_verify: Verify
            let clipproxy_stopped_cleanly: Bool
        }
        struct Crash: Decodable { let exit: Int?; let log_tail: String }
        let requests: Int
        let outcomes: [String: Int]
        let faults: [String: Int]
        let disk_full_fault: String
        let broken: Broken
        let source_died_after_retries: SourceDied
        let corrupt_cache_entries: Int
        let cache: Cache
        let clipproxy_crashes: [Crash]
        let passed: Bool
        let failures: [String]
    }

    /// Runs the script to completion without holding a thread of the cooperative pool.
    static func chaos(_ arguments: [String]) async throws -> (status: Int32, summary: Summary, output: String) {
        let python = try RepoPaths.require(RepoPaths.python, hint: "run `make test` (it creates the venv)")
        _ = try RepoPaths.require(RepoPaths.fixtures.appendingPathComponent("episodes.json"), hint: "run `make fixtures`")
        let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
        let work = try TemporaryDirectory("chaos-test")
        defer { work.remove() }
        let jsonOut = work.url.appendingPathComponent("summary.json")
        let outputFile = work.url.appendingPathComponent("output.txt")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputFile)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = python
        process.arguments = [RepoPaths.scripts.appendingPathComponent("chaos.py").path, "--binary", binary.path,
                             "--json-out", jsonOut.path] + arguments
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        let text = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
        guard let data = try? Data(contentsOf: jsonOut) else {
            throw TestSetupError("chaos.py wrote no summary (exit \(status)):\n\(text.suffix(4000))")
        }
        return (status, try JSONDecoder().decode(Summary.self, from: data), text)
    }

    static func describe(_ broken: [Summary.Response]) -> String {
        broken.prefix(10).map { "\($0.path) range=\($0.range ?? "-") \($0.status) tier=\($0.tier ?? "-") cause=\($0.cause): \($0.problems.joined(separator: "; "))" }
            .joined(separator: "\n")
    }

    @Test("40 s of faults: no response broken after its headers, no corrupt cache entry, index verify clean", .timeLimit(.minutes(5)))
    func soak() async throws {
        let (status, s, output) = try await Self.chaos(["--mode", "soak", "--seconds", "40", "--clients", "6", "--seed", "12"])
        // Not vacuous: clients got answers and faults of every kind were injected.
        #expect(s.requests > 300 && (s.outcomes["ok"] ?? 0) > 200, "too little traffic:\n\(output.suffix(3000))")
        var kinds: Set<String> = ["s3_reset", "s3_5xx", "s3_stall", "mongo_down", "clipproxy_kill"]
        if s.disk_full_fault == "ran" { kinds.insert("disk_full") }
        #expect(kinds.isSubset(of: Set(s.faults.keys)), "faults injected: \(s.faults)")
        #expect(s.broken.total == 0, "broken responses by cause \(s.broken.by_cause):\n\(Self.describe(s.broken.responses))")
        #expect(s.corrupt_cache_entries == 0)
        #expect(s.cache.partials_left.isEmpty, "left behind: \(s.cache.partials_left)")
        #expect(s.cache.index_verify.exit == 0 && s.cache.index_verify.clean == true)
        #expect(s.cache.clipproxy_stopped_cleanly)
        #expect(s.clipproxy_crashes.isEmpty, "clipproxy died on its own: \(s.clipproxy_crashes.map { $0.log_tail.suffix(800) })")
        #expect(status == 0 && s.passed, "chaos.py: \(s.failures)\n\(output.suffix(3000))")
    }

    @Test("20 s of eviction pressure (8 MB budget, 16 clients, 30% Range): every body whole and exact", .timeLimit(.minutes(3)))
    func evictionPressure() async throws {
        let (status, s, output) = try await Self.chaos(["--mode", "eviction", "--seconds", "20", "--clients", "16", "--seed", "7"])
        #expect(s.requests > 1000, "too little traffic:\n\(output.suffix(3000))")
        #expect(s.broken.total == 0, "broken responses (l1_hit with a short body: \(s.broken.short_body_l1_hit)):\n\(Self.describe(s.broken.responses))")
        #expect(s.corrupt_cache_entries == 0)
        #expect(s.cache.index_verify.exit == 0 && s.cache.index_verify.clean == true)
        #expect(status == 0 && s.passed, "chaos.py: \(s.failures)\n\(output.suffix(3000))")
    }
}
