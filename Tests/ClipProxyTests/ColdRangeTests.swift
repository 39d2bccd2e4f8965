import Foundation
import Testing
import TestSupport
@testable import Upstream

@Suite("Range requests on cold clips read only what they ask for")
struct ColdRangeTests {
    /// Bytes of source-bucket GETs the proxy saw after the first `skip` requests.
    static func sourceBytes(_ proxy: TestServer, after skip: Int) throws -> (requests: Int, bytes: Int, total: Int) {
        let log = try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body)
        let reads = log.dropFirst(skip).filter { $0.method == "GET" && $0.path.hasPrefix("/\(FullStackTests.sourceBucket)/") && !$0.path.contains("list-type") }
        return (reads.count, reads.reduce(0) { $0 + MultiNodeTests.rangeLength($1.range) }, log.count)
    }

    @Test("A cold Range request reads about its own bytes from the source, caches nothing, and matches the whole clip")
    func coldRanges() async throws {
        try await withProxiedStack("cold-range") { server, proxy, _, _ in
            // Resolve and index the episode with another clip first.
            #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/0").status == 200)
            #expect(server.waitForLog("fill finished"))
            let expected = try trimmed(ServerTests.sourceKey, startMs: 20_000)
            let url = "\(server.baseURL)/clips/\(ServerTests.episode)/20000"
            var seen = try Self.sourceBytes(proxy, after: 0).total

            let middle = try fetch(url, headers: [("Range", "bytes=200000-200999")])
            #expect(middle.status == 206 && middle.headers["x-clip-tier"] == "part")
            #expect(middle.headers["content-range"] == "bytes 200000-200999/\(expected.count)")
            #expect(sameBytes(middle.body, Array(expected[200_000..<201_000])))
            var reads = try Self.sourceBytes(proxy, after: seen)
            #expect(reads.requests == 1 && reads.bytes <= 1000 + 2 * 1045, "read \(reads.bytes) bytes for a 1000-byte range")
            seen = reads.total

            // The Info frame is made from the plan: no source byte at all.
            let first = try fetch(url, headers: [("Range", "bytes=0-1")])
            #expect(first.status == 206 && sameBytes(first.body, Array(expected[0..<2])))
            reads = try Self.sourceBytes(proxy, after: seen)
            #expect(reads.requests == 0, "bytes=0-1 read the source")

            #expect(!server.log.contains("fill started", count: 2), "no part request started a fill")
            // Several ranges: one multipart answer, each part exact, from a fill that caches the
            // clip (separate uncached reads per range, every time, would invite amplification).
            let multi = try fetch(url, headers: [("Range", "bytes=0-99,300000-300099,-50")])
            #expect(multi.status == 206 && multi.headers["content-type"]?.hasPrefix("multipart/byteranges") == true)
            #expect(multi.headers["x-clip-tier"] == "fill")
            for part in [expected[0..<100], expected[300_000..<300_100], expected[(expected.count - 50)...]] {
                #expect(multi.body.firstRange(of: Array(part)) != nil, "a part is missing from the multipart body")
            }
            #expect(server.waitForLog("fill finished", count: 2))
            // Now stored: a whole-clip range is a local hit.
            let whole = try fetch(url, headers: [("Range", "bytes=0-")])
            #expect(whole.status == 206 && whole.headers["x-clip-tier"] == "l1_hit" && sameBytes(whole.body, expected))
            let warm = try fetch(url, headers: [("Range", "bytes=200000-200999")])
            #expect(warm.headers["x-clip-tier"] == "l1_hit" && sameBytes(warm.body, middle.body))
            #expect(warm.headers["etag"] == middle.headers["etag"], "one ETag for the clip, however it was served")
        }
    }

    @Test("A cold Range request for a clip in the second tier reads just that range of the stored clip; a Range for the whole clip asks the bucket for it once")
    func coldRangeFromSecondTier() async throws {
        try await withProxiedStack("cold-range-l2") { server, proxy, _, work in
            let expected = try trimmed(ServerTests.sourceKey, startMs: 5_000)
            let url = "\(server.baseURL)/clips/\(ServerTests.episode)/5000"
            #expect(try fetch(url).status == 200)
            #expect(server.waitForLog("second tier copy finished"))
            server.stop()
            try FileManager.default.removeItem(atPath: work.path + "/cache")
            let restarted = try ClipProxyProcess(environment: server.environment)
            defer { restarted.stop() }
            let seen = try Self.sourceBytes(proxy, after: 0).total
            let part = try fetch("\(restarted.baseURL)/clips/\(ServerTests.episode)/5000", headers: [("Range", "bytes=100000-100499")])
            #expect(part.status == 206 && part.headers["x-clip-tier"] == "part" && sameBytes(part.body, Array(expected[100_000..<100_500])))
            let log = try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body).dropFirst(seen)
            let clipReads = log.filter { $0.method == "GET" && $0.path.hasPrefix("/\(ClipBucketTests.clipBucket)/the-daily-tones/") }
            #expect(clipReads.map(\.range) == ["bytes=100000-100499"], "\(clipReads.map { $0.range ?? "whole" })")
            #expect(try Self.sourceBytes(proxy, after: seen).requests == 0, "no source read")

            // A Range for the whole clip (a browser's bytes=0-) is offered a part first too, so
            // the clip bucket is asked whether it has the clip; being the whole clip, it is then
            // opened whole from that same answer: one HEAD and one GET, no second HEAD.
            let afterPart = log.count + seen
            let whole = try fetch("\(restarted.baseURL)/clips/\(ServerTests.episode)/5000", headers: [("Range", "bytes=0-")])
            #expect(whole.status == 206 && whole.headers["x-clip-tier"] == "l2_hit" && sameBytes(whole.body, expected))
            #expect(restarted.waitForLog("local copy from the second tier finished"))
            let wholeLog = try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body).dropFirst(afterPart)
            let clip = wholeLog.filter { $0.path.hasPrefix("/\(ClipBucketTests.clipBucket)/the-daily-tones/") }
            #expect(clip.map(\.method) == ["HEAD", "GET"], "\(clip.map { "\($0.method) \($0.path) \($0.range ?? "")" })")
            #expect(try Self.sourceBytes(proxy, after: afterPart).requests == 0, "no source read")
        }
    }
}

@Suite("A miss of an indexed episode waits on one S3 request")
struct OneRoundTripMissTests {
    @Test("After an episode's first clip, each new clip makes exactly one S3 request before its first byte, the source GET: no clip-bucket request per miss")
    func missesMakeNoClipBucketRequest() async throws {
        try await withProxiedStack("one-round-trip") { server, proxy, _, _ in
            // The first clip resolves, indexes and lists the episode's folder in the clip bucket.
            #expect(try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/0").status == 200)
            #expect(server.waitForLog("second tier copy finished"))
            for startMs in [7_000, 19_000, 33_000, 41_000] {
                let seen = try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body).count
                let expected = try trimmed(ServerTests.sourceKey, startMs: Int64(startMs))
                let response = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/\(startMs)")
                #expect(response.status == 200 && response.headers["x-clip-tier"] == "fill" && sameBytes(response.body, expected))
                // Everything S3 saw for this miss, up to its response (its upload comes after).
                let requests = try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body).dropFirst(seen)
                let beforeUpload = requests.prefix { $0.method != "PUT" }
                #expect(beforeUpload.count == 1 && beforeUpload.first?.method == "GET"
                        && beforeUpload.first?.path.hasPrefix("/\(FullStackTests.sourceBucket)/") == true,
                        "clip \(startMs): \(beforeUpload.map { "\($0.method) \($0.path)" })")
                #expect(!requests.contains { $0.method != "PUT" && $0.path.hasPrefix("/\(ClipBucketTests.clipBucket)") },
                        "clip \(startMs) asked the clip bucket: \(requests.map { "\($0.method) \($0.path)" })")
                #expect(server.waitForLog("second tier copy finished", count: 1 + [7_000, 19_000, 33_000, 41_000].firstIndex(of: startMs)! + 1))
            }
        }
    }
}

@Suite("A second tier that cannot answer costs a cut, not a failed request")
struct SecondTierOutageTests {
    @Test("The clip bucket keeps failing (its listing, the per-clip HEAD, the upload): the clip is cut from the source and served whole")
    func clipBucketDown() async throws {
        try await withProxiedStack("l2-down") { server, proxy, _, _ in
            // Every request to the clip bucket gets 503, from the first one on; the source passes.
            try setProxyPlan(proxy, #"{"plan": [], "default": "503@/\#(ClipBucketTests.clipBucket)"}"#)
            for startMs in [0, 44_000] {
                let expected = try trimmed(ServerTests.sourceKey, startMs: Int64(startMs))
                let response = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/\(startMs)")
                #expect(response.status == 200 && response.headers["x-clip-tier"] == "fill", "clip \(startMs): \(response.status)")
                #expect(sameBytes(response.body, expected))
            }
            // The listing failed, so each miss asked for its clip, and that failed too.
            #expect(server.log.contains("second tier listing failed"))
            #expect(server.log.contains("second tier lookup failed"))
            let clipBucketRequests = try FaultProxyRequest.decodeLog(try fetch(proxy.endpoint + "/__proxy/log").body)
                .filter { $0.path.hasPrefix("/\(ClipBucketTests.clipBucket)/") || $0.path.hasPrefix("/\(ClipBucketTests.clipBucket)?") }
            #expect(!clipBucketRequests.isEmpty && clipBucketRequests.allSatisfy { $0.mode == "503" })
        }
    }
}
