import Foundation
import Testing
import TestSupport
@testable import Trim

/// A byte range of a clip written on its own (a Range request on a cold clip): the same bytes as
/// that range of the whole clip, for only about the source bytes behind it.
@Suite("Trim: one byte range of a clip, from the source bytes behind it")
struct ClipRangeTests {
    @Test("Every range equals the same range of the whole clip, and reads at most a frame more than it needs on each side",
          arguments: Fixtures.audioOrEmpty)
    func rangesMatchWholeClip(_ fixture: AudioFixture) throws {
        let source = try FileByteSource(path: fixture.path)
        let index = try FrameIndexBuilder.build(source)
        let starts: [Int64] = [0, 13, Int64(fixture.nominalDurationS * 500), max(0, Int64(fixture.nominalDurationS * 1000) - 700)]
        var generator = SeededGenerator(seed: UInt64(fixture.size))
        for start in starts {
            let plan = try ClipPlan.plan(index, .init(startMs: start, durationMs: 30_000))
            var whole: [UInt8] = []
            try Trimmer.write(plan, from: source) { whole.append(contentsOf: $0) }
            let n = plan.byteCount
            let info = Int64(plan.infoFrameLength), copied = info + Int64(plan.carrierLength)
            var ranges: [Range<Int64>] = [0..<n, 0..<1, 0..<info, (info - 1)..<(info + 1), info..<copied, (copied - 1)..<(copied + 3),
                                          copied..<(copied + 1), (n - 1)..<n, (n / 2)..<n, (n - min(n, 5000))..<n]
            for _ in 0..<25 {
                let a = Int64.random(in: 0..<n, using: &generator)
                ranges.append(a..<Int64.random(in: (a + 1)...n, using: &generator))
            }
            let largestFrame = Int64(plan.frameSizes.max() ?? 0)
            for range in ranges where range.lowerBound >= 0 && range.upperBound <= n && !range.isEmpty {
                let counting = CountingByteSource(source)
                var part: [UInt8] = []
                try Trimmer.write(plan, range: range, from: counting) { part.append(contentsOf: $0) }
                #expect(sameBytes(part, Array(whole[Int(range.lowerBound)..<Int(range.upperBound)])), "\(fixture.name) start \(start) range \(range)")
                let reservoir = range.lowerBound < copied && range.upperBound > info ? plan.frameSizesBeforeFirst : 0
                let budget: Int64 = Int64(range.count) + 2 * largestFrame + reservoir + 4096
                let read: Int64 = counting.bytesRead
                #expect(read <= budget, "\(fixture.name) start \(start) range \(range): read \(read) bytes")
                if range.upperBound <= info { #expect(counting.bytesRead == 0, "the Info frame needs no source bytes") }
            }
        }
    }

    @Test("A range outside the clip is refused; a source that no longer matches the index fails")
    func badRanges() throws {
        let fixture = try Fixtures.named("m1_44k_stereo_cbr128")
        let source = try FileByteSource(path: fixture.path)
        let plan = try ClipPlan.plan(try FrameIndexBuilder.build(source), .init(startMs: 1000, durationMs: 5000))
        #expect(throws: TrimError.self) { try Trimmer.write(plan, range: 0..<(plan.byteCount + 1), from: source) { _ in } }
        #expect(throws: TrimError.self) { try Trimmer.write(plan, range: 5..<5, from: source) { _ in } }
        // The same size of bytes, but not MP3 frames where the index says.
        let zeros = MemoryByteSource([UInt8](repeating: 0, count: Int(source.size)))
        #expect(throws: TrimError.self) { try Trimmer.write(plan, range: (plan.byteCount - 10)..<plan.byteCount, from: zeros) { _ in } }
    }
}

/// A small deterministic generator (SplitMix64), so failures reproduce.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
