import Foundation
import Testing
import TestSupport
@testable import Trim
@testable import Upstream

/// Issue 13, item 2, through the server on moto: a never-seen long VBR episode is indexed only as
/// far as each clip needs, so the first listener of a clip at minute 1 waits for about the bytes
/// up to that clip's end, not the whole episode; later clips extend the index; every clip is
/// byte-identical to `clipproxy trim` of the whole file.
@Suite("Progressive frame index in the server: a cold long VBR episode", .serialized)
struct ProgressiveIndexServerTests {
    /// The progressive scan's first read is at least 1 MiB (FrameIndexBuilder); the probe also
    /// reads the file's first 32 KiB and last 4 KiB once (tags), which the bound allows for.
    static let readAhead = 1 << 20
    static let probeReads = 64 << 10

    @Test("A clip at minute 1 of a cold 20-minute VBR episode reads up to the clip's end + one read-ahead; later clips extend the index; all exact")
    func coldLongVBR() async throws {
        let long = try LongVBRFixture.path.get()
        let size = try #require(try FileManager.default.attributesOfItem(atPath: long)[.size] as? Int)
        let index = try FrameIndexBuilder.build(try FileByteSource(path: long))
        try await withS3Stack("progressive-vbr", proxied: true) { stack in
            let proxy = try #require(stack.proxy)
            // Episode A's source object becomes the long VBR episode before anything asked for it.
            _ = try stack.client.putObject(bucket: FullStackTests.sourceBucket, key: ServerTests.sourceKey, fileAt: long, contentType: "audio/mpeg")

            var seen = try proxyLog(proxy).count
            for (startMs, what) in [(60_000, "minute 1: indexed as far as it needs"), (600_000, "minute 10: the index is extended"),
                                    (1_170_000, "the last 30 s: extended to the end"), (30_000, "before the indexed end: no scan")] {
                let expected = try trimFile(long, startMs: startMs)
                let response = fetchRecording("\(stack.server.baseURL)/clips/\(ServerTests.episode)/\(startMs)", what)
                #expect(response?.status == 200 && sameBytes(response?.body ?? [], expected),
                        "\(what): \(response?.status ?? 0), \(response?.body.count ?? 0) of \(expected.count) bytes")
                let reads = try proxyLog(proxy).dropFirst(seen).filter { $0.method == "GET" && $0.path.hasPrefix("/\(FullStackTests.sourceBucket)/") && !$0.path.contains("list-type") }
                seen = try proxyLog(proxy).count
                let bytes = reads.reduce(0) { $0 + MultiNodeTests.rangeLength($1.range) }
                let plan = try ClipPlan.plan(index, .init(startMs: Int64(startMs), durationMs: 30_000))
                let clipEnd = Int(plan.readRange.upperBound)
                print("progressive index, \(what): \(reads.count) source GETs, \(bytes) bytes; clip ends at byte \(clipEnd) of \(size)")
                switch startMs {
                case 60_000:
                    #expect(bytes <= clipEnd + Self.readAhead + Self.probeReads,
                            "\(what): read \(bytes) bytes in \(reads.count) GETs; the clip ends at byte \(clipEnd) of \(size)")
                    #expect(bytes < size / 4, "\(what): read \(bytes) of \(size) bytes")
                    // The scan's last read held the clip: the cut made no request of its own.
                    #expect(!reads.contains { $0.range?.hasPrefix("bytes=\(plan.readRange.lowerBound)-") == true },
                            "\(what): the clip's own range was read again: \(reads.map { $0.range ?? "whole" })")
                case 30_000:
                    // Inside what is indexed: just the clip's bytes (reservoir and frames), one GET.
                    #expect(reads.count == 1 && bytes < 600_000, "\(what): \(reads.count) GETs, \(bytes) bytes")
                default:
                    #expect(bytes < size, "\(what): read \(bytes) bytes, the whole file is \(size)")
                }
            }
            #expect(stack.server.log.contains("frame index extended"))
        }
    }
}
