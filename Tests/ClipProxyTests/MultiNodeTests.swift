import Foundation
import Testing
import TestSupport
@testable import Upstream

/// Three `clipproxy serve` nodes configured from conf/multinode (one shared file, one env file per
/// node), each with its own cache directory, sharing the MongoDB catalog, the source bucket and the
/// clip bucket; nginx in front of them configured from conf/multinode/nginx.conf. S3 is moto behind
/// the counting proxy, so every source read of every node is seen.
@Suite("Several nodes: three clipproxy nodes, one shared S3 clip bucket, nginx in front")
struct MultiNodeTests {
    static let directory = RepoPaths.root.appendingPathComponent("conf/multinode")
    static let nodeNames = ["a", "b", "c"]
    /// CBR MPEG-1 (the-daily-tones), CBR MPEG-2 (hex-guid-radio) and VBR (substack-show).
    static let cbr = "685ba776e4f9ec2f0756267a"
    static let cbrMpeg2 = "685ba776e4f9ec2f0756267c"
    static let vbr = "685ba776e4f9ec2f0756267b"

    /// `node-<name>.env` as variables (KEY=VALUE lines; comments and blank lines skipped).
    static func nodeEnvironment(_ name: String) throws -> [String: String] {
        let text = try String(contentsOf: directory.appendingPathComponent("node-\(name).env"), encoding: .utf8)
        var variables: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            variables[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return variables
    }

    /// Starts one node the way conf/multinode/README.md says (`serve --config clipproxy-node.yaml`
    /// with the node's env file), with only what the test machine needs changed: loopback and a
    /// free port, a cache directory under `work`, the local S3 (through `proxy`) and MongoDB.
    static func startNode(_ name: String, s3Proxy proxy: TestServer, mongo: TestServer, work: TemporaryDirectory,
                          extra: [String: String] = [:]) throws -> ClipProxyProcess {
        var environment = try nodeEnvironment(name)
        #expect(environment["CLIPPROXY_CACHE_DIR"]?.hasSuffix("node-\(name)") == true, "each node has its own cache directory")
        environment.merge([
            "CLIPPROXY_HTTP_HOST": "127.0.0.1", "CLIPPROXY_HTTP_PORT": "0",
            "CLIPPROXY_CACHE_DIR": work.path + "/node-\(name)",
            "CLIPPROXY_MONGO_URI": "mongodb://127.0.0.1:\(mongo.port)/?retryReads=false",
            "CLIPPROXY_S3_ENDPOINT": proxy.endpoint, "CLIPPROXY_S3_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": FullStackTests.secret,
            "AWS_SESSION_TOKEN": FullStackTests.token, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        ].merging(extra) { $1 }) { $1 }
        return try ClipProxyProcess(environment: environment,
                                    arguments: ["serve", "--config", directory.appendingPathComponent("clipproxy-node.yaml").path])
    }

    /// A source-object read seen by the counting proxy, with the number of bytes its Range asked for.
    struct SourceRead { let path: String; let range: String?; let bytes: Int }

    /// Every GET of a source object so far (listings of the bucket are not reads of audio).
    static func sourceReads(_ proxy: TestServer) throws -> [SourceRead] {
        let log = try fetch(proxy.endpoint + "/__proxy/log")
        return try FaultProxyRequest.decodeLog(log.body)
            .filter { $0.method == "GET" && $0.path.hasPrefix("/\(FullStackTests.sourceBucket)/") && !$0.path.contains("list-type") }
            .map { SourceRead(path: $0.path, range: $0.range, bytes: rangeLength($0.range)) }
    }

    /// Bytes named by `bytes=a-b`; a GET without a Range reads the whole object (counted as Int.max).
    static func rangeLength(_ range: String?) -> Int {
        guard let range, range.hasPrefix("bytes="), let dash = range.firstIndex(of: "-"),
              let first = Int(range[range.index(range.startIndex, offsetBy: 6)..<dash]),
              let last = Int(range[range.index(after: dash)...]) else { return Int.max }
        return last - first + 1
    }

    /// Waits until the clip bucket holds `key` (the upload after a fill runs in the background),
    /// asking moto directly so the counting proxy does not see it.
    static func waitForClipObject(_ client: S3Client, key: String, timeout: TimeInterval = 15) -> S3ObjectHead? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let head = try? client.headObject(bucket: ClipBucketTests.clipBucket, key: key) { return head }
            usleep(50_000)
        }
        return nil
    }

    /// Waits until `url` is answered from the node's own store (`l1_hit`).
    static func waitForLocalCopy(_ url: String, timeout: TimeInterval = 10) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try fetch(url, method: "HEAD").headers["x-clip-tier"] == "l1_hit" { return true }
            usleep(50_000)
        }
        return false
    }

    /// The seed-layout key of a clip in the clip bucket (`{feed_slug}/{guid}/{start_ms}-{end_ms}.mp3`).
    static func clipObjectKey(_ episode: FullStackTests.Episode, startMs: Int, durationMs: Int = 30_000) -> String {
        "\(episode.feed_slug)/\(episode.guid)/\(startMs)-\(startMs + durationMs).mp3"
    }

    /// The `upstream=` field of an access log line: the node that answered, or every node tried
    /// (`127.0.0.1:1, 127.0.0.1:2`) when nginx moved on from one.
    static func upstreams<S: StringProtocol>(_ line: S) -> String? {
        guard let start = line.range(of: " upstream="), let end = line.range(of: " upstream_status=") else { return nil }
        return String(line[start.upperBound..<end.lowerBound])
    }

    @Test("Signed URLs find their node: differently signed URLs of one clip all go to one node, l1_hit after the first; every node still checks the signature")
    func signedURLsFindOneNode() async throws {
        let work = try TemporaryDirectory("multinode-signed")
        defer { work.remove() }
        let key = "multinode-signing-key-0123456789abcdef"
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                let episodes = Dictionary(uniqueKeysWithValues: try FullStackTests.seedBucket(s3).map { ($0._id, $0) })
                _ = try ClipBucketTests().clipBucketClient(s3).createBucket(ClipBucketTests.clipBucket)
                try await withTestServer(try TestServer.faultProxy(target: s3)) { proxy in
                    let nodes = try Self.nodeNames.map {
                        try Self.startNode($0, s3Proxy: proxy, mongo: mongo, work: work, extra: ["CLIPPROXY_SIGNING_KEY": key])
                    }
                    defer { for node in nodes { node.stop() } }
                    let balancer = try NginxLoadBalancer.start(nodes: nodes.map { String($0.baseURL.dropFirst("http://".count)) })
                    defer { balancer.stop() }
                    let episode = try #require(episodes[Self.cbr])
                    for (startMs, query) in [(12_000, ""), (31_000, "?duration_ms=15000")] {
                        let path = "/clips/\(Self.cbr)/\(startMs)"
                        let expected = try trimmed(try #require(episode.source_key), startMs: Int64(startMs),
                                                   durationMs: query.isEmpty ? 30_000 : 15_000)
                        // Five users' URLs of one clip: each signed with its own expiry, so each differs.
                        var urls: [String] = []
                        for expiresIn in [600, 1200, 1800, 2400, 3000] {
                            let signed = try runClipProxy(["sign", path + query, "--expires-in", String(expiresIn)],
                                                          environment: ProcessInfo.processInfo.environment.merging(["CLIPPROXY_SIGNING_KEY": key]) { $1 })
                            #expect(signed.status == 0, "clipproxy sign: \(signed.stderr)")
                            urls.append(signed.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
                        }
                        #expect(Set(urls).count == urls.count, "the signed URLs differ")
                        let logBefore = balancer.accessLog().split(separator: "\n").count
                        var tiers: [String] = []
                        for (i, url) in urls.enumerated() {
                            let response = try fetch(balancer.endpoint + url)
                            #expect(response.status == 200 && sameBytes(response.body, expected), "\(url): \(response.status)")
                            tiers.append(response.headers["x-clip-tier"] ?? "none")
                            // The first cut is stored before the next user asks.
                            if i == 0 { _ = nodes.map { $0.waitForLog("fill finished", timeout: 2) } }
                        }
                        let lines = balancer.accessLog().split(separator: "\n").dropFirst(logBefore)
                        let servedBy = Set(lines.compactMap { Self.upstreams($0) })
                        #expect(servedBy.count == 1, "\(path)\(query): answered by \(servedBy)")
                        #expect(tiers.first == "fill" && tiers.dropFirst().allSatisfy { $0 == "l1_hit" }, "\(path)\(query): \(tiers)")
                        // The node still checks: a changed signature is refused there.
                        var forged = urls[0]
                        forged.replaceSubrange(forged.index(before: forged.endIndex)..., with: forged.hasSuffix("0") ? "1" : "0")
                        #expect(try fetch(balancer.endpoint + forged).status == 403)
                        // The clip's captions and peaks go to the node that has the clip: the
                        // peaks are decoded from its local copy, not a copy fetched elsewhere.
                        let documentsBefore = balancer.accessLog().split(separator: "\n").count
                        for suffix in [".vtt", ".json"] {
                            let signed = try runClipProxy(["sign", path + suffix + query],
                                                          environment: ProcessInfo.processInfo.environment.merging(["CLIPPROXY_SIGNING_KEY": key]) { $1 })
                            let document = try fetch(balancer.endpoint + signed.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
                            #expect(document.status == 200, "\(path)\(suffix)\(query): \(document.status)")
                        }
                        let documentNodes = Set(balancer.accessLog().split(separator: "\n").dropFirst(documentsBefore).compactMap { Self.upstreams($0) })
                        #expect(documentNodes == servedBy, "\(path) .vtt/.json answered by \(documentNodes), the clip by \(servedBy)")
                    }
                }
            }
        }
    }

    @Test("A clip filled on one node is served by the others (even ones new to the episode) from the clip bucket with no source read; with a node killed, nginx still serves every clip")
    func threeNodes() async throws {
        let work = try TemporaryDirectory("multinode")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                let episodes = Dictionary(uniqueKeysWithValues: try FullStackTests.seedBucket(s3).map { ($0._id, $0) })
                let bucket = try ClipBucketTests().clipBucketClient(s3)
                _ = try bucket.createBucket(ClipBucketTests.clipBucket)
                try await withTestServer(try TestServer.faultProxy(target: s3)) { proxy in
                    let nodes = try Self.nodeNames.map { try Self.startNode($0, s3Proxy: proxy, mongo: mongo, work: work) }
                    defer { for node in nodes { node.stop() } }
                    try sharedClipBucket(nodes: nodes, proxy: proxy, bucket: bucket, episodes: episodes)
                    try failover(nodes: nodes, proxy: proxy, bucket: bucket, episodes: episodes)
                }
            }
        }
    }

    /// Directly to the nodes: a clip filled through node a is an `l2_hit` on b and c, with the same
    /// bytes and ETag, and the source bucket sees no read for it.
    func sharedClipBucket(nodes: [ClipProxyProcess], proxy: TestServer, bucket: S3Client,
                          episodes: [String: FullStackTests.Episode]) throws {
        let (a, others) = (nodes[0], Array(nodes[1...]))
        let episode = try #require(episodes[Self.cbr])
        let sourceKey = try #require(episode.source_key)

        let expected = try trimmed(sourceKey, startMs: 12_000)
        let filled = try fetch("\(a.baseURL)/clips/\(Self.cbr)/12000")
        #expect(filled.status == 200 && filled.headers["x-clip-tier"] == "fill")
        #expect(sameBytes(filled.body, expected), "node a's clip equals clipproxy trim")
        #expect(a.waitForLog("fill finished"))
        let object = Self.waitForClipObject(bucket, key: Self.clipObjectKey(episode, startMs: 12_000))
        #expect(Self.waitForSharedIndexes(bucket, count: 1), "node a shared the episode's frame index through the bucket")
        #expect(object?.size == Int64(expected.count), "node a uploaded the clip to the shared clip bucket")

        for (node, name) in zip(others, Self.nodeNames.dropFirst()) {
            let before = try Self.sourceReads(proxy)
            let response = try fetch("\(node.baseURL)/clips/\(Self.cbr)/12000")
            let after = try Self.sourceReads(proxy)
            #expect(response.status == 200)
            #expect(response.headers["x-clip-tier"] == "l2_hit", "node \(name) took the clip from the clip bucket")
            #expect(sameBytes(response.body, filled.body), "node \(name) serves node a's bytes")
            #expect(response.headers["etag"] == filled.headers["etag"], "one ETag for one clip, whichever node answers")
            #expect(response.headers["content-length"] == String(expected.count))
            #expect(after.count == before.count, "node \(name) read the source: \(after.dropFirst(before.count).map { $0.range ?? "whole object" })")
            #expect(!node.log.contains("fill started"), "node \(name) cut nothing")
            // The copy into the node's own store runs on after the response; HEAD (no body) until it is there.
            #expect(try Self.waitForLocalCopy("\(node.baseURL)/clips/\(Self.cbr)/12000"), "node \(name) copied the clip to its own store")
            let again = try fetch("\(node.baseURL)/clips/\(Self.cbr)/12000")
            #expect(again.headers["x-clip-tier"] == "l1_hit" && sameBytes(again.body, expected), "node \(name) keeps it on its own disk: \(again.headers["x-clip-tier"] ?? "no tier")")
        }

        // The same for a CBR MPEG-2 and a VBR episode (whose own index needs a pass over the whole
        // source): the nodes that never saw them read nothing from the source bucket.
        for (episodeId, node) in [(Self.cbrMpeg2, others[0]), (Self.vbr, others[1])] {
            let other = try #require(episodes[episodeId])
            let otherExpected = try trimmed(try #require(other.source_key), startMs: 20_000)
            let otherFilled = try fetch("\(a.baseURL)/clips/\(episodeId)/20000")
            #expect(otherFilled.status == 200 && sameBytes(otherFilled.body, otherExpected))
            #expect(Self.waitForClipObject(bucket, key: Self.clipObjectKey(other, startMs: 20_000)) != nil)
            let before = try Self.sourceReads(proxy)
            let fresh = try fetch("\(node.baseURL)/clips/\(episodeId)/20000")
            let reads = try Self.sourceReads(proxy).dropFirst(before.count)
            #expect(fresh.headers["x-clip-tier"] == "l2_hit" && sameBytes(fresh.body, otherExpected), "\(episodeId)")
            #expect(reads.isEmpty, "\(episodeId): a node new to the episode read the source: \(reads.map { $0.range ?? "whole" })")
        }
    }

    /// Waits until the clip bucket holds `count` shared frame indexes (uploaded in the background).
    static func waitForSharedIndexes(_ bucket: S3Client, count: Int) -> Bool {
        for _ in 0..<100 {
            if let listed = try? bucket.listObjectsV2(bucket: ClipBucketTests.clipBucket, prefix: "_clipproxy/frame-index/"), listed.count >= count {
                return true
            }
            usleep(50_000)
        }
        return false
    }

    /// Through nginx configured from conf/multinode/nginx.conf: clips of three episodes, then the
    /// node that answered most of them is SIGKILLed and every clip (and new ones) is asked again.
    func failover(nodes: [ClipProxyProcess], proxy: TestServer, bucket: S3Client, episodes: [String: FullStackTests.Episode]) throws {
        let addresses = nodes.map { String($0.baseURL.dropFirst("http://".count)) }
        let balancer = try NginxLoadBalancer.start(nodes: addresses)
        defer { balancer.stop() }
        let windows: [(episode: String, startMs: Int)] = [
            (Self.cbr, 3_000), (Self.cbr, 21_000), (Self.cbr, 40_000), (Self.cbrMpeg2, 5_000),
            (Self.cbrMpeg2, 25_000), (Self.vbr, 10_000), (Self.vbr, 30_000), (Self.cbr, 33_000),
        ]
        var expected: [String: [UInt8]] = [:]
        for window in windows {
            let episode = try #require(episodes[window.episode])
            expected["/clips/\(window.episode)/\(window.startMs)"] = try trimmed(try #require(episode.source_key), startMs: Int64(window.startMs))
        }
        let paths = windows.map { "/clips/\($0.episode)/\($0.startMs)" }

        var servedBy: [String: String] = [:]
        for path in paths {
            let response = try fetch(balancer.endpoint + path)
            #expect(response.status == 200, "\(path): \(response.status)")
            #expect(sameBytes(response.body, expected[path] ?? []), "\(path) through nginx")
        }
        // The access log names the node of each request: `"GET <path> HTTP/1.1" ... upstream=<node>`.
        for line in balancer.accessLog(lines: paths.count).split(separator: "\n") {
            guard let path = paths.first(where: { line.contains("\"GET \($0) ") }), let nodes = Self.upstreams(line) else { continue }
            servedBy[path] = nodes
        }
        #expect(servedBy.count == paths.count, "every request is in the access log: \(balancer.accessLog())")
        let load = Dictionary(grouping: servedBy.keys, by: { servedBy[$0]! })
        print("nginx spread \(paths.count) clips over the nodes: \(load.mapValues(\.count))")
        #expect(Set(servedBy.values).isSubset(of: Set(addresses)))

        // Every node uploads what it cut; wait for all of it before a node dies.
        for window in windows {
            let episode = try #require(episodes[window.episode])
            #expect(Self.waitForClipObject(bucket, key: Self.clipObjectKey(episode, startMs: window.startMs)) != nil,
                    "\(window) is in the clip bucket")
        }

        let victimAddress = try #require(load.max { $0.value.count < $1.value.count }?.key)
        let victim = try #require(nodes.first { $0.baseURL.hasSuffix(victimAddress) })
        let orphaned = Set(load[victimAddress] ?? [])
        kill(victim.process.processIdentifier, SIGKILL)
        victim.process.waitUntilExit()

        let logLinesBefore = balancer.accessLog().split(separator: "\n").count
        for path in paths {
            let readsBefore = try Self.sourceReads(proxy).count
            let response = try fetch(balancer.endpoint + path)
            #expect(response.status == 200, "\(path) with node \(victimAddress) dead: \(response.status)")
            #expect(sameBytes(response.body, expected[path] ?? []), "\(path) with a node dead")
            if orphaned.contains(path) {
                // Its node is gone; the next node on the ring finds it in the shared bucket, or,
                // when its listing of the episode's folder predates the victim's upload (listed at
                // most once per catalog.ttl_s: the documented price of misses without a
                // clip-bucket request), cuts it once more: about the clip's own bytes, or, for a
                // VBR episode indexed only as far as earlier clips, one index extension read
                // (at least 1 MiB) whose bytes the cut then reuses.
                let tier = response.headers["x-clip-tier"] ?? "no tier"
                #expect(tier == "l2_hit" || tier == "fill", "\(path): \(tier)")
                let read = try Self.sourceReads(proxy).dropFirst(readsBefore).reduce(0) { $0 + $1.bytes }
                let clipBytes = expected[path]?.count ?? 0
                #expect(read <= max(clipBytes, 1 << 20) + 64 << 10, "\(path) (\(tier)) read \(read) source bytes for a \(clipBytes)-byte clip")
            }
        }
        let ranged = try fetch(balancer.endpoint + paths[0], headers: [("Range", "bytes=100-1099")])
        #expect(ranged.status == 206 && sameBytes(ranged.body, (expected[paths[0]] ?? [])[100..<1100]))
        let fresh = try #require(episodes[Self.cbr]?.source_key)
        for startMs in [7_000, 17_000, 27_000, 37_000] {
            let response = try fetch("\(balancer.endpoint)/clips/\(Self.cbr)/\(startMs)")
            #expect(response.status == 200, "a new clip with a node dead: \(response.status)")
            #expect(sameBytes(response.body, try trimmed(fresh, startMs: Int64(startMs))))
        }
        let after = balancer.accessLog(lines: logLinesBefore + paths.count + 5).split(separator: "\n").dropFirst(logLinesBefore)
        let final = after.compactMap { Self.upstreams($0) }
        // `upstream=` lists every node tried ("dead, live" when the dead one was tried first); the
        // one that answered is last, and it is never the dead node.
        #expect(final.count == paths.count + 5)
        #expect(final.allSatisfy { !$0.hasSuffix(victimAddress) }, "\(final)")
        #expect(final.contains { $0.contains(victimAddress) } || orphaned.isEmpty, "nginx tried the dead node first for its clips")
    }
}
