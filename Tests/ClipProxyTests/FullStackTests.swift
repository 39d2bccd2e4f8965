import Foundation
import Testing
import Index
import Support
import TestSupport
@testable import Upstream

/// clipproxy against the real protocols: MongoDB (wire server) for the catalog, S3 (moto) for the
/// source bucket. Secrets are recognisable so the logs can be searched for them.
@Suite("Full stack: MongoDB catalog + S3 source bucket")
struct FullStackTests {
    static let secret = "SECRETdoNotLog0123456789abcdef"
    static let token = "TOKENdoNotLog9876543210"
    static let sourceBucket = "pod-insights-raw"

    struct Episode: Decodable {
        let _id: String; let guid: String; let feed_slug: String; let source_key: String?
        /// Every fixture episode, as make_fixtures.py listed them.
        static func all() throws -> [Episode] {
            try JSONDecoder().decode([Episode].self, from: Data(contentsOf: Fixtures.directory.appendingPathComponent("episodes.json")))
        }
    }

    /// Uploads every fixture episode's source object into moto's source bucket.
    static func seedBucket(_ s3: TestServer) throws -> [Episode] {
        let client = try S3Client(configuration: S3Configuration(endpoint: URL(string: s3.endpoint)!, region: "eu-west-2", pathStyle: true),
                                  credentials: AWSCredentials(accessKeyId: "AKIDTEST", secretAccessKey: secret, sessionToken: token))
        _ = try client.createBucket(sourceBucket)
        let episodes = try Episode.all()
        for episode in episodes {
            guard let key = episode.source_key else { continue }
            _ = try client.putObject(bucket: sourceBucket, key: key, fileAt: Fixtures.directory.appendingPathComponent("source/\(key)").path,
                                     contentType: "audio/mpeg")
            // A decoy next to it that must never be chosen.
            _ = try client.putObject(bucket: sourceBucket, key: (key as NSString).deletingLastPathComponent + "/notes_audio.txt", body: [1, 2, 3])
        }
        return episodes
    }

    static func environment(s3: TestServer, mongo: TestServer, work: TemporaryDirectory) -> [String: String] {
        [
            "CLIPPROXY_CATALOG_KIND": "mongo", "CLIPPROXY_MONGO_URI": "mongodb://127.0.0.1:\(mongo.port)/?retryReads=false",
            "CLIPPROXY_MONGO_DATABASE": "podinsight",
            "CLIPPROXY_SOURCE_KIND": "s3", "CLIPPROXY_S3_ENDPOINT": s3.endpoint, "CLIPPROXY_S3_PATH_STYLE": "true",
            "CLIPPROXY_S3_SOURCE_BUCKET": sourceBucket,
            "CLIPPROXY_CACHE_DIR": work.path + "/cache", "CLIPPROXY_SECOND_TIER_DIR": work.path + "/l2",
            "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        ]
    }

    @Test("resolve finds every episode's source object in S3 through the MongoDB catalog; serve cuts it; no secret is logged")
    func resolveAndServe() async throws {
        let work = try TemporaryDirectory("fullstack")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                let episodes = try Self.seedBucket(s3)
                let environment = ProcessInfo.processInfo.environment.merging(Self.environment(s3: s3, mongo: mongo, work: work)) { $1 }
                var logs = ""
                for episode in episodes {
                    for id in [episode._id, episode.guid] {
                        let result = try runClipProxy(["resolve", id], environment: environment)
                        logs += result.stdout + result.stderr
                        if let key = episode.source_key {
                            #expect(result.status == 0, "\(id): \(result.stderr)")
                            let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
                            #expect(json?["source_key"] as? String == key)
                            #expect(json?["guid"] as? String == episode.guid && json?["feed_slug"] as? String == episode.feed_slug)
                            let bytes = try Data(contentsOf: Fixtures.directory.appendingPathComponent("source/\(key)"))
                            #expect(json?["etag"] as? String == Digest.md5Hex([UInt8](bytes)), "the S3 ETag is recorded")
                        } else {
                            #expect(result.status != 0 && result.stderr.contains("no source audio"), "\(id): \(result.stderr)")
                        }
                    }
                }

                let server = try ClipProxyProcess(environment: Self.environment(s3: s3, mongo: mongo, work: work))
                let expected = try trimmed(ServerTests.sourceKey, startMs: 31_000)
                let url = "\(server.baseURL)/clips/\(ServerTests.episode)/31000"
                let cold = try fetch(url)
                #expect(cold.status == 200 && cold.headers["x-clip-tier"] == "fill")
                #expect(cold.headers["content-length"] == String(expected.count))
                #expect(sameBytes(cold.body, expected), "a clip cut from S3 equals clipproxy trim on the file")
                #expect(server.waitForLog("fill finished"))
                let warm = try fetch(url)
                #expect(warm.headers["x-clip-tier"] == "l1_hit" && sameBytes(warm.body, expected))
                let missing = try fetch("\(server.baseURL)/clips/685ba776e4f9ec2f07562680/0")
                #expect(missing.status == 404)
                server.stop()
                logs += server.log
                #expect(logs.contains("fill started"), "the server's log was captured")
                #expect(!logs.contains(Self.secret), "the secret key appears in the logs")
                #expect(!logs.contains(Self.token), "the session token appears in the logs")
            }
        }
    }

    @Test("s3 presign reproduces the S3 documentation's example")
    func presignExample() throws {
        var environment = ProcessInfo.processInfo.environment
        environment["AWS_ACCESS_KEY_ID"] = "AKIAIOSFODNN7EXAMPLE"
        environment["AWS_SECRET_ACCESS_KEY"] = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        environment["AWS_SESSION_TOKEN"] = nil
        environment["CLIPPROXY_S3_ENDPOINT"] = "https://s3.amazonaws.com"
        environment["CLIPPROXY_S3_REGION"] = "us-east-1"
        let result = try runClipProxy(["s3", "presign", "s3://examplebucket/test.txt", "--expires", "86400", "--now", "2013-05-24T00:00:00Z"],
                                      environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("https://examplebucket.s3.amazonaws.com/test.txt?"))
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            .hasSuffix("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"))
        let tooLong = try runClipProxy(["s3", "presign", "s3://examplebucket/test.txt", "--expires", "604801"], environment: environment)
        #expect(tooLong.status != 0)
        let noCredentials = try runClipProxy(["s3", "presign", "s3://b/k"], environment: ["HOME": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"])
        #expect(noCredentials.status != 0 && noCredentials.stderr.contains("AWS_ACCESS_KEY_ID"), "\(noCredentials.stderr)")
    }
}

@Suite("Full stack: the S3 clip bucket as the second tier, and failing fills")
struct ClipBucketTests {
    static let clipBucket = "pod-insights-clips"

    func clipBucketClient(_ s3: TestServer) throws -> S3Client {
        try S3Client(configuration: S3Configuration(endpoint: URL(string: s3.endpoint)!, region: "eu-west-2", pathStyle: true),
                     credentials: AWSCredentials(accessKeyId: "AKIDTEST", secretAccessKey: FullStackTests.secret))
    }

    @Test("A filled clip lands in the S3 clip bucket (seed key layout); with L1 wiped it is served from S3 without a trim")
    func clipBucketRoundTrip() async throws {
        let work = try TemporaryDirectory("clipbucket")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                _ = try FullStackTests.seedBucket(s3)
                let client = try clipBucketClient(s3)
                _ = try client.createBucket(Self.clipBucket)
                let environment = FullStackTests.environment(s3: s3, mongo: mongo, work: work)
                let expected = try trimmed(ServerTests.sourceKey, startMs: 7_000)
                var server = try ClipProxyProcess(environment: environment)
                let cold = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/7000")
                #expect(cold.headers["x-clip-tier"] == "fill" && sameBytes(cold.body, expected))
                // The upload runs in the background after the fill: wait for it.
                let seedKey = "the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/7000-37000.mp3"
                var head: S3ObjectHead?
                for _ in 0..<50 where head == nil {
                    head = try? client.headObject(bucket: Self.clipBucket, key: seedKey)
                    if head == nil { usleep(100_000) }
                }
                #expect(head?.size == Int64(expected.count), "the clip is in the clip bucket under the seed layout")
                #expect(head?.metadata["clip-key"]?.count == 64)
                server.stop()

                try FileManager.default.removeItem(atPath: work.path + "/cache")
                server = try ClipProxyProcess(environment: environment)
                defer { server.stop() }
                let fromS3 = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/7000")
                #expect(fromS3.headers["x-clip-tier"] == "l2_hit")
                #expect(sameBytes(fromS3.body, expected))
                #expect(!server.log.contains("fill started"), "no new trim")
                #expect(server.waitForLog("local copy from the second tier finished"))
                #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/7000").headers["x-clip-tier"] == "l1_hit")
            }
        }
    }

    @Test("A fill whose source reads keep failing aborts every waiter and caches nothing")
    func failingFill() async throws {
        try await withProxiedStack("failing") { server, proxy, s3, work in
            let client = try clipBucketClient(s3)
            // Index the episode and cache one clip while S3 behaves.
            let good = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/0")
            #expect(good.status == 200)
            // From now on every S3 response is cut after 20 kB.
            try setProxyPlan(proxy, #"{"plan": [], "default": "reset:20000"}"#)
            var arguments = ["--silent", "--parallel", "--parallel-immediate", "--parallel-max", "20",
                             "-w", "%{http_code} %{size_download} %{exitcode}\\n"]
            for i in 0..<20 { arguments += ["-o", work.path + "/b\(i).mp3", "\(server.baseURL)/clips/\(ServerTests.episode)/33000"] }
            let result = try FFmpegOracle.run("/usr/bin/curl", arguments)
            let lines = String(decoding: result.stdout, as: UTF8.self).split(separator: "\n")
            #expect(lines.count == 20)
            for line in lines {
                let fields = line.split(separator: " ")
                // Either an error status before the body, or a transfer cut short (curl exit 18):
                // never a complete 200.
                #expect(fields.count == 3 && (fields[0] != "200" || fields[2] != "0"), "a waiter saw success: \(line)")
            }
            server.stop()
            #expect(server.log.contains("fill failed; nothing cached"))
            let head = try? client.headObject(bucket: Self.clipBucket, key: "the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/33000-63000.mp3")
            #expect(head == nil, "nothing uploaded to the clip bucket")
            let store = try ClipStore(.init(directory: work.path + "/cache", maxBytes: 1 << 30))
            #expect(try store.stats().clips == 1, "only the clip cut while S3 behaved is cached")
            #expect(try store.verify().isClean)
            #expect(store.openingReport.temporaryFilesRemoved == 0, "failed fills removed their temporary files")
        }
    }
}

@Suite("Full stack: cold clips stream while they are cut")
struct StreamingFillTests {
    @Test("The first body bytes of a cold clip arrive before its fill has finished")
    func firstBytesBeforeFillEnds() async throws {
        try await withProxiedStack("streaming") { server, proxy, _, work in
            // Resolve and index the episode first, so the next S3 requests are the clip's own.
            #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/0").status == 200)
            #expect(server.waitForLog("fill finished"))
            // Next: the source GET stalls after 100 kB, until the client's stall detector retries
            // and resumes (only a source request takes the stall: the previous clip's upload to
            // the clip bucket may still be under way).
            try setProxyPlan(proxy, #"{"plan": ["stall:100000@/\#(FullStackTests.sourceBucket)/"], "default": "pass"}"#)
            let url = "\(server.baseURL)/clips/\(ServerTests.episode)/20000"
            let early = try FFmpegOracle.run("/usr/bin/curl", ["--silent", "--max-time", "1", "-D", "-", "-o", work.path + "/early.mp3", url])
            let output = String(decoding: early.stdout, as: UTF8.self)
            let expected = try trimmed(ServerTests.sourceKey, startMs: 20_000)
            #expect(early.status == 28, "the client timed out while the fill was stalled: \(output)")
            #expect(output.lowercased().contains("content-length: \(expected.count)"), "the exact length came first")
            let received = (try? Data(contentsOf: URL(fileURLWithPath: work.path + "/early.mp3")).count) ?? 0
            #expect(received > 1000 && received < expected.count, "first bytes before the end: \(received) of \(expected.count)")
            #expect(!server.log.contains("fill finished", count: 2), "the fill was still running when those bytes arrived")
            // The fill resumes and completes; the clip is then whole and exact.
            #expect(server.waitForLog("fill finished", count: 2, timeout: 30))
            let whole = try fetch(url)
            #expect(whole.status == 200 && sameBytes(whole.body, expected))
        }
    }
}

extension String {
    /// True when `text` occurs at least `count` times.
    func contains(_ text: String, count: Int) -> Bool { components(separatedBy: text).count - 1 >= count }
}

@Suite("Full stack: coalescing counted at S3")
struct CoalescingAtS3Tests {
    @Test("200 concurrent requests for one cold clip: S3 sees exactly one read of the source range")
    func oneSourceRead() async throws {
        try await withProxiedStack("coalesce-s3") { server, proxy, _, work in
            let url = "\(server.baseURL)/clips/\(ServerTests.episode)/25000?duration_ms=30000"
            var arguments = ["--silent", "--parallel", "--parallel-immediate", "--parallel-max", "200"]
            for i in 0..<200 { arguments += ["-o", work.path + "/c\(i).mp3", url] }
            let result = try FFmpegOracle.run("/usr/bin/curl", arguments)
            #expect(result.status == 0, "\(result.stderr)")
            let expected = try trimmed(ServerTests.sourceKey, startMs: 25_000)
            for i in 0..<200 {
                #expect(sameBytes(try [UInt8](Data(contentsOf: URL(fileURLWithPath: work.path + "/c\(i).mp3"))), expected), "response \(i)")
            }
            var log: [UInt8] = []
            _ = try CurlTransfer().perform(HTTPRequest(method: "GET", url: proxy.endpoint + "/__proxy/log")) { log.append(contentsOf: $0); return true }
            let requests = try FaultProxyRequest.decodeLog(log)
            let sourceGets = requests.filter { $0.method == "GET" && $0.path.contains("pod-insights-raw/the-daily-tones") }
            // Probing reads the head, the tail and a middle frame (ranged GETs of a few kB); the
            // clip itself is one ranged GET of about its own size.
            let clipReads = sourceGets.filter { request in
                guard let range = request.range, let dash = range.firstIndex(of: "-"),
                      let first = Int(range.dropFirst(6).prefix(upTo: dash)), let last = Int(range[range.index(after: dash)...]) else { return false }
                return last - first + 1 > 100_000
            }
            #expect(clipReads.count == 1, "source reads of the clip range: \(clipReads.map { $0.range ?? "" })")
            #expect(server.log.components(separatedBy: "fill started").count - 1 == 1)
        }
    }
}

/// moto with a fault proxy in front and the MongoDB wire server, the source bucket seeded and the
/// clip bucket created, and clipproxy serving through the proxy. Everything stops afterwards.
func withProxiedStack(_ label: String, environment extra: [String: String] = [:],
                      _ body: (_ server: ClipProxyProcess, _ proxy: TestServer, _ s3: TestServer, _ work: TemporaryDirectory) async throws -> Void) async throws {
    let work = try TemporaryDirectory(label)
    defer { work.remove() }
    try await withTestServer(try TestServer.s3()) { s3 in
        try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
            _ = try FullStackTests.seedBucket(s3)
            _ = try ClipBucketTests().clipBucketClient(s3).createBucket(ClipBucketTests.clipBucket)
            try await withTestServer(try TestServer.faultProxy(target: s3)) { proxy in
                var environment = FullStackTests.environment(s3: s3, mongo: mongo, work: work)
                environment["CLIPPROXY_S3_ENDPOINT"] = proxy.endpoint
                environment.merge(extra) { $1 }
                let server = try ClipProxyProcess(environment: environment)
                defer { server.stop() }
                try await body(server, proxy, s3, work)
            }
        }
    }
}

/// Replaces the fault proxy's plan (see scripts/fault_proxy.py).
func setProxyPlan(_ proxy: TestServer, _ json: String) throws {
    let response = try CurlTransfer().perform(HTTPRequest(method: "POST", url: proxy.endpoint + "/__proxy/plan", body: Array(json.utf8))) { _ in true }
    #expect(response.status == 200)
}
