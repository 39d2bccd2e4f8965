import Foundation
import Testing
import TestSupport
@testable import Upstream

/// Issue 12, items 1-5, on real parts: a tmpfs that really fills up, moto with a re-uploaded
/// object and a fault proxy that refuses reads, the MongoDB wire server stopped past a short
/// `catalog.ttl_s`, and purge against the S3 clip bucket and the clip directory. Every clip is
/// compared byte for byte with `clipproxy trim` of the audio it must come from.
/// Serialized: several tests measure response times, and each starts its own servers.
@Suite("Fault tolerance: disk full, refused sources, re-uploaded sources, catalog outage, purge", .serialized)
struct FaultToleranceTests {
    static let episodeA = ServerTests.episode
    static let sourceKeyA = ServerTests.sourceKey
    /// Episode A's clips in the seed key layout of the clip bucket / clip directory.
    static let clipPrefixA = "the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/"
    /// An episode the catalog test never requests before MongoDB goes down.
    static let episodeB = "685ba776e4f9ec2f0756267b"
    /// The bystander of the purge test: its clips must survive another episode's purge.
    static let episodeC = "685ba776e4f9ec2f0756267c"
    static let clipPrefixC = "hex-guid-radio/5d41402abc4b2a76b9719d91/"

    static func sourcePath(_ key: String) -> String { Fixtures.directory.appendingPathComponent("source/\(key)").path }

    // MARK: - 1. The local store never fails a response

    @Test("Cache disk full (1 MiB tmpfs): every cold clip is served whole and exact, not cached, counted; no partial files; caching resumes once space is back",
          .enabled(if: TmpfsMount.isAllowed, "mount -t tmpfs is refused here (needs root or CAP_SYS_ADMIN): the cache-disk-full test cannot run"))
    func cacheDiskFull() throws {
        let work = try TemporaryDirectory("disk-full")
        defer { work.remove() }
        let disk = try TmpfsMount(path: work.path + "/disk", size: "1m")
        defer { disk.unmount() }
        var environment = EmbeddedServer(work: work).environment
        let cacheDir = disk.path + "/cache"
        environment["CLIPPROXY_CACHE_DIR"] = cacheDir
        // Declared after the mount: it stops before the tmpfs is unmounted.
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }
        let source = Self.sourcePath(Self.sourceKeyA)

        // Leave room for LMDB's pages but not for one clip (30 s at 128 kbit/s = 480 kB), with
        // nothing evictable: every fill now meets ENOSPC, whatever the store does to make room.
        let filler = disk.path + "/filler"
        let fillerBytes = disk.availableBytes - 192 * 1024
        try #require(fillerBytes > 0, "the 1 MiB tmpfs has \(disk.availableBytes) bytes free after start-up")
        try Data(count: Int(fillerBytes)).write(to: URL(fileURLWithPath: filler))

        for start in stride(from: 0, through: 33_000, by: 3_000) {
            let expected = try trimFile(source, startMs: start)
            guard let response = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/\(start)", "cold clip \(start) on a full disk") else { continue }
            #expect(response.status == 200 && response.headers["x-clip-tier"] == "fill", "clip \(start): \(response.status) \(response.headers["x-clip-tier"] ?? "-")")
            #expect(response.headers["content-length"] == String(expected.count))
            #expect(sameBytes(response.body, expected), "clip \(start): \(response.body.count) of \(expected.count) bytes, or different bytes")
        }
        let metrics = try metricsText(server)
        let bypassed = prometheusValue(metrics, "clipproxy_cache_bypass_total", labels: ["reason": "disk_full"])
        #expect((bypassed ?? 0) > 0, "clipproxy_cache_bypass_total{reason=\"disk_full\"} = \(bypassed.map { "\($0)" } ?? "absent")")
        // Logged once per cause, not once per clip.
        let bypassLogs = server.log.components(separatedBy: "local store bypassed").count - 1
        #expect((1...5).contains(bypassLogs), "\"local store bypassed\" logged \(bypassLogs) times for 12 bypassed fills")
        #expect(Self.partialFiles(cacheDir).isEmpty, "half-written files left: \(Self.partialFiles(cacheDir))")

        // Space is back: the store caches again without a restart.
        try FileManager.default.removeItem(atPath: filler)
        let fresh = "\(server.baseURL)/clips/\(Self.episodeA)/34500"
        let expectedFresh = try trimFile(source, startMs: 34_500)
        let finishedBefore = server.log.components(separatedBy: "fill finished").count - 1
        let cold = fetchRecording(fresh, "cold clip 34500 after space came back")
        #expect(cold?.status == 200 && cold?.headers["x-clip-tier"] == "fill" && sameBytes(cold?.body ?? [], expectedFresh))
        #expect(server.waitForLog("fill finished", count: finishedBefore + 1, timeout: 15))
        #expect(server.waitForLog("local store writes resumed", timeout: 5), "no \"local store writes resumed\" in the log")
        let warm = fetchRecording(fresh, "clip 34500 again")
        #expect(warm?.headers["x-clip-tier"] == "l1_hit", "the clip was not cached once space was back: \(warm?.headers["x-clip-tier"] ?? "-")")
        #expect(sameBytes(warm?.body ?? [], expectedFresh))

        // Real pressure, no filler: two more clips do not fit beside the cached one. Each is
        // served exact, and the store makes room (evicts) rather than bypassing for ever.
        var cachedUnderPressure = 0
        for start in [37_500, 40_000] {
            let expected = try trimFile(source, startMs: start)
            let url = "\(server.baseURL)/clips/\(Self.episodeA)/\(start)"
            let before = server.log.components(separatedBy: "fill finished").count - 1
            let first = fetchRecording(url, "clip \(start) under pressure")
            #expect(first?.status == 200 && sameBytes(first?.body ?? [], expected), "clip \(start) under pressure")
            _ = server.waitForLog("fill finished", count: before + 1, timeout: 15)
            let again = fetchRecording(url, "clip \(start) again under pressure")
            #expect(again?.status == 200 && sameBytes(again?.body ?? [], expected), "clip \(start) again under pressure")
            if again?.headers["x-clip-tier"] == "l1_hit" { cachedUnderPressure += 1 }
        }
        #expect(cachedUnderPressure >= 1, "under pressure the store evicted nothing to make room: neither clip was cached")
        #expect(Self.partialFiles(cacheDir).isEmpty, "half-written files left: \(Self.partialFiles(cacheDir))")

        #expect(server.stop() == 0)
        let verify = try runClipProxy(["index", "verify"], environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        #expect(verify.status == 0, "index verify after the disk-full run: \(verify.stdout) \(verify.stderr)")
    }

    @Test("A stored clip whose file was deleted or truncated behind the index is cut again, exact: never a 500, never a short hit")
    func clipFileGoneBehindTheIndex() throws {
        let work = try TemporaryDirectory("file-gone")
        defer { work.remove() }
        let environment = EmbeddedServer(work: work).environment
        let cacheDir = environment["CLIPPROXY_CACHE_DIR"]!
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }  // also when a #require below throws
        let source = Self.sourcePath(Self.sourceKeyA)
        for (start, damage) in [(3_000, "deleted"), (6_000, "truncated")] {
            let expected = try trimFile(source, startMs: start)
            let url = "\(server.baseURL)/clips/\(Self.episodeA)/\(start)"
            let before = server.log.components(separatedBy: "fill finished").count - 1
            #expect(sameBytes(fetchRecording(url, "clip \(start)")?.body ?? [], expected))
            #expect(server.waitForLog("fill finished", count: before + 1, timeout: 15))
            #expect(fetchRecording(url, "clip \(start) stored")?.headers["x-clip-tier"] == "l1_hit")
            let blobs = try FileManager.default.subpathsOfDirectory(atPath: cacheDir + "/blobs")
                .map { cacheDir + "/blobs/" + $0 }.filter { path in
                    var isDirectory: ObjCBool = false
                    return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
                }
            // The newest blob is this clip's.
            let blob = try #require(blobs.max { (try? FileManager.default.attributesOfItem(atPath: $0)[.modificationDate] as? Date) ?? .distantPast
                                                 < (try? FileManager.default.attributesOfItem(atPath: $1)[.modificationDate] as? Date) ?? .distantPast })
            if damage == "deleted" { try FileManager.default.removeItem(atPath: blob) } else { truncate(blob, 1000) }
            // Cut again, or copied from the clip directory (the second tier has it by now).
            let again = fetchRecording(url, "clip \(start) after its file was \(damage)")
            #expect(again?.status == 200 && ["fill", "l2_hit"].contains(again?.headers["x-clip-tier"] ?? "-"),
                    "clip \(start), file \(damage): \(again?.status ?? 0) \(again?.headers["x-clip-tier"] ?? "-")")
            #expect(sameBytes(again?.body ?? [], expected), "clip \(start), file \(damage): not the clip's bytes")
            // And stored again: an l1_hit within a few seconds (the copy commits after the response).
            var healed: (status: Int, headers: [String: String], body: [UInt8])?
            for _ in 0..<50 {
                healed = fetchRecording(url, "clip \(start) after the refill")
                if healed?.headers["x-clip-tier"] == "l1_hit" { break }
                usleep(100_000)
            }
            #expect(healed?.headers["x-clip-tier"] == "l1_hit" && sameBytes(healed?.body ?? [], expected),
                    "clip \(start), file \(damage): not stored again (\(healed?.headers["x-clip-tier"] ?? "-"))")
        }
        #expect(server.stop() == 0)
        let verify = try runClipProxy(["index", "verify"], environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        #expect(verify.status == 0, "index verify after the refills: \(verify.stdout) \(verify.stderr)")
    }

    /// Temporary clip files of the store (`<cache>/tmp/*.partial`) that outlived their fill.
    static func partialFiles(_ cacheDir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: cacheDir + "/tmp")) ?? []).filter { $0.hasSuffix(".partial") }
    }

    // MARK: - 2. No 200 before the source has answered

    @Test("A source read refused before any byte (403, 404, 500 after retries, reset) is a JSON error, never a 200 with a short body; afterwards the clip is exact")
    func sourceRefusals() async throws {
        try await withS3Stack("refusals", proxied: true) { stack in
            let server = stack.server, proxy = try #require(stack.proxy)
            let source = Self.sourcePath(Self.sourceKeyA)
            // Resolve and index the episode while S3 behaves, so the faults hit the clip's own reads.
            let first = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/0", "the first clip")
            #expect(try first?.status == 200 && sameBytes(first?.body ?? [], trimFile(source, startMs: 0)))
            #expect(server.waitForLog("fill finished"))

            let cases: [(mode: String, start: Int, range: String?)] = [
                ("403", 10_000, nil), ("404", 15_000, nil), ("500", 20_000, nil), ("reset:0", 25_000, nil),
                // A cold Range request reads the source for just its bytes: same rule for its 206.
                ("500", 30_000, "bytes=100000-100999"),
            ]
            for fault in cases {
                let seen = try proxyLog(proxy).count
                // Every S3 request fails from now on (the clip-bucket lookup too: it falls back to the source).
                try setProxyPlan(proxy, #"{"plan": [], "default": "\#(fault.mode)"}"#)
                let label = "source \(fault.mode) on clip \(fault.start)\(fault.range.map { " (\($0))" } ?? "")"
                var headers: [(name: String, value: String)] = []
                if let range = fault.range { headers.append(("Range", range)) }
                do {
                    // Raw socket: the status line and body exactly as sent; a body shorter than its
                    // Content-Length throws here.
                    let response = try RawHTTPClient.send(method: "GET", path: "/clips/\(Self.episodeA)/\(fault.start)", headers: headers,
                                                          port: stack.port, timeout: 120)
                    #expect((400..<600).contains(response.status), "\(label): answered \(response.status) with \(response.body.count) body bytes")
                    #expect(response.header("Content-Type")?.hasPrefix("application/json") == true, "\(label): Content-Type \(response.header("Content-Type") ?? "-")")
                    #expect(jsonObject(response.body)["error"] is String, "\(label): body \(String(decoding: response.body.prefix(300), as: UTF8.self))")
                } catch {
                    Issue.record("\(label): the response broke on the wire: \(error)")
                }
                let reads = try proxyLog(proxy).dropFirst(seen).filter { $0.method == "GET" && $0.path.hasPrefix("/\(FullStackTests.sourceBucket)/") }
                #expect(reads.contains { $0.mode == fault.mode }, "\(label): no source GET met the fault (\(reads.map { "\($0.mode) \($0.path)" }))")
                try setProxyPlan(proxy, #"{"plan": [], "default": "pass"}"#)
            }

            // The source behaves again: nothing of the failures was kept, every clip is exact.
            for fault in cases {
                let expected = try trimFile(source, startMs: fault.start)
                let response = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/\(fault.start)", "clip \(fault.start) after the fault")
                #expect(response?.status == 200 && sameBytes(response?.body ?? [], expected),
                        "clip \(fault.start) after \(fault.mode): \(response?.status ?? 0), \(response?.body.count ?? 0) of \(expected.count) bytes")
            }
            let metrics = try metricsText(server)
            let aborted = prometheusValue(metrics, "clipproxy_responses_aborted_total") ?? 0
            #expect(aborted == 0, "no body was cut after its headers, yet clipproxy_responses_aborted_total = \(aborted)")
        }
    }

    // MARK: - 3. A re-uploaded source is noticed and served

    @Test("S3: the source is re-uploaded (same key, other audio): a new clip is B's audio in the same request; the earlier clip becomes B's too")
    func reuploadedSourceS3() async throws {
        try await withS3Stack("reupload") { stack in
            let server = stack.server
            let fileA = Self.sourcePath(Self.sourceKeyA)
            // Another encoding (VBR joint stereo, 68.5 s): nothing of A's frame index fits it.
            let fileB = try Fixtures.named("m1_44k_joint_vbr_v2").path
            let early = "\(server.baseURL)/clips/\(Self.episodeA)/5000"
            let before = fetchRecording(early, "clip 5000 of A")
            #expect(try before?.status == 200 && sameBytes(before?.body ?? [], trimFile(fileA, startMs: 5_000)))
            // Its copy in the clip bucket too, so the old clip is in every tier when the source changes.
            #expect(server.waitForLog("second tier copy finished", timeout: 30))

            _ = try stack.client.putObject(bucket: FullStackTests.sourceBucket, key: Self.sourceKeyA, fileAt: fileB, contentType: "audio/mpeg")
            let expectedB = try trimFile(fileB, startMs: 20_000)
            #expect(!sameBytes(expectedB, try trimFile(fileA, startMs: 20_000)), "fixtures A and B must differ for this test to mean anything")
            let changed = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/20000", "the first clip after the re-upload")
            #expect(changed?.status == 200, "the first request after the re-upload answered \(changed?.status ?? 0)")
            #expect(changed?.headers["content-length"] == String(expectedB.count))
            #expect(sameBytes(changed?.body ?? [], expectedB), "the first clip after the re-upload is not trim of the new audio (\(changed?.body.count ?? 0) bytes)")

            let metrics = try metricsText(server)
            #expect((prometheusValue(metrics, "clipproxy_source_changed_total") ?? 0) >= 1, "clipproxy_source_changed_total did not count the change")

            // A cold Range request on the new audio.
            let expectedPart = try trimFile(fileB, startMs: 35_000)
            let part = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/35000", "a Range of a new clip", headers: [("Range", "bytes=1000-1999")])
            #expect(part?.status == 206 && sameBytes(part?.body ?? [], Array(expectedPart[1000..<2000])), "a cold Range after the change is not B's bytes")

            // The clip made from A before the change: what was derived from A is dropped, so it
            // is cut again from B (allowing a moment for a background drop).
            let expectedEarlyB = try trimFile(fileB, startMs: 5_000)
            var latest: (status: Int, headers: [String: String], body: [UInt8])?
            let deadline = Date().addingTimeInterval(10)
            repeat {
                latest = fetchRecording(early, "clip 5000 after the re-upload")
                if sameBytes(latest?.body ?? [], expectedEarlyB) { break }
                usleep(500_000)
            } while Date() < deadline
            #expect(latest?.status == 200 && sameBytes(latest?.body ?? [], expectedEarlyB),
                    "clip 5000 still serves the old audio after the change (tier \(latest?.headers["x-clip-tier"] ?? "-"))")
        }
    }

    @Test("Source directory: the episode's file is replaced (new audio, same path): a new clip is the new audio in the same request")
    func reuploadedSourceDirectory() throws {
        let work = try TemporaryDirectory("reupload-dir")
        defer { work.remove() }
        // A private copy of episode A's source folder, so the fixtures stay untouched.
        let sourceRoot = work.path + "/source"
        let fileA = sourceRoot + "/" + Self.sourceKeyA
        try FileManager.default.createDirectory(atPath: (fileA as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.sourcePath(Self.sourceKeyA), toPath: fileA)
        var environment = EmbeddedServer(work: work).environment
        environment["CLIPPROXY_SOURCE_DIR"] = sourceRoot
        let server = try ClipProxyProcess(environment: environment)
        defer { server.stop() }

        let oldBytes = try trimFile(fileA, startMs: 5_000)
        let before = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/5000", "clip 5000 of the old file")
        #expect(before?.status == 200 && sameBytes(before?.body ?? [], oldBytes))
        #expect(server.waitForLog("fill finished"))

        // Replaced the way a deploy does it: written beside, renamed over.
        let fileB = try Fixtures.named("m1_44k_id3").path
        try FileManager.default.copyItem(atPath: fileB, toPath: fileA + ".new")
        #expect(rename(fileA + ".new", fileA) == 0)
        let expectedB = try trimFile(fileB, startMs: 20_000)
        let changed = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/20000", "the first clip after the replacement")
        #expect(changed?.status == 200 && sameBytes(changed?.body ?? [], expectedB),
                "the first clip after the replacement is not the new audio (\(changed?.status ?? 0), \(changed?.body.count ?? 0) of \(expectedB.count) bytes)")
        let again = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/5000", "clip 5000 after the replacement")
        #expect(sameBytes(again?.body ?? [], try trimFile(fileB, startMs: 5_000)), "clip 5000 still serves the old file (tier \(again?.headers["x-clip-tier"] ?? "-"))")
    }

    // MARK: - 4. Catalog TTL and stale-if-error

    @Test("MongoDB down past catalog.ttl_s: known episodes keep playing exact clips (counted stale), a never-seen one is 503 + Retry-After within 3 s; back up, it resolves")
    func catalogOutagePastTTL() async throws {
        try await withS3Stack("catalog-ttl", environment: ["CLIPPROXY_CATALOG_TTL_S": "1"]) { stack in
            let server = stack.server
            let fileA = Self.sourcePath(Self.sourceKeyA)
            let stored = "\(server.baseURL)/clips/\(Self.episodeA)/0"
            let played = fetchRecording(stored, "clip 0 while MongoDB is up")
            #expect(try played?.status == 200 && sameBytes(played?.body ?? [], trimFile(fileA, startMs: 0)))
            #expect(server.waitForLog("fill finished"))

            stack.mongo.stop()
            try await Task.sleep(for: .milliseconds(2500))  // well past the 1 s TTL

            for (start, what) in [(0, "the stored clip"), (15_000, "a new clip")] {
                let expected = try trimFile(fileA, startMs: start)
                let started = Date()
                let response = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/\(start)", "\(what) with MongoDB down")
                let elapsed = Date().timeIntervalSince(started)
                #expect(response?.status == 200 && sameBytes(response?.body ?? [], expected),
                        "\(what) of a known episode with MongoDB down: \(response?.status ?? 0), \(response?.body.count ?? 0) of \(expected.count) bytes")
                #expect(elapsed < 6, "\(what) took \(elapsed) s with MongoDB down (waiting on the catalog?)")
            }
            let metrics = try metricsText(server)
            #expect((prometheusValue(metrics, "clipproxy_catalog_stale_total") ?? 0) > 0, "clipproxy_catalog_stale_total not counted")
            #expect(server.log.contains("catalog unavailable; serving the last known resolution"))

            let started = Date()
            let unknown = fetchRecording("\(server.baseURL)/clips/\(Self.episodeB)/0", "a never-seen episode with MongoDB down")
            let elapsed = Date().timeIntervalSince(started)
            #expect(unknown?.status == 503, "never-seen episode with MongoDB down: \(unknown?.status ?? 0)")
            #expect(unknown?.headers["retry-after"] != nil, "no Retry-After on the 503")
            #expect(jsonObject(unknown?.body ?? [])["error"] is String)
            #expect(elapsed < 3, "the 503 took \(elapsed) s")

            // MongoDB back where the client points: the episode resolves again.
            let restarted = try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"), port: stack.mongo.port)
            defer { restarted.stop() }
            let keyB = try #require(stack.episodes.first { $0._id == Self.episodeB }?.source_key)
            let expectedB = try trimFile(Self.sourcePath(keyB), startMs: 0)
            var back: (status: Int, headers: [String: String], body: [UInt8])?
            let deadline = Date().addingTimeInterval(20)
            repeat {
                back = fetchRecording("\(server.baseURL)/clips/\(Self.episodeB)/0", "the episode once MongoDB is back")
                if back?.status == 200 { break }
                usleep(500_000)
            } while Date() < deadline
            #expect(back?.status == 200 && sameBytes(back?.body ?? [], expectedB),
                    "after MongoDB came back: \(back?.status ?? 0), \(String(decoding: (back?.body ?? []).prefix(200), as: UTF8.self))")

            // The known episode's resolution is refreshed now that the catalog answers: soon a
            // request past the TTL is no longer served stale.
            var refreshed = false
            let refreshDeadline = Date().addingTimeInterval(10)
            repeat {
                try await Task.sleep(for: .milliseconds(1200))  // past the TTL again
                let staleBefore = prometheusValue(try metricsText(server), "clipproxy_catalog_stale_total") ?? 0
                let again = fetchRecording(stored, "the stored clip once MongoDB is back")
                #expect(try again?.status == 200 && sameBytes(again?.body ?? [], trimFile(fileA, startMs: 0)))
                refreshed = (prometheusValue(try metricsText(server), "clipproxy_catalog_stale_total") ?? 0) == staleBefore
            } while !refreshed && Date() < refreshDeadline
            #expect(refreshed, "with MongoDB back, every request for the known episode was still served from a stale resolution")
        }
    }

    // MARK: - 5. Purge

    @Test("purge --second-tier: the episode's clips leave the clip bucket and the local store (others stay), also those this node never stored; the next request is cut again, exact")
    func purgeWithClipBucket() async throws {
        try await withS3Stack("purge-s3") { stack in
            let server = stack.server
            let fileA = Self.sourcePath(Self.sourceKeyA)
            let bucket = ClipBucketTests.clipBucket
            for start in [0, 30_000] {
                let response = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/\(start)", "clip \(start) before the purge")
                #expect(try response?.status == 200 && sameBytes(response?.body ?? [], trimFile(fileA, startMs: start)))
            }
            // Another episode's clip, which the purge must leave alone.
            let keyC = try #require(stack.episodes.first { $0._id == Self.episodeC }?.source_key)
            let expectedC = try trimFile(Self.sourcePath(keyC), startMs: 0)
            #expect(sameBytes(fetchRecording("\(server.baseURL)/clips/\(Self.episodeC)/0", "episode C")?.body ?? [], expectedC))
            #expect(server.waitForLog("second tier copy finished", count: 3, timeout: 30))
            #expect(try stack.client.listObjectsV2(bucket: bucket, prefix: Self.clipPrefixA).count == 2)
            #expect(try stack.client.listObjectsV2(bucket: bucket, prefix: Self.clipPrefixC).count == 1)

            let purge = try runClipProxy(["purge", Self.episodeA, "--second-tier", "--admin", server.adminListener])
            #expect(purge.status == 0, "clipproxy purge: \(purge.stdout) \(purge.stderr)")
            let left = try stack.client.listObjectsV2(bucket: bucket, prefix: Self.clipPrefixA).map(\.key)
            #expect(left.isEmpty, "clip bucket objects of the purged episode: \(left)")
            #expect(try stack.client.listObjectsV2(bucket: bucket, prefix: Self.clipPrefixC).count == 1, "another episode's clip was purged")

            let recut = fetchRecording("\(server.baseURL)/clips/\(Self.episodeA)/0", "clip 0 after the purge")
            #expect(recut?.headers["x-clip-tier"] == "fill", "after the purge the clip came from \(recut?.headers["x-clip-tier"] ?? "-")")
            #expect(try recut?.status == 200 && sameBytes(recut?.body ?? [], trimFile(fileA, startMs: 0)))
            #expect(fetchRecording("\(server.baseURL)/clips/\(Self.episodeC)/0", "episode C after the purge")?.headers["x-clip-tier"] == "l1_hit",
                    "another episode's local clip was purged")
            #expect(server.waitForLog("second tier copy finished", count: 4, timeout: 30))

            // Another node (or this one after losing its disk) shares the bucket but has none of
            // the episode's clips locally: the purge must still empty the bucket of them.
            server.stop()
            try FileManager.default.removeItem(atPath: stack.work.path + "/cache")
            let node = try ClipProxyProcess(environment: server.environment)
            defer { node.stop() }
            let answer = try adminFetch(node, "/admin/purge/\(Self.episodeA)?second_tier=1")
            let json = jsonObject(answer.body)
            #expect(answer.status == 200 && answer.headers["content-type"]?.hasPrefix("application/json") == true,
                    "POST /admin/purge: \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
            #expect(json["episode_id"] as? String == Self.episodeA)
            #expect(json["clips_removed"] as? Int == 0 && json["second_tier_removed"] as? Int == 1, "\(json)")
            let leftByNode = try stack.client.listObjectsV2(bucket: bucket, prefix: Self.clipPrefixA).map(\.key)
            #expect(leftByNode.isEmpty, "a node without local copies left the episode's clips in the bucket: \(leftByNode)")
            let fromNode = fetchRecording("\(node.baseURL)/clips/\(Self.episodeA)/0", "clip 0 on the other node after its purge")
            #expect(fromNode?.headers["x-clip-tier"] == "fill", "after the purge the clip came from \(fromNode?.headers["x-clip-tier"] ?? "-")")
            #expect(try fromNode?.status == 200 && sameBytes(fromNode?.body ?? [], trimFile(fileA, startMs: 0)))

            let unknown = try adminFetch(node, "/admin/purge/ffffffffffffffffffffffff")
            #expect(unknown.status == 404 && jsonObject(unknown.body)["error"] is String,
                    "purge of an unknown episode: \(unknown.status) \(String(decoding: unknown.body, as: UTF8.self))")
        }
    }

    @Test("purge with the clip directory: without --second-tier the next hit comes from the directory; with it the files go; the public port answers 404 and removes nothing")
    func purgeWithClipDirectory() throws {
        let work = try TemporaryDirectory("purge-dir")
        defer { work.remove() }
        let server = try ClipProxyProcess(environment: EmbeddedServer(work: work).environment)
        defer { server.stop() }
        let base = server.baseURL
        let fileA = Self.sourcePath(Self.sourceKeyA)
        let clipFiles = [0, 30_000].map { work.path + "/l2/" + Self.clipPrefixA + "\($0)-\($0 + 30_000).mp3" }

        for start in [0, 30_000] {
            let response = fetchRecording("\(base)/clips/\(Self.episodeA)/\(start)", "clip \(start) before the purge")
            #expect(try response?.status == 200 && sameBytes(response?.body ?? [], trimFile(fileA, startMs: start)))
        }
        #expect(server.waitForLog("second tier copy finished", count: 2, timeout: 30))
        for file in clipFiles { #expect(FileManager.default.fileExists(atPath: file), "\(file) is not in the clip directory") }

        // The public port has no admin endpoints, whoever asks (behind a local proxy everyone is 127.0.0.1).
        let refused = try fetch("\(base)/admin/purge/\(Self.episodeA)?second_tier=1", method: "POST")
        #expect(refused.status == 404 && jsonObject(refused.body)["error"] as? String == "no_such_endpoint",
                "purge on the public port: \(refused.status) \(String(decoding: refused.body, as: UTF8.self))")
        #expect(fetchRecording("\(base)/clips/\(Self.episodeA)/0", "clip 0 after a refused purge")?.headers["x-clip-tier"] == "l1_hit",
                "a refused purge removed the local clip")
        for file in clipFiles { #expect(FileManager.default.fileExists(atPath: file), "a refused purge removed \(file)") }

        // Local only: the clip directory still has the clip, so it comes from there, exact.
        let local = try runClipProxy(["purge", Self.episodeA, "--admin", server.adminListener])
        #expect(local.status == 0, "clipproxy purge: \(local.stdout) \(local.stderr)")
        for file in clipFiles { #expect(FileManager.default.fileExists(atPath: file), "purge without --second-tier removed \(file)") }
        let fromDirectory = fetchRecording("\(base)/clips/\(Self.episodeA)/0", "clip 0 after a local purge")
        #expect(fromDirectory?.headers["x-clip-tier"] == "l2_hit", "after a local purge the clip came from \(fromDirectory?.headers["x-clip-tier"] ?? "-")")
        #expect(sameBytes(fromDirectory?.body ?? [], try trimFile(fileA, startMs: 0)))
        _ = server.waitForLog("local copy from the second tier finished", timeout: 10)

        let everywhere = try runClipProxy(["purge", Self.episodeA, "--second-tier", "--admin", server.adminListener])
        #expect(everywhere.status == 0, "clipproxy purge --second-tier: \(everywhere.stdout) \(everywhere.stderr)")
        for file in clipFiles { #expect(!FileManager.default.fileExists(atPath: file), "purge --second-tier left \(file)") }
        let recut = fetchRecording("\(base)/clips/\(Self.episodeA)/30000", "clip 30000 after purge --second-tier")
        #expect(recut?.headers["x-clip-tier"] == "fill", "after purge --second-tier the clip came from \(recut?.headers["x-clip-tier"] ?? "-")")
        #expect(try recut?.status == 200 && sameBytes(recut?.body ?? [], trimFile(fileA, startMs: 30_000)))

        let unknown = try runClipProxy(["purge", "ffffffffffffffffffffffff", "--admin", server.adminListener])
        #expect(unknown.status != 0, "purge of an unknown episode succeeded: \(unknown.stdout)")
    }
}

// MARK: - Helpers

/// `clipproxy trim FILE --start-ms S -o OUT`: the reference bytes for a clip of `file`.
func trimFile(_ file: String, startMs: Int, durationMs: Int = 30_000) throws -> [UInt8] {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("trim-\(UUID().uuidString).mp3").path
    defer { try? FileManager.default.removeItem(atPath: out) }
    let result = try runClipProxy(["trim", file, "--start-ms", String(startMs), "--duration-ms", String(durationMs), "-o", out])
    guard result.status == 0 else { throw TestSetupError("clipproxy trim \(file) at \(startMs) failed: \(result.stderr)") }
    return try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
}

/// A GET through libcurl; a transfer that breaks (a body cut short after its headers) is
/// recorded as a test failure naming `what`, and gives nil.
func fetchRecording(_ url: String, _ what: String, headers: [(name: String, value: String)] = []) -> (status: Int, headers: [String: String], body: [UInt8])? {
    do {
        return try fetch(url, headers: headers)
    } catch {
        Issue.record("\(what): the transfer broke: \(error)")
        return nil
    }
}

func metricsText(_ server: ClipProxyProcess) throws -> String {
    String(decoding: try fetch(server.baseURL + "/metrics").body, as: UTF8.self)
}

func proxyLog(_ proxy: TestServer) throws -> [FaultProxyRequest] {
    try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body)
}

/// moto (source bucket seeded, clip bucket created), the MongoDB wire server, optionally the
/// fault proxy (with 403/404) in front of S3, and clipproxy serving them.
struct S3Stack {
    let server: ClipProxyProcess
    let s3: TestServer
    let mongo: TestServer
    let proxy: TestServer?
    let work: TemporaryDirectory
    let client: S3Client
    let episodes: [FullStackTests.Episode]
    var port: Int { Int(server.baseURL.split(separator: ":").last ?? "") ?? 0 }
}

func withS3Stack(_ label: String, proxied: Bool = false, environment extra: [String: String] = [:],
                 _ body: (S3Stack) async throws -> Void) async throws {
    let work = try TemporaryDirectory(label)
    defer { work.remove() }
    try await withTestServer(try TestServer.s3()) { s3 in
        try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
            let episodes = try FullStackTests.seedBucket(s3)
            let client = try ClipBucketTests().clipBucketClient(s3)
            _ = try client.createBucket(ClipBucketTests.clipBucket)
            let proxy = proxied ? try TestServer.refusingFaultProxy(target: s3) : nil
            defer { proxy?.stop() }
            var environment = FullStackTests.environment(s3: s3, mongo: mongo, work: work)
            if let proxy { environment["CLIPPROXY_S3_ENDPOINT"] = proxy.endpoint }
            environment.merge(extra) { $1 }
            let server = try ClipProxyProcess(environment: environment)
            defer { server.stop() }
            try await body(S3Stack(server: server, s3: s3, mongo: mongo, proxy: proxy, work: work, client: client, episodes: episodes))
        }
    }
}
