import Foundation
import Synchronization
import Testing
import TestSupport
import Trim
@testable import ClipProxy

/// A source in memory that counts the bytes asked of it.
private final class CountingSource: ByteSource, Sendable {
    let base: MemoryByteSource
    private let asked = Mutex(0)

    init(_ bytes: [UInt8]) { base = MemoryByteSource(bytes) }

    var size: Int64 { base.size }
    var bytesAsked: Int { asked.withLock { $0 } }

    func read(offset: Int64, count: Int) throws -> [UInt8] {
        let bytes = try base.read(offset: offset, count: count)
        asked.withLock { $0 += bytes.count }
        return bytes
    }
}

@Suite("RecentSourceBytes: the last bytes a scan read, served again from memory")
struct RecentSourceBytesTests {
    private func streamed(_ source: any ByteSource, _ range: Range<Int64>) throws -> [UInt8] {
        var out: [UInt8] = []
        try source.stream(range) { out += $0 }
        return out
    }

    @Test("A scan's last contiguous run is kept; reads inside it make no source request, reads that go past it ask only for the rest")
    func keptRunIsServedFromMemory() throws {
        let bytes = probeBytes(1_000_000, seed: 40)
        let recent = RecentSourceBytes()
        let scanned = CountingSource(bytes)
        let recorder = recent.recording(scanned, identity: "s3:b/k#etag")
        _ = try recorder.read(offset: 0, count: 1000)         // an early read elsewhere
        _ = try recorder.read(offset: 200_000, count: 100_000) // the scan's run starts here...
        _ = try recorder.read(offset: 300_000, count: 100_000) // ...and goes on contiguously
        _ = try recorder.read(offset: 350_000, count: 100_000) // an overlapping re-read: the new bytes win
        let run = recorder.lastRun
        #expect(run.start == 200_000 && run.bytes.count == 250_000)
        #expect(sameBytes(run.bytes, bytes[200_000..<450_000]))
        recent.keep(recorder)

        let cut = CountingSource(bytes)
        let source = recent.source(cut, identity: "s3:b/k#etag")
        #expect(sameBytes(try source.read(offset: 250_000, count: 4096), bytes[250_000..<254_096]))
        #expect(sameBytes(try streamed(source, 200_000..<450_000), bytes[200_000..<450_000]))
        #expect(cut.bytesAsked == 0, "bytes inside the kept run were read from the source again")
        // Starting inside the run and going past it: the source is asked for the rest only.
        #expect(sameBytes(try source.read(offset: 449_000, count: 2000), bytes[449_000..<451_000]))
        #expect(cut.bytesAsked == 1000)
        #expect(sameBytes(try streamed(source, 400_000..<460_000), bytes[400_000..<460_000]))
        #expect(cut.bytesAsked == 11_000)
        // Starting before it: the source answers all of it.
        #expect(sameBytes(try streamed(source, 100_000..<300_000), bytes[100_000..<300_000]))
        #expect(cut.bytesAsked == 211_000)
        // Another source identity (a re-uploaded file) gets nothing from memory.
        let other = CountingSource(bytes)
        #expect(recent.source(other, identity: "s3:b/k#new-etag") as AnyObject === other)
    }

    @Test("At most bytesPerSource bytes are kept per source (the last ones), and at most sourceLimit sources")
    func boundedMemory() throws {
        let limit = RecentSourceBytes.bytesPerSource
        let bytes = probeBytes(limit + 1_500_000, seed: 41)
        let recent = RecentSourceBytes()
        let recorder = recent.recording(CountingSource(bytes), identity: "long")
        var offset: Int64 = 0
        while offset < Int64(bytes.count) {
            offset += Int64(try recorder.read(offset: offset, count: 1 << 20).count)
        }
        let run = recorder.lastRun
        #expect(run.bytes.count == limit && run.start == Int64(bytes.count - limit))
        #expect(sameBytes(run.bytes, bytes[(bytes.count - limit)...]))

        let small = probeBytes(10_000, seed: 42)
        let sources = (0...RecentSourceBytes.sourceLimit).map { i -> String in
            let recorder = recent.recording(CountingSource(small), identity: "source-\(i)")
            _ = try? recorder.read(offset: 0, count: 10_000)
            recent.keep(recorder)
            return "source-\(i)"
        }
        let probe = CountingSource(small)
        let remembered = sources.filter { recent.source(probe, identity: $0) as AnyObject !== probe }
        #expect(remembered.count == RecentSourceBytes.sourceLimit)
        #expect(remembered.contains("source-\(RecentSourceBytes.sourceLimit)"), "the newest source must be kept")
    }

    @Test("A run that continues the kept bytes is joined to them; one elsewhere replaces them")
    func runsJoin() throws {
        let bytes = probeBytes(600_000, seed: 43)
        let recent = RecentSourceBytes()
        let first = recent.recording(CountingSource(bytes), identity: "s")
        _ = try first.read(offset: 10_000, count: 200_000)
        recent.keep(first)
        // An extension: starts inside the kept bytes (the last partial frame) and goes on.
        let base = CountingSource(bytes)
        let second = recent.recording(base, identity: "s")
        _ = try second.read(offset: 209_000, count: 300_000)
        #expect(base.bytesAsked == 299_000, "the kept part came from memory")
        recent.keep(second)
        let cut = CountingSource(bytes)
        #expect(sameBytes(try streamed(recent.source(cut, identity: "s"), 10_000..<509_000), bytes[10_000..<509_000]))
        #expect(cut.bytesAsked == 0, "the joined run serves a clip spanning both reads")
        // A read elsewhere starts a new run.
        let third = recent.recording(CountingSource(bytes), identity: "s")
        _ = try third.read(offset: 550_000, count: 10_000)
        recent.keep(third)
        let after = CountingSource(bytes)
        _ = try recent.source(after, identity: "s").read(offset: 100_000, count: 10)
        #expect(after.bytesAsked == 10)
    }
}
