import Foundation
import Synchronization
import Support
import Testing
import TestSupport
@testable import Index

/// Deterministic bytes for a lease test clip: different seeds, different contents.
private func leaseClip(_ seed: Int, count: Int) -> [UInt8] {
    var state = UInt64(seed + 1) &* 0xD129_0D1E_5A3C_B7A1 | 1
    var bytes = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        bytes[i] = UInt8(truncatingIfNeeded: state >> 11)
    }
    return bytes
}

@discardableResult
private func commitLeaseClip(_ store: ClipStore, _ key: ClipKey, _ bytes: [UInt8], episodeId: String? = nil) throws -> ClipRecord {
    let blob = try store.beginFill(key)
    var at = 0
    while at < bytes.count {  // in uneven pieces, as a fill writes
        let end = min(bytes.count, at + 5003)
        try blob.write(Array(bytes[at..<end]))
        at = end
    }
    return try store.commit(blob, episodeId: episodeId)
}

/// Everything readable through the lease's descriptor, from offset 0 (one byte more is asked
/// for than the record says, so a longer file shows).
private func bytesThrough(_ lease: ClipStore.Lease) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: Int(lease.record.byteCount) + 1)
    let n = try bytes.withUnsafeMutableBytes {
        try Posix.readFully(lease.descriptor, into: $0.baseAddress!, count: $0.count, at: 0, path: lease.path)
    }
    return Array(bytes[0..<n])
}

private struct HammerTally {
    var hits = 0, misses = 0, bad: [String] = [], errors: [String] = []
    var commits = 0, evicted = 0, purged = 0
}

/// What the hammer's threads share.
private final class HammerState: Sendable {
    let tally = Mutex(HammerTally())
    let writersLeft: Atomic<Int>
    init(writers: Int) { writersLeft = Atomic(writers) }
}

// 10 minutes: in `make test` this suite may wait minutes for a thread of the cooperative pool
// behind suites that wait synchronously; it takes a few seconds once it runs. The limit only
// stops a hang.
@Suite("Index: leases keep a clip readable; a record without its whole file is a miss", .timeLimit(.minutes(10)))
struct ClipStoreLeaseTests {
    @Test("A lease taken before a purge reads the whole clip through its descriptor after the file is unlinked")
    func leaseOutlivesPurge() throws {
        let dir = try TemporaryDirectory("lease-purge")
        defer { dir.remove() }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 64 << 20))
        let bytes = leaseClip(1, count: 150_001)
        let key = ClipKey(identity: "purged clip")
        try commitLeaseClip(store, key, bytes, episodeId: "ep-1")
        try commitLeaseClip(store, ClipKey(identity: "other episode"), leaseClip(2, count: 1000), episodeId: "ep-2")
        let lease = try #require(try store.lookup(key))
        defer { lease.release() }

        let purged = try store.purge(episodeId: "ep-1")
        #expect(purged.map(\.byteCount) == [150_001])
        #expect(!FileManager.default.fileExists(atPath: lease.path), "purge removes a clip that is being read too")
        #expect(try store.lookup(key) == nil)
        #expect(try !store.contains(key))
        #expect(try store.contains(ClipKey(identity: "other episode")))

        let read = try bytesThrough(lease)
        #expect(sameBytes(read, bytes))
        #expect(Digest.sha256(read) == lease.record.digest)
    }

    @Test("A lease ended keeping its descriptor: the clip can be evicted, the bytes stay readable, the caller closes")
    func releaseKeepingDescriptor() throws {
        let dir = try TemporaryDirectory("lease-keep")
        defer { dir.remove() }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 64 << 20))
        let key = ClipKey(identity: "kept descriptor")
        let bytes = leaseClip(3, count: 20_000)
        try commitLeaseClip(store, key, bytes)
        let lease = try #require(try store.lookup(key))
        let descriptor = try #require(lease.releaseKeepingDescriptor())
        defer { close(descriptor) }
        #expect(lease.releaseKeepingDescriptor() == nil, "only once")
        lease.release()
        #expect(fcntl(descriptor, F_GETFD) != -1, "release after handing the descriptor over does not close it")
        #expect(try store.makeRoom(bytes: 1 << 30) == [key], "unpinned")
        var read = [UInt8](repeating: 0, count: bytes.count)
        let n = try read.withUnsafeMutableBytes { try Posix.readFully(descriptor, into: $0.baseAddress!, count: $0.count, at: 0, path: "kept") }
        #expect(n == bytes.count && sameBytes(read, bytes))
    }

    @Test("Eviction passes over a leased clip, even when it is the least recently used; released, it can go")
    func evictionSkipsLeasedClips() throws {
        let dir = try TemporaryDirectory("lease-evict")
        defer { dir.remove() }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 64 << 20))
        let keys = (0..<4).map { ClipKey(identity: "evict-\($0)") }
        for (i, key) in keys.enumerated() { try commitLeaseClip(store, key, leaseClip(10 + i, count: 10_000)) }
        let lease = try #require(try store.lookup(keys[0]))
        let evicted = try store.makeRoom(bytes: 1 << 30)  // everything it can
        #expect(Set(evicted) == Set(keys[1...]))
        #expect(try store.contains(keys[0]))
        #expect(sameBytes(try bytesThrough(lease), leaseClip(10, count: 10_000)))
        lease.release()
        lease.release()  // a second release is harmless: the clip is not unpinned twice
        #expect(try store.makeRoom(bytes: 1 << 30) == [keys[0]])

        // A lease dropped without release() unpins too.
        try commitLeaseClip(store, keys[1], leaseClip(11, count: 10_000))
        do { _ = try #require(try store.lookup(keys[1])) }
        #expect(try store.makeRoom(bytes: 1 << 30) == [keys[1]])
        #expect(store.storedBytes == 0)
    }

    @Test("A record whose file was deleted or truncated is a miss, absent for contains, until dropStaleRecords drops it")
    func missingOrShortFileIsAMiss() throws {
        let dir = try TemporaryDirectory("lease-stale")
        defer { dir.remove() }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 64 << 20))
        let deleted = ClipKey(identity: "deleted"), truncated = ClipKey(identity: "truncated"), kept = ClipKey(identity: "kept")
        try commitLeaseClip(store, deleted, leaseClip(20, count: 30_000))
        try commitLeaseClip(store, truncated, leaseClip(21, count: 30_000))
        try commitLeaseClip(store, kept, leaseClip(22, count: 30_000))
        #expect(unlink(store.blobPath(deleted)) == 0)
        #expect(truncate(store.blobPath(truncated), 12_345) == 0)

        // The index alone still has them: contains answers from the index until a lookup saw the file.
        #expect(try store.contains(deleted) && store.contains(truncated))
        #expect(!store.hasStaleRecords)
        #expect(try store.lookup(deleted) == nil)
        #expect(try store.lookup(truncated) == nil)
        #expect(try !store.contains(deleted) && !store.contains(truncated))
        #expect(store.hasStaleRecords)
        #expect(try store.stats().clips == 3)

        try store.dropStaleRecords()
        #expect(!store.hasStaleRecords)
        #expect(try !store.contains(deleted) && !store.contains(truncated))
        #expect(try store.lookup(deleted) == nil && store.lookup(truncated) == nil)
        #expect(try store.stats().clips == 1)
        #expect(store.storedBytes == 30_000)
        let lease = try #require(try store.lookup(kept))
        #expect(sameBytes(try bytesThrough(lease), leaseClip(22, count: 30_000)))
        lease.release()
        #expect(try store.verify().isClean)
        // Index and disk agree on the records (the truncated file itself is left to reconciliation).
        let reconciled = try store.reconcile()
        #expect(reconciled.recordsDropped == 0 && reconciled.clips == 1 && reconciled.bytes == 30_000, "\(reconciled)")
    }

    @Test("A clip stored again after its lookup missed is kept by dropStaleRecords and found")
    func restoredBeforeDrop() throws {
        let dir = try TemporaryDirectory("lease-restored")
        defer { dir.remove() }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 64 << 20))
        let key = ClipKey(identity: "restored")
        let bytes = leaseClip(30, count: 20_000)
        try commitLeaseClip(store, key, bytes)
        unlink(store.blobPath(key))
        #expect(try store.lookup(key) == nil)
        try commitLeaseClip(store, key, bytes)  // a fill cut it again meanwhile
        let lease = try #require(try store.lookup(key))
        #expect(sameBytes(try bytesThrough(lease), bytes))
        lease.release()
        try store.dropStaleRecords()
        #expect(try store.contains(key))
        #expect(!store.hasStaleRecords)
        #expect(store.storedBytes == 20_000)
        #expect(try store.verify().isClean)
    }

    @Test("Hammer: lookups and reads racing commits, eviction and purges never read a short or wrong clip")
    func lookupsRaceEviction() async throws {
        let dir = try TemporaryDirectory("lease-hammer")
        defer { dir.remove() }
        // 16 clips of about 15 KiB under a budget of about six: commits evict all the time.
        let clips: [(key: ClipKey, bytes: [UInt8], digest: [UInt8])] = (0..<16).map { i in
            let bytes = leaseClip(100 + i, count: 8_000 + i * 997)
            return (ClipKey(identity: "hammer-\(i)"), bytes, Digest.sha256(bytes))
        }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 90_000))

        for clip in clips { try commitLeaseClip(store, clip.key, clip.bytes, episodeId: "ep-0") }
        let shared = HammerState(writers: 2)
        let operationsPerWriter = 300

        @Sendable func reader(_ seed: Int) {
            var i = 0
            while shared.writersLeft.load(ordering: .sequentiallyConsistent) > 0 {
                i += 1
                let clip = clips[(i * 7 + seed * 5) % clips.count]
                do {
                    guard let lease = try store.lookup(clip.key, deferFlush: i % 2 == 0) else {
                        shared.tally.withLock { $0.misses += 1 }
                        continue
                    }
                    defer { lease.release() }
                    if i % 3 == 0 { sched_yield() }  // widen the window between open and read
                    let read = try bytesThrough(lease)
                    let problem: String? =
                        lease.record.byteCount != Int64(clip.bytes.count) ? "record of \(lease.record.byteCount) bytes" :
                        lease.record.digest != clip.digest ? "record with another digest" :
                        read.count != clip.bytes.count ? "read \(read.count) of \(clip.bytes.count) bytes" :
                        Digest.sha256(read) != clip.digest ? "read bytes of another clip" : nil
                    shared.tally.withLock { t in
                        if let problem { t.bad.append("\(clip.key.hex.prefix(8)): \(problem)") } else { t.hits += 1 }
                    }
                } catch {
                    shared.tally.withLock { $0.errors.append("reader: \(error)") }
                }
            }
        }

        @Sendable func writer(_ seed: Int) {
            defer { shared.writersLeft.subtract(1, ordering: .sequentiallyConsistent) }
            for i in (seed * 1000)..<(seed * 1000 + operationsPerWriter) {
                let clip = clips[(i * 11 + seed) % clips.count]
                do {
                    switch i % 20 {
                    case 0:
                        let evicted = try store.makeRoom(bytes: Int64(20_000 + (i % 5) * 10_000))
                        shared.tally.withLock { $0.evicted += evicted.count }
                    case 7:
                        let purged = try store.purge(episodeId: "ep-\(i % 4)")
                        shared.tally.withLock { $0.purged += purged.count }
                    case 13:
                        try store.dropStaleRecords()
                    default:
                        if try !store.contains(clip.key) {
                            try commitLeaseClip(store, clip.key, clip.bytes, episodeId: "ep-\(i % 4)")
                            shared.tally.withLock { $0.commits += 1 }
                        }
                    }
                } catch {
                    shared.tally.withLock { $0.errors.append("writer: \(error)") }
                }
            }
        }

        let threads = DispatchGroup()
        let roles: [@Sendable () -> Void] = [{ reader(0) }, { reader(1) }, { reader(2) }, { writer(0) }, { writer(1) }]
        for role in roles {
            threads.enter()
            Thread { role(); threads.leave() }.start()
        }
        await withCheckedContinuation { done in threads.notify(queue: .global()) { done.resume() } }

        let result = shared.tally.withLock { $0 }
        #expect(result.bad.isEmpty, "short or wrong reads: \(result.bad.prefix(10))")
        #expect(result.errors.isEmpty, "errors: \(result.errors.prefix(10))")
        #expect(result.hits > 100, "too few hits to mean anything: \(result.hits)")
        #expect(result.misses > 0 && result.commits > 16, "no churn: \(result.misses) misses, \(result.commits) commits")
        #expect(result.evicted + result.purged > 0)

        // What the race leaves behind is a consistent store: every record has its whole file.
        try store.dropStaleRecords()
        #expect(store.storedBytes <= 90_000 + Int64(clips.map(\.bytes.count).max()!))
        let verified = try store.verify()
        #expect(verified.wrongSize.isEmpty && verified.wrongDigest.isEmpty)
        #expect(verified.missing.isEmpty, "records without a file: \(verified.missing.count)")
        let reconciled = try store.reconcile()
        #expect(reconciled.recordsDropped == 0 && reconciled.orphanFilesRemoved == 0, "\(reconciled)")
    }
}
