import Foundation
import Synchronization
import Trim

/// The bytes index scans read of each source lately, kept for half a minute. A scan indexes
/// every frame in what it read, so the clips that follow (the one the scan was for, and others
/// in the same minutes) find their bytes here, and an extension continues from where the bytes
/// end: across a run of misses on one VBR episode no source byte is read twice.
final class RecentSourceBytes: Sendable {
    private struct Entry {
        let start: Int64
        let bytes: [UInt8]
        let until: ContinuousClock.Instant
        var end: Int64 { start + Int64(bytes.count) }
    }
    private let entries = Mutex<[String: Entry]>([:])
    /// Bytes kept per source (the last ones): at least the scan's largest read (4 MiB).
    static let bytesPerSource = 4 << 20
    /// Sources kept at once (memory: at most this many times `bytesPerSource`).
    static let sourceLimit = 8
    static let keepFor: Duration = .seconds(30)

    /// Wraps a source being scanned (reads inside what is kept already are answered from it);
    /// `keep(_:)` then takes what it read last.
    func recording(_ base: any ByteSource, identity: String) -> Recorder {
        Recorder(source(base, identity: identity), identity: identity)
    }

    /// Keeps the run the recorder read last, joined to what is kept for its source when the two
    /// touch or overlap (an extension continuing where the last scan's bytes end).
    func keep(_ recorder: Recorder) {
        let identity = recorder.identity
        let (start, bytes) = recorder.lastRun
        guard !bytes.isEmpty else { return }
        let now = ContinuousClock.now
        entries.withLock { entries in
            entries = entries.filter { $0.value.until > now }
            var run = (start: start, bytes: bytes)
            if let kept = entries[identity], kept.start <= start, start <= kept.end {
                run = (kept.start, Array(kept.bytes[..<Int(start - kept.start)]) + bytes)
            }
            let excess = run.bytes.count - Self.bytesPerSource
            if excess > 0 {
                run.bytes.removeFirst(excess)
                run.start += Int64(excess)
            }
            if entries[identity] == nil, entries.count >= Self.sourceLimit,
               let oldest = entries.min(by: { $0.value.until < $1.value.until })?.key {
                entries[oldest] = nil
            }
            entries[identity] = Entry(start: run.start, bytes: run.bytes, until: now + Self.keepFor)
        }
    }

    /// `base`, answering reads that lie in the bytes kept for `identity` from memory.
    func source(_ base: any ByteSource, identity: String) -> any ByteSource {
        guard let entry = entries.withLock({ $0[identity] }), entry.until > ContinuousClock.now else { return base }
        return Remembered(base: base, start: entry.start, bytes: entry.bytes)
    }

    /// Records what a scan reads as contiguous runs (a scan reads forwards, with the head and
    /// the trailing tags read apart); `lastRun` is the run holding the latest read, joined with
    /// the runs it touches, at most `bytesPerSource` of it. `@unchecked Sendable`: guarded by `runs`.
    final class Recorder: ByteSource, @unchecked Sendable {
        let base: any ByteSource
        let identity: String
        private let runs = Mutex<(all: [(start: Int64, bytes: [UInt8])], last: Int)>(([], -1))

        init(_ base: any ByteSource, identity: String) {
            self.base = base
            self.identity = identity
        }

        var size: Int64 { base.size }
        var lastRun: (start: Int64, bytes: [UInt8]) { runs.withLock { $0.last >= 0 ? $0.all[$0.last] : (0, []) } }

        func read(offset: Int64, count: Int) throws -> [UInt8] {
            let bytes = try base.read(offset: offset, count: count)
            runs.withLock { runs in
                var run = (start: offset, bytes: bytes)
                // Join every run this one touches or overlaps (the new bytes win where they overlap).
                runs.all.removeAll { other in
                    let otherEnd = other.start + Int64(other.bytes.count), end = run.start + Int64(run.bytes.count)
                    guard other.start <= end && run.start <= otherEnd else { return false }
                    let before = other.start < run.start ? Array(other.bytes[..<Int(run.start - other.start)]) : []
                    let after = otherEnd > end ? Array(other.bytes[Int(end - other.start)...]) : []
                    run = (min(other.start, run.start), before + run.bytes + after)
                    return true
                }
                let excess = run.bytes.count - RecentSourceBytes.bytesPerSource
                if excess > 0 {
                    run.bytes.removeFirst(excess)
                    run.start += Int64(excess)
                }
                // Bounded: older runs go once the recorded bytes pass twice the kept amount.
                while runs.all.reduce(run.bytes.count, { $0 + $1.bytes.count }) > 2 * RecentSourceBytes.bytesPerSource, !runs.all.isEmpty {
                    runs.all.removeFirst()
                }
                runs.all.append(run)
                runs.last = runs.all.count - 1
            }
            return bytes
        }

        func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
            try base.stream(range, consume)
        }
    }

    /// A source whose bytes from `start` are partly in memory: a read or stream that begins in
    /// them takes what they have and asks the source for the rest only.
    private struct Remembered: ByteSource {
        let base: any ByteSource
        let start: Int64
        let bytes: [UInt8]

        var size: Int64 { base.size }
        private var end: Int64 { start + Int64(bytes.count) }

        func read(offset: Int64, count: Int) throws -> [UInt8] {
            let upper = min(size, offset + Int64(count))
            guard offset >= start, offset < end, offset < upper else { return try base.read(offset: offset, count: count) }
            let kept = Array(bytes[Int(offset - start)..<Int(min(upper, end) - start)])
            return upper <= end ? kept : kept + (try base.read(offset: end, count: Int(upper - end)))
        }

        func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
            guard range.lowerBound >= start, range.lowerBound < end else { return try base.stream(range, consume) }
            var from = Int(range.lowerBound - start)
            let to = Int(min(range.upperBound, end) - start)
            while from < to {
                let next = min(to, from + (64 << 10))
                try bytes[from..<next].withUnsafeBytes(consume)
                from = next
            }
            if range.upperBound > end { try base.stream(end..<range.upperBound, consume) }
        }
    }
}
