import Foundation
import Testing
import TestSupport
@testable import Upstream

/// A curl run in the background: status line and body written to files, for requests that must
/// be in flight while the test does something else.
final class BackgroundCurl: @unchecked Sendable {
    let process = Process()
    let output: String
    let meta = Pipe()

    init(_ url: String, output: String, maxTime: Int = 60) throws {
        self.output = output
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["--silent", "--max-time", String(maxTime), "-o", output, "-w", "%{http_code}", url]
        process.standardOutput = meta
        try process.run()
    }

    /// Waits for curl to end; returns the HTTP status it saw and the body.
    func finish() -> (status: Int, body: [UInt8]) {
        process.waitUntilExit()
        let status = Int(String(decoding: meta.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)) ?? 0
        return (status, (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: output)))) ?? [])
    }
}

@Suite("Limits: fill slots and their queue, request size limits, idle timeouts, readiness")
struct LimitsTests {
    @Test("One fill slot and a queue of one: a second cold clip waits its turn, a third is refused with 503 + Retry-After")
    func fillQueue() async throws {
        let limits = ["CLIPPROXY_LIMITS_MAX_FILLS": "1", "CLIPPROXY_LIMITS_FILL_QUEUE": "1", "CLIPPROXY_LIMITS_FILL_QUEUE_WAIT_MS": "60000"]
        try await withProxiedStack("fill-queue", environment: limits) { server, proxy, _, work in
            // Index the episode while S3 behaves.
            #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/0").status == 200)
            #expect(server.waitForLog("fill finished"))
            // The next source read stalls after 100 kB (only a source request takes the stall: the
            // previous clip's upload to the clip bucket may still be under way), so its fill holds
            // the only slot for a while.
            try setProxyPlan(proxy, #"{"plan": ["stall:100000@/\#(FullStackTests.sourceBucket)/"], "default": "pass"}"#)
            let first = try BackgroundCurl("\(server.baseURL)/clips/\(ServerTests.episode)/20000", output: work.path + "/first.mp3")
            #expect(server.waitForLog("fill started", count: 2))
            let second = try BackgroundCurl("\(server.baseURL)/clips/\(ServerTests.episode)/40000", output: work.path + "/second.mp3")
            usleep(500_000)  // the second request is now waiting in the queue
            let refused = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/60000")
            #expect(refused.status == 503, "\(String(decoding: refused.body, as: UTF8.self))")
            #expect(refused.headers["retry-after"] == "1")
            #expect(jsonObject(refused.body)["error"] as? String == "overloaded")
            // A request for the clip being cut joins it and needs no slot.
            let joined = try BackgroundCurl("\(server.baseURL)/clips/\(ServerTests.episode)/20000", output: work.path + "/joined.mp3")

            let firstResult = first.finish(), secondResult = second.finish(), joinedResult = joined.finish()
            let expectedFirst = try trimmed(ServerTests.sourceKey, startMs: 20_000)
            let expectedSecond = try trimmed(ServerTests.sourceKey, startMs: 40_000)
            #expect(firstResult.status == 200 && sameBytes(firstResult.body, expectedFirst))
            #expect(joinedResult.status == 200 && sameBytes(joinedResult.body, firstResult.body))
            #expect(secondResult.status == 200 && sameBytes(secondResult.body, expectedSecond),
                    "the queued clip was cut once the slot was free")
            #expect(server.log.components(separatedBy: "fill started").count - 1 == 3, "0, 20000 and 40000; never 60000")
            let metrics = String(decoding: try fetch("\(server.baseURL)/metrics").body, as: UTF8.self)
            #expect(metrics.contains("clipproxy_fills_refused_total 1"), "\(metrics)")
        }
    }

    @Test("No queue and no wait: a cold clip beyond the slots is refused at once")
    func noQueue() async throws {
        let limits = ["CLIPPROXY_LIMITS_MAX_FILLS": "1", "CLIPPROXY_LIMITS_FILL_QUEUE": "0"]
        try await withProxiedStack("no-queue", environment: limits) { server, proxy, _, work in
            #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/0").status == 200)
            #expect(server.waitForLog("fill finished"))
            try setProxyPlan(proxy, #"{"plan": ["stall:100000@/\#(FullStackTests.sourceBucket)/"], "default": "pass"}"#)
            let first = try BackgroundCurl("\(server.baseURL)/clips/\(ServerTests.episode)/20000", output: work.path + "/first.mp3")
            #expect(server.waitForLog("fill started", count: 2))
            let started = Date()
            let refused = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/40000")
            #expect(refused.status == 503 && refused.headers["retry-after"] != nil)
            #expect(Date().timeIntervalSince(started) < 2, "refused without waiting")
            #expect(first.finish().status == 200)
            // The client can have every byte a moment before the fill gives its slot back (it is
            // logged as finished after that): wait for the slot, not for the client.
            #expect(server.waitForLog("fill finished", count: 2))
            #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/40000").status == 200, "served once a slot is free")
        }
    }

    @Test("Oversized request targets get 414, oversized headers 431 (JSON); idle connections are closed")
    func requestLimits() throws {
        let work = try TemporaryDirectory("limits")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_HTTP_IDLE_TIMEOUT_S"] = "1"
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let port = Int(server.baseURL.split(separator: ":").last!)!
        let clip = "/clips/\(ServerTests.episode)/0"

        let long = try RawHTTPClient.send(method: "GET", path: clip + "?pad=" + String(repeating: "a", count: 5000), port: port)
        #expect(long.status == 414 && long.header("Content-Type") == "application/json")
        let big = try RawHTTPClient.send(method: "GET", path: clip, headers: [("X-Padding", String(repeating: "b", count: 20_000))], port: port)
        #expect(big.status == 431 && String(decoding: big.body, as: UTF8.self).contains("headers_too_large"))
        let ok = try RawHTTPClient.send(method: "GET", path: clip, headers: [("X-Padding", String(repeating: "b", count: 1000))], port: port)
        #expect(ok.status == 200)
        // Far beyond the decoder's own limit: the connection is refused rather than buffered.
        let huge = try? RawHTTPClient.send(method: "GET", path: clip, headers: [("X-Padding", String(repeating: "c", count: 200_000))], port: port)
        #expect(huge == nil || huge!.status >= 400)
        #expect(try fetch(server.baseURL + "/healthz").status == 200, "still serving")

        // Unrouted requests: JSON errors, 405 with Allow for a known path.
        let trace = try RawHTTPClient.send(method: "DELETE", path: clip, port: port)
        #expect(trace.status == 405 && trace.header("Allow") == "GET, HEAD, OPTIONS" && trace.header("Content-Type") == "application/json")
        let post = try RawHTTPClient.send(method: "POST", path: "/api/v1/audio_clips/\(ServerTests.episode)?start_time_ms=0", port: port)
        #expect(post.status == 405 && post.header("Allow") == "GET")
        let nowhere = try RawHTTPClient.send(method: "GET", path: "/nowhere/at/all", port: port)
        #expect(nowhere.status == 404 && String(decoding: nowhere.body, as: UTF8.self).contains("no_such_endpoint"))

        // A connection that sends nothing is closed after http.idle_timeout_s.
        let started = Date()
        let silent = try RawHTTPClient.exchange([], host: "127.0.0.1", port: port, timeout: 10)
        #expect(silent.isEmpty)
        #expect(Date().timeIntervalSince(started) < 5, "closed after about 1 s, not at the client's 10 s timeout")
    }

    @Test("/readyz checks the index, the catalog and both buckets: a dead MongoDB or S3 makes it 503, naming what failed")
    func readiness() async throws {
        let work = try TemporaryDirectory("readyz")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            let mongo = try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))
            defer { mongo.stop() }
            _ = try FullStackTests.seedBucket(s3)
            _ = try ClipBucketTests().clipBucketClient(s3).createBucket(ClipBucketTests.clipBucket)
            var environment = FullStackTests.environment(s3: s3, mongo: mongo, work: work)
            environment["CLIPPROXY_MONGO_URI"] = "mongodb://127.0.0.1:\(mongo.port)/?retryReads=false&serverSelectionTimeoutMS=1000"
            let server = try ClipProxyProcess(environment: environment)
            defer { server.stop() }
            let ready = try fetch(server.baseURL + "/readyz")
            #expect(ready.status == 200, "\(String(decoding: ready.body, as: UTF8.self))")
            #expect((jsonObject(ready.body)["checked"] as? String) == "index,catalog,source_bucket,clip_bucket")

            mongo.stop()
            var failing: (status: Int, headers: [String: String], body: [UInt8])?
            for _ in 0..<40 {
                let probe = try fetch(server.baseURL + "/readyz")
                if probe.status == 503 { failing = probe; break }
                usleep(250_000)
            }
            let detail = failing.map { jsonObject($0.body)["detail"] as? String ?? "" } ?? ""
            #expect(failing?.status == 503 && detail.contains("catalog"), "\(detail)")
            #expect(!detail.contains("source_bucket"), "S3 is still fine: \(detail)")
            #expect(try fetch(server.baseURL + "/healthz").status == 200, "alive, just not ready")
        }
    }

    @Test("/readyz in the embedded default: index, catalog files, source and clip directories")
    func embeddedReadiness() throws {
        let work = try TemporaryDirectory("readyz-embedded")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        let server = try ClipProxyProcess(environment: environment)
        let ready = try fetch(server.baseURL + "/readyz")
        #expect(ready.status == 200 && (jsonObject(ready.body)["checked"] as? String) == "index,catalog,source_dir,second_tier_dir")
        server.stop()
        environment["CLIPPROXY_SOURCE_DIR"] = work.path + "/missing"
        let broken = try ClipProxyProcess(environment: environment)
        defer { broken.stop() }
        let probe = try fetch(broken.baseURL + "/readyz")
        #expect(probe.status == 503 && (jsonObject(probe.body)["detail"] as? String ?? "").contains("source_dir"))
    }
}

@Suite("Readiness: deadlines and overlapping probes")
struct ReadinessDeadlineTests {
    @Test("A catalog that accepts connections but never answers: /readyz says so at its deadline, for probes at once too")
    func hungCatalog() throws {
        // A listening socket that never accepts: libmongoc connects, then waits for a reply.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        #expect(listen(listener, 16) == 0)
        let port = Int(UInt16(bigEndian: address.sin_port))

        let work = try TemporaryDirectory("readyz-hung")
        defer { work.remove() }
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_CATALOG_KIND"] = "mongo"
        environment["CLIPPROXY_MONGO_URI"] = "mongodb://127.0.0.1:\(port)/?serverSelectionTimeoutMS=9000&connectTimeoutMS=9000&socketTimeoutMS=9000"
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let started = Date()
        let probes = try (0..<2).map { try BackgroundCurl(server.baseURL + "/readyz", output: work.path + "/probe\($0).json", maxTime: 20) }
        for probe in probes {
            let result = probe.finish()
            let detail = jsonObject(result.body)["detail"] as? String ?? ""
            #expect(result.status == 503 && detail.contains("catalog: no answer within"), "\(result.status) \(detail)")
            #expect(!detail.contains("index") && !detail.contains("source_dir"), "only the catalog is not ready: \(detail)")
        }
        #expect(Date().timeIntervalSince(started) < 6, "answered at the 2 s deadline, not after the catalog's 9 s")
    }
}
