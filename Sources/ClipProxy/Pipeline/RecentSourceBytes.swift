import Foundation
import Synchronization
import Trim

/// The last bytes an index scan read of each source, kept for half a minute. A scan for a clip
/// stops right after that clip's frames, so the cut that follows finds its bytes here and makes
/// no request of its own: a cold VBR episode's first clip costs one source read, not two, and
/// about the bytes up to the clip's end.
final class RecentSourceBytes: Sendable {
    private struct Entry {
        let start: Int64
        let bytes: [UInt8]
        let until: ContinuousClock.Instant
    }
    private let entries = Mutex<[String: Entry]>([:])
    /// Bytes kept per source: at least the scan's largest read (4 MiB), so a clip is in them whole.
    static let bytesPerSource = 4 << 20
    /// Sources kept at once (memory: at most this many times `bytesPerSource`).
    static let sourceLimit = 8
    static let keepFor: Duration = .seconds(30)

    /// Wraps a source being scanned; `keep(_:)` then takes what it read last.
    func recording(_ base: any ByteSource, identity: String) -> Recorder { Recorder(base, identity: identity) }

    func keep(_ recorder: Recorder) {
        let identity = recorder.identity
        let (start, bytes) = recorder.lastRun
        guard !bytes.isEmpty else { return }
        let now = ContinuousClock.now
        entries.withLock { entries in
            entries = entries.filter { $0.value.until > now }
            if entries.count >= Self.sourceLimit, let oldest = entries.min(by: { $0.value.until < $1.value.until })?.key {
                entries[oldest] = nil
            }
            entries[identity] = Entry(start: start, bytes: bytes, until: now + Self.keepFor)
        }
    }

    /// `base`, answering reads that lie in the bytes kept for `identity` from memory.
    func source(_ base: any ByteSource, identity: String) -> any ByteSource {
        guard let entry = entries.withLock({ $0[identity] }), entry.until > ContinuousClock.now else { return base }
        return Remembered(base: base, start: entry.start, bytes: entry.bytes)
    }

    /// Records the contiguous run of bytes read last (a scan reads forwards; a read elsewhere
    /// starts a new run), at most `bytesPerSource` of it. `@unchecked Sendable`: guarded by `run`.
    final class Recorder: ByteSource, @unchecked Sendable {
        let base: any ByteSource
        let identity: String
        private let run = Mutex<(start: Int64, bytes: [UInt8])>((0, []))

        init(_ base: any ByteSource, identity: String) {
            self.base = base
            self.identity = identity
        }

        var size: Int64 { base.size }
        var lastRun: (start: Int64, bytes: [UInt8]) { run.withLock { $0 } }

        func read(offset: Int64, count: Int) throws -> [UInt8] {
            let bytes = try base.read(offset: offset, count: count)
            run.withLock { run in
                let end = run.start + Int64(run.bytes.count)
                if offset >= run.start && offset <= end {
                    run.bytes.removeLast(Int(end - offset))  // overlapping re-read: the new bytes win
                    run.bytes += bytes
                } else {
                    run = (offset, bytes)
                }
                let excess = run.bytes.count - RecentSourceBytes.bytesPerSource
                if excess > 0 {
                    run.bytes.removeFirst(excess)
                    run.start += Int64(excess)
                }
            }
            return bytes
        }

        func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
            try base.stream(range, consume)
        }
    }

    private struct Remembered: ByteSource {
        let base: any ByteSource
        let start: Int64
        let bytes: [UInt8]

        var size: Int64 { base.size }

        private func slice(_ range: Range<Int64>) -> ArraySlice<UInt8>? {
            guard range.lowerBound >= start, range.upperBound <= start + Int64(bytes.count) else { return nil }
            return bytes[Int(range.lowerBound - start)..<Int(range.upperBound - start)]
        }

        func read(offset: Int64, count: Int) throws -> [UInt8] {
            let end = min(size, offset + Int64(count))
            guard offset < end, let kept = slice(offset..<end) else { return try base.read(offset: offset, count: count) }
            return Array(kept)
        }

        func stream(_ range: Range<Int64>, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws {
            guard let kept = slice(range) else { return try base.stream(range, consume) }
            var from = kept.startIndex
            while from < kept.endIndex {
                let to = min(kept.endIndex, from + (64 << 10))
                try kept[from..<to].withUnsafeBytes(consume)
                from = to
            }
        }
    }
}
