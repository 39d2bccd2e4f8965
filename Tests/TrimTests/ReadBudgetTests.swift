import Foundation
import Testing
import TestSupport
@testable import Trim

/// Frugality: what a cold clip costs in source reads (issue: Trim, acceptance 3).
@Suite("Trim: source bytes read to plan a clip")
struct ReadBudgetTests {
    @Test("A clip from 45:00 of the one-hour CBR episode is planned with at most 64 KiB of reads")
    func hourEpisodeAt45Minutes() throws {
        let fixture = try Fixtures.named("hour_cbr64_44k_mono")
        let counting = CountingByteSource(try FileByteSource(path: fixture.path))
        let (description, index) = try SourceDescription.probe(counting)
        let plan = try ClipPlan.plan(index, .init(startMs: 45 * 60_000, durationMs: 30_000))
        #expect(description.cbr)
        #expect(index.isConstantBitrate, "a CBR source must not need a pass over the file")
        print("45:00 of the hour episode: probe + index + plan read \(counting.bytesRead) bytes in \(counting.readCount) reads")
        #expect(counting.bytesRead <= 64 << 10, "probe + index + plan read \(counting.bytesRead) bytes in \(counting.readCount) reads: \(counting.ranges)")
        // The clip itself then reads exactly its planned range, about 1.02x the clip's size.
        #expect(Double(plan.readRange.count) <= 1.05 * Double(plan.byteCount))
        #expect(plan.durationMs == 30_000)
    }
}
