import Foundation
import Testing
import TestSupport
@testable import Upstream

/// Issue 21, acceptance 4: a VBR episode never seen before, played at 0 s and then at 7, 23, 51,
/// 88 and 131 s (30 s clips, each one cold), reads its source once: each later miss makes at most
/// one source GET, and the six misses together read at most 1.1 times the file. The source is in
/// moto behind the fault proxy, which counts the body bytes it forwards. Nothing runs before the
/// first request: no `index-sources`, and the clip bucket holds no shared frame index.
@Suite("VBR source reads: a run of misses on one episode reads each source byte once", .serialized)
struct VBRSourceReadsTests {
    static let startsMs = [0, 7_000, 23_000, 51_000, 88_000, 131_000]
    static let sourcePath = "/\(FullStackTests.sourceBucket)/\(ServerTests.sourceKey)"

    @Test("A 3-minute VBR episode played at 0, 7, 23, 51, 88 and 131 s: at most one source GET per later miss, source bytes at most 1.1x the file")
    func runOfMisses() async throws {
        let file = try LongVBRFixture.threeMinutes.get()
        let size = try #require(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
        try await withS3Stack("vbr-source-reads", proxied: true) { stack in
            let proxy = try #require(stack.proxy)
            // Episode A's source object becomes the VBR episode before anything asked for it.
            _ = try stack.client.putObject(bucket: FullStackTests.sourceBucket, key: ServerTests.sourceKey, fileAt: file, contentType: "audio/mpeg")

            var seen = try proxyLog(proxy).count
            var totalBytes = 0
            var table: [String] = []
            for (number, startMs) in Self.startsMs.enumerated() {
                let expected = try trimFile(file, startMs: startMs)
                let fillsBefore = stack.server.log.components(separatedBy: "fill finished").count - 1
                let response = fetchRecording("\(stack.server.baseURL)/clips/\(ServerTests.episode)/\(startMs)", "clip at \(startMs) ms")
                #expect(response?.status == 200 && response?.headers["x-clip-tier"] == "fill",
                        "clip at \(startMs) ms: \(response?.status ?? 0) \(response?.headers["x-clip-tier"] ?? "-") (each clip must be a cold miss)")
                #expect(sameBytes(response?.body ?? [], expected), "clip at \(startMs) ms: \(response?.body.count ?? 0) bytes that are not the clip's \(expected.count)")
                // What the miss set going (index extensions, the fill) is over before its reads are counted.
                #expect(stack.server.waitForLog("fill finished", count: fillsBefore + 1, timeout: 15), "clip at \(startMs) ms: no \"fill finished\"")
                let log = try Self.settledLog(proxy)
                let reads = log.dropFirst(seen).filter { $0.method == "GET" && $0.path == Self.sourcePath }
                seen = log.count
                let bytes = reads.reduce(0) { $0 + $1.bytes }
                totalBytes += bytes
                table.append("\(startMs / 1000) s: \(reads.count) GETs, \(bytes) bytes (\(reads.map { $0.range ?? "whole" }.joined(separator: ", ")))")
                // The first miss meets the episode for the first time (it may read the file's tags
                // apart from the scan); every later one must find its bytes in one read.
                if number > 0 {
                    #expect(reads.count <= 1, "the miss at \(startMs / 1000) s made \(reads.count) source GETs: \(reads.map { $0.range ?? "whole" })")
                }
            }
            print("VBR source reads, \(size) byte file:\n  " + table.joined(separator: "\n  ")
                  + "\n  total \(totalBytes) bytes = \(String(format: "%.2f", Double(totalBytes) / Double(size)))x the file")
            #expect(Double(totalBytes) <= 1.1 * Double(size),
                    "the six misses read \(totalBytes) source bytes, \(String(format: "%.2f", Double(totalBytes) / Double(size)))x the \(size)-byte file (at most 1.1x)")
        }
    }

    /// The fault proxy's log once it stops changing (no new request and no byte more for 300 ms),
    /// so a read still under way is counted whole.
    static func settledLog(_ proxy: TestServer) throws -> [FaultProxyRequest] {
        var last = try proxyLog(proxy)
        for _ in 0..<50 {
            usleep(300_000)
            let now = try proxyLog(proxy)
            if now.count == last.count && now.map(\.bytes) == last.map(\.bytes) { return now }
            last = now
        }
        return last
    }
}
