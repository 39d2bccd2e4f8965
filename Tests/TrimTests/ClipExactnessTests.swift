import Foundation
import Testing
import TestSupport
@testable import Trim

/// The clip engine against ffmpeg: every clip must decode to exactly the source's samples from the
/// requested start, for every fixture and a spread of starts (issue: Trim, acceptance 1 and 2).
@Suite("Trim: clips decode exactly like the source")
struct ClipExactnessTests {
    /// At least 20 starts: 0, inside the first two frames, early, middle, the last 30 s, and
    /// windows that run past the end.
    static func starts(durationMs: Int64) -> [Int64] {
        let mid = durationMs / 2
        let fixed: [Int64] = [0, 5, 13, 26, 40, 77, 1000, 1234, 5003, 10007,
                              durationMs / 3, mid, mid + 1, mid + 17, 2 * durationMs / 3,
                              durationMs - 30000, durationMs - 30000 + 1, durationMs - 29977,
                              durationMs - 10000, durationMs - 1000, durationMs - 7]
        return Array(Set(fixed.filter { $0 >= 0 && $0 < durationMs })).sorted()
    }

    static let exactnessFixtures = Fixtures.audioOrEmpty.filter { !$0.name.hasPrefix("hour") }

    @Test("Every clip matches ffmpeg's decode of the source", arguments: exactnessFixtures)
    func clipsAreExact(_ fixture: AudioFixture) throws {
        let source = try FileByteSource(path: fixture.path)
        let index = try FrameIndexBuilder.build(source)
        let reference = try FFmpegOracle.decode(fixture.path, channels: fixture.channels, sampleRate: fixture.sampleRate)
        #expect(reference.stderr.isEmpty, "the fixture itself decodes cleanly")
        #expect(Int64(reference.frameCount) == index.decodedSampleCount, "index length agrees with ffmpeg's decode")

        let durationMs = index.durationMs
        let starts = Self.starts(durationMs: durationMs)
        #expect(starts.count >= 20)
        let work = try TemporaryDirectory("exactness")
        defer { work.remove() }
        let oneMs = fixture.sampleRate / 1000
        var worstLag = 0
        var worstSNR = Double.infinity

        for startMs in starts {
            let counting = CountingByteSource(source)
            var clip: [UInt8] = []
            let plan = try Trimmer.trim(counting, index: index, request: .init(startMs: startMs, durationMs: 30000)) {
                clip.append(contentsOf: $0)
            }
            // Acceptance 2: exact length, and exactly the planned contiguous range read.
            #expect(Int64(clip.count) == plan.byteCount, "\(fixture.name) @\(startMs): length")
            #expect(counting.ranges == [plan.readRange], "\(fixture.name) @\(startMs): reads \(counting.ranges) vs \(plan.readRange)")

            let path = work.url.appendingPathComponent("\(startMs).mp3").path
            _ = FileManager.default.createFile(atPath: path, contents: Data(clip))
            let decoded = try FFmpegOracle.decode(path, channels: fixture.channels, sampleRate: fixture.sampleRate)
            #expect(decoded.stderr.isEmpty, "\(fixture.name) @\(startMs): decoder said \(decoded.stderr)")

            let t0 = Int((startMs * Int64(fixture.sampleRate) + 500) / 1000)
            let expectedCount = min(30 * fixture.sampleRate, reference.frameCount - t0)
            let insideEpisode = startMs + 30000 <= durationMs
            if insideEpisode {
                #expect(abs(decoded.frameCount - 30 * fixture.sampleRate) <= oneMs, "\(fixture.name) @\(startMs): duration \(decoded.frameCount)")
            }
            if plan.trailerLength > 0 {
                // A window cut to less than a frame at the end keeps up to one frame of the decoder's
                // tail (see ClipPlan.plan); the audio itself must still match sample for sample.
                #expect(!insideEpisode)
                #expect(decoded.frameCount >= expectedCount && decoded.frameCount - expectedCount < index.samplesPerFrame,
                        "\(fixture.name) @\(startMs): \(decoded.frameCount) samples, expected \(expectedCount) + less than a frame")
            } else {
                #expect(abs(decoded.frameCount - expectedCount) <= oneMs, "\(fixture.name) @\(startMs): \(decoded.frameCount) samples, expected \(expectedCount)")
            }
            let compared = min(decoded.frameCount, expectedCount)
            let report = AlignmentReport.measure(clip: decoded.samples, reference: reference.samples, referenceStart: t0,
                                                 count: compared, channels: fixture.channels, sampleRate: fixture.sampleRate,
                                                 maxLag: 5 * oneMs)
            worstLag = max(worstLag, abs(report.lagSamples))
            worstSNR = min(worstSNR, report.worstWindowSNR)
            #expect(abs(report.lagSamples) <= oneMs, "\(fixture.name) @\(startMs): \(report)")
            #expect(report.worstWindowSNR >= 60, "\(fixture.name) @\(startMs): \(report)")
        }
        print("exactness \(fixture.name): \(starts.count) starts, largest lag \(worstLag) samples, worst 10 ms SNR \(worstSNR) dB")
    }
}
