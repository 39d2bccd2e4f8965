import Foundation
import Testing
import TestSupport
@testable import Upstream

/// Issue 21, acceptance 3: SIGTERM while 8 cold clips are being cut (S3 + MongoDB mode, moto and
/// the MongoDB wire server) loses nothing. Each response arrives whole, each clip reaches the S3
/// clip bucket, and the process exits by itself with status 0 within the drain bound. The source
/// is read through the fault proxy at a slow, steady rate, so every fill is still reading its
/// source when the signal comes and every upload starts after it. Three rounds, each a new
/// process with 8 new clips: an upload that nothing waits for is lost only when it loses a race
/// with the exit, which one round alone does not always show.
@Suite("Graceful shutdown: SIGTERM during cold fills keeps every upload", .serialized)
struct ShutdownDrainTests {
    static let rounds = 3
    static let clipsPerRound = 8
    /// Different 30 s clips of episode A (a 72 s, 128 kbit/s episode: about 480 kB each), 8 a round.
    static let starts: [Int64] = (0..<(rounds * clipsPerRound)).map { 1_000 + 1_500 * Int64($0) }
    static let clipPrefix = FaultToleranceTests.clipPrefixA
    /// How long shutdown may take: the longest a slow client is waited for at shutdown (30 s,
    /// `CloseAfterWrites` on main), within common grace periods.
    static let drainBound: TimeInterval = 30
    /// Source bytes per second for each read: a 480 kB clip takes about 3 s to cut.
    static let sourceRate = 160_000

    @Test("SIGTERM during 8 cold fills, 3 rounds: every response whole, every clip in the clip bucket, exit 0 within the drain bound")
    func sigtermDuringColdFills() async throws {
        try await withS3Stack("shutdown-drain", proxied: true) { stack in
            let proxy = try #require(stack.proxy)
            try setProxyPlan(proxy, #"{"plan": [], "default": "slow:\#(Self.sourceRate)@/\#(FullStackTests.sourceBucket)/"}"#)
            var server = stack.server
            for round in 1...Self.rounds {
                if round > 1 { server = try ClipProxyProcess(environment: stack.server.environment) }
                defer { server.stop() }
                let starts = Array(Self.starts[((round - 1) * Self.clipsPerRound)..<(round * Self.clipsPerRound)])
                try Self.round(round, server: server, starts: starts, client: stack.client)
            }
        }
    }

    /// One round: 8 cold GETs at once, SIGTERM once each is streaming, then the checks.
    static func round(_ round: Int, server: ClipProxyProcess, starts: [Int64], client: S3Client) throws {
        let expected = try starts.map { try trimmed(ServerTests.sourceKey, startMs: $0) }
        let port = try ServerRangeTableTests.port(of: server.baseURL)
        let received = ReceivedBytes(count: starts.count)
        let clients = ThreadedJobs(starts.enumerated().map { number, start in
            { @Sendable in
                Result { try Self.fetch("/clips/\(ServerTests.episode)/\(start)", port: port, progress: { received.set(number, $0) }) }
            }
        })

        // The signal comes once every response is under way: a head and some of the body each.
        let streaming = Self.waitUntil(timeout: 20) { received.all.allSatisfy { $0 > 64 * 1024 } }
        let atSignal = received.all
        let pid = server.process.processIdentifier
        let signalled = Date()
        kill(pid, SIGTERM)
        let results = clients.wait()
        let exited = Self.waitUntil(timeout: Self.drainBound + 5) { !server.process.isRunning }
        let exitSeconds = Date().timeIntervalSince(signalled)
        if !exited { kill(pid, SIGKILL) }
        server.process.waitUntilExit()

        #expect(streaming, "round \(round): not every response was streaming within 20 s: bytes received per clip \(atSignal)")
        print("shutdown drain, round \(round): SIGTERM when the clients had \(atSignal.map { "\($0 / 1024) KiB" }) of their clips; exit after \(String(format: "%.1f", exitSeconds)) s")
        for (number, result) in results.enumerated() {
            let start = starts[number]
            switch result {
            case .failure(let error):
                Issue.record("round \(round), clip \(start): the response was not whole: \(error)")
            case .success(let response):
                #expect(response.status == 200 && response.header("Content-Length") == String(expected[number].count),
                        "round \(round), clip \(start): \(response.status), Content-Length \(response.header("Content-Length") ?? "-") for \(expected[number].count) bytes")
                #expect(sameBytes(response.body, expected[number]),
                        "round \(round), clip \(start): \(response.body.count) bytes that are not the clip's \(expected[number].count)")
            }
        }
        #expect(exited && exitSeconds <= Self.drainBound,
                "round \(round): clipproxy was still running \(String(format: "%.1f", exitSeconds)) s after SIGTERM (drain bound \(Int(Self.drainBound)) s)")
        #expect(server.process.terminationReason == .exit && server.process.terminationStatus == 0,
                "round \(round): clipproxy ended with \(server.process.terminationReason == .exit ? "exit status" : "signal") \(server.process.terminationStatus)")

        let stored = Set(try client.listObjectsV2(bucket: ClipBucketTests.clipBucket, prefix: Self.clipPrefix).map(\.key))
        let missing = starts.map { "\(Self.clipPrefix)\($0)-\($0 + 30_000).mp3" }.filter { !stored.contains($0) }
        #expect(missing.isEmpty, "round \(round): \(missing.count) of \(starts.count) clips never reached the clip bucket: \(missing)")
    }

    /// A GET with `Connection: close`, read to the end of the connection; `progress` hears the
    /// byte count as it grows. Throws when the body is shorter than its Content-Length.
    static func fetch(_ path: String, port: Int, progress: @escaping (Int) -> Void) throws -> RawHTTPResponse {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        return try RawHTTPClient.parse(RawHTTPClient.exchange(request, host: "127.0.0.1", port: port, timeout: 60, progress: progress), method: "GET")
    }

    /// Polls `condition` every 20 ms until it holds (true) or `timeout` seconds pass (false).
    static func waitUntil(timeout: TimeInterval, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline { return false }
            usleep(20_000)
        }
        return true
    }
}

/// Bytes received so far by each client thread.
final class ReceivedBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [Int]
    init(count: Int) { counts = Array(repeating: 0, count: count) }
    func set(_ index: Int, _ value: Int) { lock.withLock { counts[index] = value } }
    var all: [Int] { lock.withLock { counts } }
}
