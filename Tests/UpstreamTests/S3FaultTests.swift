import Foundation
import Testing
import TestSupport
@testable import Upstream

/// The client through scripts/fault_proxy.py in front of moto: injected 5xx, connection resets
/// and stalls mid-body. Objects are written straight to moto, then read through the proxy.
@Suite("S3 client: retries and resumed reads through a fault-injecting proxy")
struct S3FaultTests {
    static let bucket = "faults"

    /// moto holding `object` at `key`, and the fault proxy in front of it.
    static func withProxy(object: [UInt8], key: String = "episode.mp3", plan: [String], defaultMode: String = "pass",
                          _ body: (_ moto: TestServer, _ proxy: TestServer) async throws -> Void) async throws {
        try await withTestServer(try TestServer.s3()) { moto in
            let direct = try S3Test.client(moto)
            try direct.createBucket(bucket)
            try direct.putObject(bucket: bucket, key: key, body: object)
            try await withTestServer(try TestServer.faultProxy(target: moto, plan: plan, defaultMode: defaultMode)) { proxy in
                try await body(moto, proxy)
            }
        }
    }

    static func setPlan(_ proxy: TestServer, _ plan: [String], defaultMode: String = "pass") throws {
        let body = try JSONSerialization.data(withJSONObject: ["plan": plan, "default": defaultMode])
        let head = try CurlTransfer().perform(HTTPRequest(method: "POST", url: proxy.endpoint + "/__proxy/plan",
                                                          headers: [("Content-Type", "application/json")], body: Array(body))) { _ in true }
        guard head.status == 200 else { throw TestSetupError("setting the proxy plan: HTTP \(head.status)") }
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    @Test("503 ServiceUnavailable, SlowDown and 500 are retried until the request succeeds")
    func serverErrorsRetried() async throws {
        let object = S3Test.payload(100_000, seed: 11)
        try await Self.withProxy(object: object, plan: ["503", "slowdown", "pass"]) { moto, proxy in
            let log = LogCapture()
            let client = try S3Test.client(proxy, log: log)
            var read = S3Test.Read()
            try S3Test.read(client, Self.bucket, "episode.mp3", into: &read)
            #expect(sameBytes(read.bytes, object))
            #expect(read.heads.count == 1)
            let retries = log.all.filter { $0.message == "s3 request retrying" }
            #expect(retries.map { $0.metadata["s3.code"] } == ["ServiceUnavailable", "SlowDown"])
            #expect(retries.map { $0.metadata["s3.status"] } == ["503", "503"])
            #expect(try S3Test.proxyLog(proxy).map(\.mode) == ["503", "slowdown", "pass"])

            try Self.setPlan(proxy, ["500", "pass"])
            #expect(try client.headObject(bucket: Self.bucket, key: "episode.mp3").size == 100_000)

            try Self.setPlan(proxy, ["slowdown", "slowdown", "pass"])
            let replacement = S3Test.payload(5000, seed: 12)
            try client.putObject(bucket: Self.bucket, key: "put-through-faults", body: replacement)
            #expect(try S3Test.client(moto).headObject(bucket: Self.bucket, key: "put-through-faults").etag == S3Test.quotedMD5(replacement))

            // A file upload retried after the connection closed unanswered: the file is read again from the start.
            try Self.setPlan(proxy, ["close", "500", "pass"])
            let directory = try TemporaryDirectory("s3-fault-put")
            defer { directory.remove() }
            let fileBytes = S3Test.payload(800_000, seed: 13)
            let path = directory.url.appendingPathComponent("upload.mp3").path
            #expect(FileManager.default.createFile(atPath: path, contents: Data(fileBytes)))
            #expect(try client.putObject(bucket: Self.bucket, key: "file-through-faults", fileAt: path).etag == S3Test.quotedMD5(fileBytes))
            #expect(try S3Test.proxyLog(proxy).suffix(3).map(\.mode) == ["close", "500", "pass"])

            try Self.setPlan(proxy, ["503", "pass"])
            #expect(try client.listObjectsV2(bucket: Self.bucket).count == 3)
            #expect(log.count("s3 request retrying") == 2 + 1 + 2 + 2 + 1)
            #expect(log.count("s3 request failed") == 0)
        }
    }

    @Test("A reset mid-body resumes at offset+N with If-Match; every byte reaches the consumer exactly once")
    func resetResumes() async throws {
        let size = 1_000_000
        let object = S3Test.payload(size, seed: 21)
        let etag = S3Test.quotedMD5(object)
        try await Self.withProxy(object: object, plan: ["reset:300000", "reset:250000", "pass"]) { _, proxy in
            let log = LogCapture()
            let client = try S3Test.client(proxy, log: log)
            var read = S3Test.Read()
            let response = try S3Test.read(client, Self.bucket, "episode.mp3", into: &read)
            #expect(response.status == 200 && response.contentLength == Int64(size))
            #expect(read.heads.count == 1, "onHead once, although three responses arrived")
            #expect(read.bytes.count == size, "\(read.bytes.count) bytes delivered for a \(size)-byte object: none twice")
            #expect(sameBytes(read.bytes, object))
            let requests = try S3Test.proxyLog(proxy)
            #expect(requests.map(\.range) == [nil, "bytes=300000-999999", "bytes=550000-999999"])
            #expect(requests.map(\.ifMatch) == [nil, etag, etag])
            #expect(log.all.filter { $0.message == "s3 get resuming" }.map { $0.metadata["s3.offset"] } == ["300000", "550000"])

            // A ranged read resumes inside its range.
            try Self.setPlan(proxy, ["reset:100000", "pass"])
            read = S3Test.Read()
            let ranged = try S3Test.read(client, Self.bucket, "episode.mp3", range: S3ByteRange(200_000...699_999), into: &read)
            #expect(ranged.status == 206 && ranged.range == 200_000...699_999)
            #expect(read.bytes.count == 500_000)
            #expect(sameBytes(read.bytes, object[200_000...699_999]))
            #expect(try S3Test.proxyLog(proxy).suffix(2).map(\.range) == ["bytes=200000-699999", "bytes=300000-699999"])

            // Reset right after the response head: the consumer had nothing yet (onHead waits for
            // the first body byte), so the retry is simply the original request.
            try Self.setPlan(proxy, ["reset:0", "pass"])
            read = S3Test.Read()
            try S3Test.read(client, Self.bucket, "episode.mp3", into: &read)
            #expect(read.heads.count == 1 && sameBytes(read.bytes, object))
            let lastTwo = try S3Test.proxyLog(proxy).suffix(2)
            #expect(lastTwo.map(\.mode) == ["reset:0", "pass"])
            #expect(lastTwo.map(\.range) == [nil, nil])
        }
    }

    @Test("If the object changes between attempts, the read fails with objectChanged, never mixing versions")
    func objectChangedDuringResume() async throws {
        let original = S3Test.payload(600_000, seed: 31)
        let replacement = S3Test.payload(600_000, seed: 32)
        try await Self.withProxy(object: original, plan: ["reset:200000", "pass"]) { moto, proxy in
            let client = try S3Test.client(proxy)
            let direct = try S3Test.client(moto)
            var received: [UInt8] = []
            var replaced = false
            let error = #expect(throws: S3Error.self) {
                try client.getObject(bucket: Self.bucket, key: "episode.mp3") { chunk in
                    if !replaced {  // a writer replaces the object while the first response is in flight
                        try direct.putObject(bucket: Self.bucket, key: "episode.mp3", body: replacement)
                        replaced = true
                    }
                    received.append(contentsOf: chunk)
                }
            }
            #expect(error?.kind == .objectChanged, "\(String(describing: error))")
            #expect(error?.isRetryable == false)
            #expect(received.count == 200_000)
            #expect(sameBytes(received, original.prefix(200_000)), "only bytes of the first version were delivered")
            let requests = try S3Test.proxyLog(proxy)
            #expect(requests.count == 2, "no attempt after the change was seen")
            #expect(requests.last?.ifMatch == S3Test.quotedMD5(original))
        }
    }

    @Test("A stalled body trips the low-speed timeout (1 s) and the read resumes within the bound")
    func stallResumes() async throws {
        let object = S3Test.payload(400_000, seed: 41)
        try await Self.withProxy(object: object, plan: ["stall:150000", "pass"]) { _, proxy in
            let client = try S3Test.client(proxy, timeouts: TransferTimeouts(connect: .seconds(2), lowSpeedBytes: 1, lowSpeedWindow: .seconds(1)))
            var read = S3Test.Read()
            let started = ContinuousClock.now
            try S3Test.read(client, Self.bucket, "episode.mp3", into: &read)
            let elapsed = Self.seconds(ContinuousClock.now - started)
            #expect(sameBytes(read.bytes, object))
            // Bound: one 1 s window, up to 1 s until libcurl's next progress call, one backoff (≤ 0.1 s), the rest of the read.
            #expect(elapsed >= 0.9 && elapsed < 4, "stall detected and recovered in \(elapsed) s")
            #expect(try S3Test.proxyLog(proxy).map(\.range) == [nil, "bytes=150000-399999"])
        }
    }

    @Test("A peer that always fails: a typed error after the bounded attempts, and only right bytes delivered")
    func alwaysFailing() async throws {
        let object = S3Test.payload(500_000, seed: 51)
        try await Self.withProxy(object: object, plan: [], defaultMode: "reset:40000") { _, proxy in
            let retry = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(50))
            let client = try S3Test.client(proxy, retry: retry, timeouts: TransferTimeouts(connect: .seconds(2), lowSpeedBytes: 1, lowSpeedWindow: .seconds(1)))

            // Resets: three attempts, each adds 40,000 right bytes, then a typed transport error.
            var read = S3Test.Read()
            let reset = #expect(throws: S3Error.self) { try S3Test.read(client, Self.bucket, "episode.mp3", into: &read) }
            #expect(reset?.kind == .transport && reset?.transferKind == .reset, "\(String(describing: reset))")
            #expect(reset?.attempts == 3)
            #expect(read.bytes.count == 120_000)
            #expect(sameBytes(read.bytes, object.prefix(120_000)))
            #expect(try S3Test.proxyLog(proxy).map(\.range) == [nil, "bytes=40000-499999", "bytes=80000-499999"])

            // 503 every time: serverError, nothing delivered, three requests.
            try Self.setPlan(proxy, [], defaultMode: "503")
            read = S3Test.Read()
            let unavailable = #expect(throws: S3Error.self) { try S3Test.read(client, Self.bucket, "episode.mp3", into: &read) }
            #expect(unavailable?.kind == .serverError && unavailable?.status == 503 && unavailable?.code == "ServiceUnavailable")
            #expect(unavailable?.attempts == 3)
            #expect(read.heads.isEmpty && read.bytes.isEmpty)
            #expect(try S3Test.proxyLog(proxy).count == 3 + 3)

            // SlowDown every time: throttled. (A HEAD would see only the 503, without the code in the
            // body: serverError, which is retried all the same.)
            try Self.setPlan(proxy, [], defaultMode: "slowdown")
            let throttled = #expect(throws: S3Error.self) { try client.getObject(bucket: Self.bucket, key: "episode.mp3") { _ in } }
            #expect(throttled?.kind == .throttled && throttled?.code == "SlowDown" && throttled?.attempts == 3)
            let throttledHead = #expect(throws: S3Error.self) { try client.headObject(bucket: Self.bucket, key: "episode.mp3") }
            #expect(throttledHead?.kind == .serverError && throttledHead?.status == 503 && throttledHead?.attempts == 3)

            // Closed without an answer every time.
            try Self.setPlan(proxy, [], defaultMode: "close")
            let closed = #expect(throws: S3Error.self) { try client.listObjectsV2(bucket: Self.bucket) }
            #expect(closed?.kind == .transport && closed?.attempts == 3)

            // Stalls every time: each attempt ends at the low-speed timeout; the whole read stays bounded.
            try Self.setPlan(proxy, [], defaultMode: "stall:10000")
            read = S3Test.Read()
            let started = ContinuousClock.now
            let stalled = #expect(throws: S3Error.self) { try S3Test.read(client, Self.bucket, "episode.mp3", into: &read) }
            let elapsed = Self.seconds(ContinuousClock.now - started)
            #expect(stalled?.kind == .transport && stalled?.transferKind == .timeout, "\(String(describing: stalled))")
            #expect(stalled?.attempts == 3)
            // Bound: per attempt one 1 s window plus up to 1 s until libcurl's next progress call, plus backoff.
            #expect(elapsed < 3 * (1 + 1) + 1, "three 1 s stalls took \(elapsed) s")
            #expect(sameBytes(read.bytes, object.prefix(30_000)))
        }
    }

    @Test("4xx answers are never retried; a refused connection is retried, then typed")
    func notRetried() async throws {
        try await Self.withProxy(object: [1, 2, 3], plan: []) { _, proxy in
            let client = try S3Test.client(proxy)
            let missing = #expect(throws: S3Error.self) { try client.getObject(bucket: Self.bucket, key: "missing") { _ in } }
            #expect(missing?.kind == .notFound && missing?.attempts == 1)
            #expect(try S3Test.proxyLog(proxy).count == 1)
        }
        let closedPort = try freeLoopbackPort()
        let retry = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(10), maxDelay: .milliseconds(50))
        let client = try S3Test.client(endpoint: "http://127.0.0.1:\(closedPort)", retry: retry)
        let refused = #expect(throws: S3Error.self) { try client.headObject(bucket: "b12", key: "k") }
        #expect(refused?.kind == .transport && refused?.transferKind == .connect && refused?.attempts == 3)
    }

    @Test("A consumer's own error stops the read at once and comes back unchanged")
    func consumerErrorPassesThrough() async throws {
        struct Enough: Error {}
        try await Self.withProxy(object: S3Test.payload(300_000), plan: []) { _, proxy in
            let client = try S3Test.client(proxy)
            #expect(throws: Enough.self) {
                try client.getObject(bucket: Self.bucket, key: "episode.mp3") { _ in throw Enough() }
            }
            #expect(try S3Test.proxyLog(proxy).count == 1, "not retried")
        }
    }
}
