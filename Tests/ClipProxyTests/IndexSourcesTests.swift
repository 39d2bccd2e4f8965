import Foundation
import Testing
import Support
import TestSupport
@testable import ClipProxy
@testable import Upstream

/// `clipproxy index-sources` against moto: a bucket of 20 VBR episodes is indexed, interrupted with
/// SIGINT, resumed, and a fresh node then serves first clips from the shared indexes without
/// reading a whole source.
@Suite("clipproxy index-sources: index ahead of listeners")
struct IndexSourcesTests {
    /// VBR sources: without an index a node must read every frame of them before its first clip.
    static let fixtureNames = ["m1_32k_stereo_vbr", "m1_44k_joint_vbr_v2", "m2_24k_stereo_vbr", "m1_44k_vbr_noxing"]
    static let feeds = ["index-feed-a", "index-feed-b"]

    struct Planted {
        let id: String, guid: String, feedSlug: String, key: String, fixture: AudioFixture, etag: String
        /// The object name a node looks for (the same rule the server uses).
        var sharedIndexName: String { SharedFrameIndex.name("s3:\(FullStackTests.sourceBucket)/\(key)#\(etag)") }
    }

    static func client(_ s3: TestServer) throws -> S3Client {
        try S3Client(configuration: S3Configuration(endpoint: URL(string: s3.endpoint)!, region: "eu-west-2", pathStyle: true),
                     credentials: AWSCredentials(accessKeyId: "AKIDTEST", secretAccessKey: FullStackTests.secret, sessionToken: FullStackTests.token))
    }

    /// 20 episodes (12 in feed a, 8 in feed b), each a fixture under its own key, plus what a real
    /// bucket also holds and must not be indexed: an older upload beside a newer one, a text file
    /// in an audio folder, an object outside the layout. The clip bucket is created empty.
    static func plant(_ s3: TestServer) throws -> [Planted] {
        let client = try client(s3)
        _ = try client.createBucket(FullStackTests.sourceBucket)
        _ = try client.createBucket(ClipBucketTests.clipBucket)
        var planted: [Planted] = []
        for i in 0..<20 {
            let fixture = try Fixtures.named(fixtureNames[i % fixtureNames.count])
            let guid = String(format: "%08x-1dec-4000-8000-%012x", 0x5eed_0000 + i, i)
            let feed = feeds[i < 12 ? 0 : 1]
            let key = "\(feed)/\(guid)/audio/2025-02-\(String(format: "%02d", i + 1))-episode-\(i)_\(guid.prefix(8))_audio.mp3"
            let bytes = try [UInt8](Data(contentsOf: fixture.url))
            _ = try client.putObject(bucket: FullStackTests.sourceBucket, key: key, fileAt: fixture.path, contentType: "audio/mpeg")
            planted.append(Planted(id: String(format: "6a0000000000000000%06x", i), guid: guid, feedSlug: feed, key: key,
                                   fixture: fixture, etag: Digest.md5Hex(bytes)))
        }
        let first = planted[0]
        _ = try client.putObject(bucket: FullStackTests.sourceBucket, key: "\(first.feedSlug)/\(first.guid)/audio/2024-12-31-old-cut_\(first.guid.prefix(8))_audio.mp3",
                                 fileAt: first.fixture.path, contentType: "audio/mpeg")
        _ = try client.putObject(bucket: FullStackTests.sourceBucket, key: "\(first.feedSlug)/\(first.guid)/audio/notes_audio.txt", body: [1, 2, 3])
        _ = try client.putObject(bucket: FullStackTests.sourceBucket, key: "\(first.feedSlug)/README.txt", body: [4, 5, 6])
        return planted
    }

    /// The configuration of index-sources (and of serve) as environment variables.
    static func environment(endpoint: String, work: TemporaryDirectory) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CLIPPROXY_") && !$0.key.hasPrefix("AWS_") }
        environment.merge([
            "CLIPPROXY_SOURCE_KIND": "s3", "CLIPPROXY_S3_ENDPOINT": endpoint, "CLIPPROXY_S3_PATH_STYLE": "true",
            "CLIPPROXY_S3_SOURCE_BUCKET": FullStackTests.sourceBucket, "CLIPPROXY_S3_CLIP_BUCKET": ClipBucketTests.clipBucket,
            "CLIPPROXY_CACHE_DIR": work.path + "/tool-cache",
            "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": FullStackTests.secret, "AWS_SESSION_TOKEN": FullStackTests.token,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        ]) { $1 }
        return environment
    }

    /// scripts/fault_proxy.py with every forwarded request held back by `delay` seconds first, so
    /// a run is slow enough to interrupt half-way. Imported unchanged; only `forward` is wrapped.
    static func slowProxy(target: TestServer, delay: Double) throws -> TestServer {
        let code = """
        import sys, time
        sys.path.insert(0, sys.argv.pop(1))
        delay = float(sys.argv.pop(1))
        import fault_proxy
        forward = fault_proxy.Proxy.forward
        def slow(self, *args, **kwargs):
            time.sleep(delay)
            return forward(self, *args, **kwargs)
        fault_proxy.Proxy.forward = slow
        sys.exit(fault_proxy.main())
        """
        return try TestServer.start(name: "slow-proxy", executable: RepoPaths.python, arguments: [
            "-c", code, RepoPaths.scripts.path, String(delay), "--target", "\(target.host):\(target.port)",
        ])
    }

    /// The shared frame indexes in the clip bucket, asked of moto directly.
    static func sharedIndexes(_ s3: TestServer) throws -> Set<String> {
        Set(try client(s3).listObjectsV2(bucket: ClipBucketTests.clipBucket, prefix: SharedFrameIndex.prefix).map(\.key))
    }

    /// The number after `label:` in a summary (`  indexed now:     7`), nil when absent.
    static func count(_ label: String, in text: String) -> Int? {
        guard let match = text.firstMatch(of: try! Regex("\(label):\\s+(\\d+)")), let value = match.output[1].substring else { return nil }
        return Int(value)
    }

    @Test("20 episodes: interrupted with SIGINT after a few, resumed, then a fresh node serves first clips from the shared indexes")
    func interruptResumeServe() async throws {
        let work = try TemporaryDirectory("index-sources")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            let planted = try Self.plant(s3)

            // First run: one at a time through a proxy that delays every S3 request, interrupted
            // once progress lines show a few sources indexed.
            let slow = try Self.slowProxy(target: s3, delay: 0.15)
            defer { slow.stop() }
            let first = try ToolProcess(["index-sources", "--concurrency", "1", "--progress-interval", "0.3"],
                                        environment: Self.environment(endpoint: slow.endpoint, work: work))
            let progressed = first.waitForOutput(timeout: 60) { text in
                text.matches(of: /progress: \d+\/20 done: (\d+) indexed now/).contains { (Int($0.output.1) ?? 0) >= 3 }
            }
            #expect(progressed, "no progress line showed 3 sources indexed: \(first.stdout)")
            kill(first.process.processIdentifier, SIGINT)
            let interrupted = first.finish(timeout: 30)
            #expect(interrupted.status == 130, "an interrupted run exits 130: \(interrupted.stdout)\n\(interrupted.stderr)")
            #expect(interrupted.stdout.contains("index-sources interrupted:"))
            #expect(interrupted.stdout.contains("Run the same command again to resume"))
            #expect(interrupted.stderr.contains("stopping after the"), "\(interrupted.stderr)")
            let done = try #require(Self.count("indexed now", in: interrupted.stdout))
            let notStarted = try #require(Self.count("not started", in: interrupted.stdout))
            #expect(Self.count("listed", in: interrupted.stdout) == 20)
            #expect(Self.count("already indexed", in: interrupted.stdout) == 0 && Self.count("failed", in: interrupted.stdout) == 0)
            #expect(done >= 3 && done < 20, "indexed \(done) before the interrupt took effect")
            #expect(done + notStarted == 20, "the source in flight finished; the rest were not started")
            #expect(try Self.sharedIndexes(s3).count == done, "one shared index per source indexed before the interrupt")
            print("index-sources: interrupted after \(done) of 20 sources, \(notStarted) not started")

            // A second SIGINT does not wait for what is in flight. Here every read of a source
            // object hangs (the listing and the clip-bucket lookups pass), so the sources in
            // flight never finish and only the second signal can end the run.
            let stalling = try TestServer.faultProxy(target: s3, defaultMode: "stall:0@/\(FullStackTests.sourceBucket)/", stallSeconds: 120)
            defer { stalling.stop() }
            let impatient = try ToolProcess(["index-sources", "--concurrency", "2", "--progress-interval", "0.3"],
                                            environment: Self.environment(endpoint: stalling.endpoint, work: work))
            #expect(impatient.waitForOutput(timeout: 60) { $0.contains("progress: ") }, "\(impatient.stdout)")
            kill(impatient.process.processIdentifier, SIGINT)
            // The second signal once the first took effect (two signals sent together may merge into one).
            #expect(impatient.waitForStderr("stopping after the", timeout: 30), "the first SIGINT was not acknowledged")
            let signalled = Date()
            kill(impatient.process.processIdentifier, SIGINT)
            let quit = impatient.finish(timeout: 30)
            #expect(quit.status == 130 && quit.stderr.contains("quitting now"), "\(quit.stderr)")
            #expect(Date().timeIntervalSince(signalled) < 2, "the second SIGINT quits at once")
            // Its source reads hung, so it stored nothing; the resumed run counts from here.
            let before = try Self.sharedIndexes(s3).count
            #expect(before == done)

            // Second run, straight to moto, 4 at a time: it skips what the first run did.
            let environment = Self.environment(endpoint: s3.endpoint, work: work)
            let resumed = try ToolProcess(["index-sources"], environment: environment).finish(timeout: 120)
            #expect(resumed.status == 0, "\(resumed.stdout)\n\(resumed.stderr)")
            #expect(Self.count("listed", in: resumed.stdout) == 20)
            #expect(Self.count("already indexed", in: resumed.stdout) == before, "\(resumed.stdout)")
            #expect(Self.count("indexed now", in: resumed.stdout) == 20 - before)
            #expect(Self.count("failed", in: resumed.stdout) == 0)
            #expect(resumed.stdout.contains("1 older uploads"), "the older upload beside episode 0 is left out: \(resumed.stdout)")
            #expect(try Self.sharedIndexes(s3) == Set(planted.map(\.sharedIndexName)),
                    "exactly the 20 sources a node resolves to have a shared index, under the names a node looks for")

            // A third run has nothing to do and reads no source byte.
            let idle = try ToolProcess(["index-sources"], environment: environment).finish(timeout: 60)
            #expect(idle.status == 0 && Self.count("already indexed", in: idle.stdout) == 20 && Self.count("indexed now", in: idle.stdout) == 0)
            #expect(Self.count("bytes read", in: idle.stdout) == 0, "\(idle.stdout)")

            try serveFromSharedIndexes(s3: s3, planted: Array(planted.prefix(4)), work: work)
        }
    }

    /// A node with an empty cache, through the counting proxy: the first clip of each episode
    /// reads about the clip's own bytes from the source, never the whole file.
    func serveFromSharedIndexes(s3: TestServer, planted: [Planted], work: TemporaryDirectory) throws {
        let catalog = work.url.appendingPathComponent("catalog")
        try FileManager.default.createDirectory(at: catalog, withIntermediateDirectories: true)
        let metadata = planted.map { #"{"_id":{"$oid":"\#($0.id)"},"guid":"\#($0.guid)","podcast_name":"Index Feed","episode_title":"Episode","duration_ms":60000}"# }
        let chunks = planted.enumerated().map { n, episode in
            #"{"_id":{"$oid":"\#(String(format: "7b00000000000000000000%02x", n))"},"episode_id":"\#(episode.guid)","feed_slug":"\#(episode.feedSlug)","chunk_index":0,"start_time":0.0,"end_time":15.0,"text":"hello"}"#
        }
        try (metadata.joined(separator: "\n") + "\n").write(to: catalog.appendingPathComponent("episode_metadata.json"), atomically: true, encoding: .utf8)
        try (chunks.joined(separator: "\n") + "\n").write(to: catalog.appendingPathComponent("transcript_chunks_768d.json"), atomically: true, encoding: .utf8)

        let mongo = try TestServer.mongo(dataDirectory: catalog)
        defer { mongo.stop() }
        let proxy = try TestServer.faultProxy(target: s3)
        defer { proxy.stop() }
        var environment = FullStackTests.environment(s3: proxy, mongo: mongo, work: work)
        environment["CLIPPROXY_CACHE_DIR"] = work.path + "/node-cache"
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }

        for episode in planted {
            let expected = try trimFile(episode.fixture.path, startMs: 20_000)
            let seen = try proxyLog(proxy).count
            let response = try fetch("\(server.baseURL)/clips/\(episode.id)/20000")
            #expect(response.status == 200 && response.headers["x-clip-tier"] == "fill", "\(episode.id): \(response.status)")
            #expect(sameBytes(response.body, expected), "\(episode.id): the clip equals clipproxy trim of the file")
            let requests = try proxyLog(proxy).dropFirst(seen)
            let reads = requests.filter { $0.method == "GET" && $0.path.hasPrefix("/\(FullStackTests.sourceBucket)/") && !$0.path.contains("list-type") }
            #expect(!reads.isEmpty && reads.allSatisfy { $0.range != nil }, "\(episode.id): every source read is ranged: \(reads.map { $0.range ?? "whole object" })")
            let bytes = reads.reduce(0) { $0 + min(MultiNodeTests.rangeLength($1.range), 1 << 40) }
            #expect(bytes <= expected.count + 64 << 10 && bytes < episode.fixture.size * 6 / 10,
                    "\(episode.id): read \(bytes) source bytes for a \(expected.count)-byte clip of a \(episode.fixture.size)-byte file")
            print("index-sources: \(episode.fixture.name) clip at 20 s: \(reads.count) source reads, \(bytes) bytes "
                  + "for a \(expected.count)-byte clip of a \(episode.fixture.size)-byte file")
            #expect(requests.contains { $0.method == "GET" && $0.path.hasSuffix(episode.sharedIndexName) },
                    "\(episode.id): the node took the shared frame index from the clip bucket")
        }
    }

    @Test("--feed indexes only that feed; an unknown feed, missing credentials, a missing clip bucket and a bad configuration are clear errors")
    func feedFilterAndErrors() async throws {
        let work = try TemporaryDirectory("index-sources-feed")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            let planted = try Self.plant(s3)
            let environment = Self.environment(endpoint: s3.endpoint, work: work)
            let feedB = planted.filter { $0.feedSlug == "index-feed-b" }
            let only = try ToolProcess(["index-sources", "--feed", "index-feed-b", "--concurrency", "3"], environment: environment).finish(timeout: 120)
            #expect(only.status == 0, "\(only.stdout)\n\(only.stderr)")
            #expect(Self.count("listed", in: only.stdout) == feedB.count && Self.count("indexed now", in: only.stdout) == feedB.count)
            #expect(try Self.sharedIndexes(s3) == Set(feedB.map(\.sharedIndexName)), "only feed b was indexed")

            let unknown = try ToolProcess(["index-sources", "--feed", "no-such-feed"], environment: environment).finish(timeout: 60)
            #expect(unknown.status == 1 && unknown.stderr.contains("no source objects under no-such-feed/"), "\(unknown.stderr)")
            let slash = try ToolProcess(["index-sources", "--feed", "a/b"], environment: environment).finish(timeout: 60)
            #expect(slash.status != 0 && slash.stderr.contains("--feed takes one feed slug"), "\(slash.stderr)")
            let zero = try ToolProcess(["index-sources", "--concurrency", "0"], environment: environment).finish(timeout: 60)
            #expect(zero.status != 0 && zero.stderr.contains("--concurrency must be 1 to 64"), "\(zero.stderr)")

            var anonymous = environment
            for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] { anonymous[name] = nil }
            let noCredentials = try ToolProcess(["index-sources"], environment: anonymous).finish(timeout: 60)
            #expect(noCredentials.status == 1 && noCredentials.stderr.contains("no AWS credentials found"), "\(noCredentials.stderr)")

            var noBucket = environment
            noBucket["CLIPPROXY_S3_CLIP_BUCKET"] = "no-such-clip-bucket"
            let missing = try ToolProcess(["index-sources"], environment: noBucket).finish(timeout: 60)
            #expect(missing.status == 1 && missing.stderr.contains("the clip bucket s3://no-such-clip-bucket"), "\(missing.stderr)")

            let config = work.url.appendingPathComponent("bad.yaml")
            try "source:\n  kind: tape\n".write(to: config, atomically: true, encoding: .utf8)
            let bad = try ToolProcess(["index-sources", "--config", config.path], environment: environment).finish(timeout: 60)
            #expect(bad.status != 0 && bad.stderr.contains("source.kind must be one of"), "\(bad.stderr)")
            #expect(try Self.sharedIndexes(s3) == Set(feedB.map(\.sharedIndexName)), "no failed run wrote anything")
        }
    }

    @Test("A source directory: every episode's source is indexed into the clip directory under the name a node looks for")
    func sourceDirectory() throws {
        let work = try TemporaryDirectory("index-sources-dir")
        defer { work.remove() }
        let source = Fixtures.directory.appendingPathComponent("source").path
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CLIPPROXY_") }
        environment.merge(["CLIPPROXY_SOURCE_KIND": "dir", "CLIPPROXY_SOURCE_DIR": source, "CLIPPROXY_SECOND_TIER_DIR": work.path + "/l2"]) { $1 }
        let run = try ToolProcess(["index-sources"], environment: environment).finish(timeout: 60)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")

        let episodes = try JSONDecoder().decode([FullStackTests.Episode].self,
                                                from: Data(contentsOf: Fixtures.directory.appendingPathComponent("episodes.json")))
        var expected = Set<String>()
        for key in episodes.compactMap(\.source_key) {
            var info = stat()
            guard stat("\(source)/\(key)", &info) == 0 else { continue }  // the hour episode is optional
            expected.insert(SharedFrameIndex.name("dir:\(key)#\(Posix.fileIdentity(info))"))
        }
        let stored = Set(try FileManager.default.contentsOfDirectory(atPath: work.path + "/l2/" + SharedFrameIndex.prefix)
            .map { SharedFrameIndex.prefix + $0 })
        #expect(stored == expected, "the trailer and decoys beside the episodes are not indexed")
        #expect(Self.count("indexed now", in: run.stdout) == expected.count)
    }
}

/// A clipproxy subcommand run as a child process whose standard output can be watched while it runs.
final class ToolProcess: @unchecked Sendable {
    let process = Process()
    private let condition = NSCondition()
    private var output = ""
    private var closed = false
    private let stderrFile: URL

    init(_ arguments: [String], environment: [String: String]) throws {
        process.executableURL = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
        process.arguments = arguments
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("index-sources-\(UUID().uuidString).stderr")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        Thread { [self] in
            while true {
                let chunk = pipe.fileHandleForReading.availableData
                condition.lock()
                if chunk.isEmpty { closed = true } else { output += String(decoding: chunk, as: UTF8.self) }
                condition.broadcast()
                condition.unlock()
                if chunk.isEmpty { return }
            }
        }.start()
    }

    var stdout: String {
        condition.lock()
        defer { condition.unlock() }
        return output
    }

    /// Waits until the output so far satisfies `ready`; false when it ended or the time ran out first.
    func waitForOutput(timeout: TimeInterval, _ ready: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !ready(output) {
            if closed || !condition.wait(until: deadline) { return ready(output) }
        }
        return true
    }

    /// Waits for the exit (SIGKILL after `timeout`) and returns what it printed.
    /// Polls the standard error file until it contains `text`.
    func waitForStderr(_ text: String, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if ((try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "").contains(text) { return true }
            usleep(20_000)
        }
        return false
    }

    func finish(timeout: TimeInterval) -> (status: Int32, stdout: String, stderr: String) {
        _ = waitForOutput(timeout: timeout) { _ in false }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let stderr = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: stderrFile)
        return (process.terminationStatus, stdout, stderr)
    }
}
