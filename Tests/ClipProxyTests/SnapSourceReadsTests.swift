import Foundation
import Testing
import TestSupport
@testable import Upstream

/// Issue 22, part 1: choosing a snapped window costs no source round trip of its own. The source
/// (generated speech) is in moto behind the fault proxy, which counts the GETs and body bytes it
/// forwards.
@Suite("Snap to pauses against S3: one source GET per cold snapped clip", .serialized)
struct SnapSourceReadsTests {
    @Test("A cold snapped 30 s clip on an indexed episode: one source GET, at most 1.1x the clip's bytes; its repeat none")
    func oneRead() async throws {
        let speech = try SpeechFixture.speech.get()
        try await withS3Stack("snap-source-reads", proxied: true) { stack in
            let proxy = try #require(stack.proxy)
            _ = try stack.client.putObject(bucket: FullStackTests.sourceBucket, key: ServerTests.sourceKey, fileAt: speech.mp3, contentType: "audio/mpeg")
            let base = "\(stack.server.baseURL)/clips/\(ServerTests.episode)"
            // The episode is indexed first (its reads are not the snapped clip's).
            #expect(fetchRecording(base + "/0?duration_ms=1000", "first clip")?.status == 200)
            #expect(stack.server.waitForLog("fill finished"))
            let seen = try VBRSourceReadsTests.settledLog(proxy).count

            let snapped = try #require(fetchRecording(base + "/40000?snap=pause", "snapped clip"))
            #expect(snapped.status == 200 && snapped.headers["x-clip-tier"] == "fill")
            let location = try #require(snapped.headers["content-location"])
            #expect(location != "/clips/\(ServerTests.episode)/40000?duration_ms=30000", "the speech window should move")
            let window = try #require(SnapToPausesTests.window(location))
            let expected = try trimFile(speech.mp3, startMs: Int(window.startMs), durationMs: Int(window.durationMs))
            #expect(sameBytes(snapped.body, expected))
            #expect(stack.server.waitForLog("fill finished", count: 2, timeout: 15))
            let log = try VBRSourceReadsTests.settledLog(proxy)
            let reads = log.dropFirst(seen).filter { $0.method == "GET" && $0.path == VBRSourceReadsTests.sourcePath }
            let bytes = reads.reduce(0) { $0 + $1.bytes }
            print("snapped cold clip: \(reads.count) source GETs (\(reads.map { $0.range ?? "whole" })), \(bytes) bytes for a \(snapped.body.count)-byte clip")
            #expect(reads.count == 1, "\(reads.count) source GETs: \(reads.map { $0.range ?? "whole" })")
            #expect(Double(bytes) <= 1.1 * Double(snapped.body.count), "\(bytes) source bytes for a \(snapped.body.count)-byte clip")

            let repeated = try #require(fetchRecording(base + "/40000?snap=pause", "repeat"))
            #expect(repeated.headers["x-clip-tier"] == "l1_hit" && sameBytes(repeated.body, expected))
            let after = try VBRSourceReadsTests.settledLog(proxy)
            #expect(after.count == log.count, "the repeat asked S3 for something: \(after.dropFirst(log.count).map { "\($0.method) \($0.path)" })")
        }
    }
}
