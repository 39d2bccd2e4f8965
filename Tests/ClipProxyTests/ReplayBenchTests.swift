import Foundation
import Testing
import TestSupport

/// The replay bench of issue 23 (bench/replay.py) in miniature, as a test of the replay code itself:
/// a two-episode corpus, a trace of 300 plays, set-up (a) (one node on moto and the MongoDB wire
/// server) against the debug build. `make replay` runs the real thing; here only the harness is
/// checked: it replays, it checks every response (and some byte for byte), it writes the JSON the
/// issue names.
@Suite("Replay bench (bench/replay.py)", .serialized)
struct ReplayBenchTests {
    struct Output: Decodable {
        struct Setup: Decodable {
            let plays: Int
            let requests: Int
            let broken: Int
            let broken_reasons: [String: Int]
            let hit_ratio: [String: Double?]
            let requests_by_tier: [String: Int]
            let s3_requests_per_1k_plays: [String: Double]
            let s3_bytes_per_1k_plays: Double
            let cpu_s_per_1k_plays: Double
            let ttfb_ms: [String: [String: Double]]
            let responses_checked_whole: Int
            let responses_checked_bytes: Int
            let clip_bucket_growth: [String: Int]
            let cpu_s_by_process: [String: Double]
        }
        let setups: [String: Setup]
    }

    static func python(_ arguments: [String], limit: TimeInterval) throws -> String {
        let python = try RepoPaths.require(RepoPaths.python, hint: "run `make test` (it creates the venv)")
        let result = try BoundedProcess.run(python.path, arguments, limit: limit)
        let output = String(decoding: result.stdout, as: UTF8.self) + result.stderr
        guard result.status == 0 else {
            throw TestSetupError("\(arguments.first ?? "") exited \(result.status):\n\(output.suffix(4000))")
        }
        return output
    }

    @Test("300 plays on one node: every response whole, sampled bytes exact, the issue's fields present", .timeLimit(.minutes(2)))
    func smallReplay() throws {
        let work = try TemporaryDirectory("replay-bench")
        defer { work.remove() }
        let bench = RepoPaths.root.appendingPathComponent("bench")
        let corpus = work.path + "/corpus", trace = work.path + "/trace.jsonl", json = work.path + "/replay.json"
        _ = try Self.python([bench.appendingPathComponent("make_replay_corpus.py").path, "--episodes", "2",
                             "--min-minutes", "20", "--max-minutes", "20", "--out", corpus], limit: 60)
        _ = try Self.python([bench.appendingPathComponent("workload.py").path, "--episodes", corpus + "/episodes.json",
                             "--plays", "300", "--out", trace], limit: 30)
        // A day in about 15 s; a 2 MiB budget, so the run evicts and reads the clip bucket back.
        let output = try Self.python([bench.appendingPathComponent("replay.py").path, "--clipproxy", RepoPaths.clipproxyBinary.path,
                                      "--trace", trace, "--episodes", corpus + "/episodes.json", "--setups", "a",
                                      "--speed", "5760", "--budget-mb", "2", "--workers", "8", "--sample-every", "4",
                                      "--sample", "12", "--work", work.path + "/run", "--json-out", json], limit: 90)
        let result = try JSONDecoder().decode(Output.self, from: Data(contentsOf: URL(fileURLWithPath: json)))
        let a = try #require(result.setups["a"], "no set-up a in the JSON:\n\(output.suffix(2000))")
        #expect(a.plays == 300 && a.requests > a.plays)
        #expect(a.broken == 0, "broken responses: \(a.broken_reasons)")
        #expect(a.responses_checked_whole == a.requests)
        #expect(a.responses_checked_bytes > 0, "no response was compared with clipproxy trim")
        // Tiers: the first play of a clip is a fill, repeats are local hits; all were counted.
        #expect((a.requests_by_tier["fill"] ?? 0) > 0 && (a.requests_by_tier["local"] ?? 0) > 0)
        #expect(a.requests_by_tier.values.reduce(0, +) == a.requests)
        for field in ["local", "clip_bucket", "fill", "part", "cdn"] { #expect(a.hit_ratio.keys.contains(field)) }
        #expect(Set(a.s3_requests_per_1k_plays.keys) == ["GET", "PUT", "LIST", "HEAD"])
        // Every fill reads the source and uploads the clip: S3 GETs, PUTs and bytes are not zero.
        #expect((a.s3_requests_per_1k_plays["GET"] ?? 0) > 0 && (a.s3_requests_per_1k_plays["PUT"] ?? 0) > 0)
        #expect(a.s3_bytes_per_1k_plays > 0 && a.cpu_s_per_1k_plays > 0)
        #expect((a.clip_bucket_growth["objects"] ?? 0) > 0)
        #expect(a.ttfb_ms["fill"]?["p99"] != nil && a.ttfb_ms["local"]?["p50"] != nil)
        // Where the run's CPU went, per process (bench/README.md, "Replay").
        #expect(Set(a.cpu_s_by_process.keys) == ["clipproxy", "nginx", "moto", "counting_proxy", "mongodb_server", "replay_client"])
        #expect((a.cpu_s_by_process["moto"] ?? 0) > 0 && (a.cpu_s_by_process["counting_proxy"] ?? 0) > 0)
    }

    /// The S3 test server answers ListObjectsV2 with code of its own (the replay's nodes list the
    /// clip bucket all day); scripts/check_s3_test_server.py compares it with moto's own answers.
    @Test("the S3 test server's listings are moto's, byte for byte", .timeLimit(.minutes(2)))
    func listingsAsMotoAnswers() throws {
        let output = try Self.python([RepoPaths.scripts.appendingPathComponent("check_s3_test_server.py").path], limit: 100)
        #expect(output.contains("listings answered byte for byte as moto answers them"), "\(output.suffix(2000))")
    }
}
