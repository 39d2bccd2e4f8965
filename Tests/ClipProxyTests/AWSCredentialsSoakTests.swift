import Foundation
import Synchronization
import Testing
import TestSupport
@testable import Upstream

/// Issue 26's numbers as they are: `clipproxy serve` on instance-role credentials that expire
/// every 60 s, under five minutes of cold and stored clips, moto checking every signature. A suite
/// of its own so it starts with the rest, not behind `AWSCredentialsServeTests`' serialized tests;
/// `make test` runs it in a process of its own beside the other suites (it waits synchronously).
@Suite("Serving through five minutes of 60-second credentials")
struct AWSCredentialsSoakTests {
    @Test("Instance-role credentials expiring every 60 s under 5 minutes of cold and stored clips: no failed or broken response, renewals ahead of expiry")
    func renewalsUnderLoad() async throws {
        let lifetime = 60
        let load: TimeInterval = 300
        let work = try TemporaryDirectory("instance-role-load")
        defer { work.remove() }
        let moto = try AuthenticatingS3.start()
        defer { moto.server.stop() }
        _ = try AWSCredentialsServeTests.seed(moto)
        let imds = try moto.credentialsServer(duration: lifetime)
        defer { imds.stop() }
        try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
            let server = try ClipProxyProcess(environment: AWSCredentialsServeTests.environment(moto: moto, mongo: mongo, work: work, imds: imds))
            defer { server.stop() }
            let base = "\(server.baseURL)/clips/\(ServerTests.episode)/"
            let deadline = Date().addingTimeInterval(load)
            let outcomes = Mutex<(responses: Int, tiers: [String: Int], bad: [String])>((0, [:], []))
            // Two clients, each asking every half second (4 clips a second, half of them cold): a
            // steady load through five credential lifetimes, paced so that it leaves the CPU to the
            // suites `make test` runs beside it.
            let began = Date()
            DispatchQueue.concurrentPerform(iterations: 2) { worker in
                var round = 0
                while Date() < deadline {
                    round += 1
                    Thread.sleep(until: began.addingTimeInterval(Double(round) * 0.5 + Double(worker) * 0.25))
                    // Odd rounds: a window never asked before (cold); even rounds: one asked before (stored).
                    let index = round % 2 == 1 ? round * 2 + worker : max(0, round * 2 - 6 + worker)
                    let url = base + "\((index % 168) * 250)?duration_ms=\(10_000 + (index / 168 % 20) * 1000)"
                    let answer = try? fetch(url)
                    let length = answer?.headers["content-length"].flatMap { Int($0) }
                    outcomes.withLock { tally in
                        tally.responses += 1
                        tally.tiers[answer?.headers["x-clip-tier"] ?? "none", default: 0] += 1
                        if answer?.status != 200 || length != answer?.body.count || (answer?.body.count ?? 0) < 10_000 {
                            tally.bad.append("\(url): \(answer?.status ?? 0), \(answer?.body.count ?? -1) of \(length ?? -1) bytes")
                        }
                    }
                }
            }
            let tally = outcomes.withLock { $0 }
            print("credentials soak: \(tally.responses) responses in \(Int(Date().timeIntervalSince(began))) s, tiers \(tally.tiers)")
            #expect(tally.bad.isEmpty, "\(tally.bad.count) failed or broken of \(tally.responses), first: \(tally.bad.first ?? "")")
            #expect((tally.tiers["fill"] ?? 0) >= 100 && (tally.tiers["l1_hit"] ?? 0) >= 100, "cold and stored clips: \(tally.tiers)")
            let log = server.log
            let renewals = log.split(separator: "\n").filter { $0.contains("aws credentials refreshed") }
            #expect(renewals.count >= Int(load) / (lifetime / 2) - 1, "\(renewals.count) renewals")
            #expect(renewals.allSatisfy { $0.contains("aws.credentials.reason=background") }, "every renewal ahead of expiry, in the background")
            #expect(!log.contains("s3 credentials rejected"), "S3 never saw expired credentials")
            #expect(!log.contains("aws credentials refresh failed"))
        }
    }
}
