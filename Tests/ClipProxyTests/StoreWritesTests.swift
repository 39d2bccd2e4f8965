import Foundation
import Logging
import Metrics
import Prometheus
import Support
import Synchronization
import Testing
import TestSupport
@testable import ClipProxy
@testable import Index

/// Log lines a test can look at, kept in memory.
final class CapturedLog: Sendable {
    private let lines = Mutex<[(level: Logger.Level, message: String, metadata: Logger.Metadata)]>([])

    var logger: Logger { Logger(label: "test") { _ in CapturingHandler(log: self) } }

    func messages(_ message: String) -> [Logger.Metadata] {
        lines.withLock { $0.filter { $0.message == message }.map(\.metadata) }
    }

    fileprivate func append(_ event: LogEvent) {
        lines.withLock { $0.append((event.level, "\(event.message)", event.metadata ?? [:])) }
    }

    private struct CapturingHandler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { log.append(event) }
    }
}

/// `ClipMetrics` on a registry of its own (the process-wide bootstrap is left alone).
func isolatedMetrics() -> ClipMetrics {
    let registry = PrometheusCollectorRegistry()
    let factory = PrometheusMetricsFactory(registry: registry)
    return ClipMetrics(registry: registry, factory: factory)
}

/// The value of `clipproxy_cache_bypass_total{reason=...}` in `metrics`' exposition (0 when absent).
func bypassCount(_ metrics: ClipMetrics, _ reason: StoreWrites.Reason) -> Int {
    let prefix = "clipproxy_cache_bypass_total{reason=\"\(reason.rawValue)\"} "
    let line = metrics.exposition().split(separator: "\n").first { $0.hasPrefix(prefix) }
    return line.flatMap { Int($0.dropFirst(prefix.count)) } ?? 0
}

/// Commits `bytes` as the clip `identity` and returns its key.
@discardableResult
func commitClip(_ store: ClipStore, _ identity: String, _ bytes: [UInt8], episodeId: String? = nil) throws -> ClipKey {
    let key = ClipKey(identity: identity)
    let blob = try store.beginFill(key)
    try blob.write(bytes)
    try store.commit(blob, episodeId: episodeId)
    return key
}

/// The whole clip read through a lease's descriptor.
func readThrough(_ lease: ClipStore.Lease) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: Int(lease.record.byteCount) + 1)
    let n = try bytes.withUnsafeMutableBytes {
        try Posix.readFully(lease.descriptor, into: $0.baseAddress!, count: $0.count, at: 0, path: lease.path)
    }
    return Array(bytes[0..<n])
}

@Suite("StoreWrites: why a store write failed, logged once per cause, room made on a full disk")
struct StoreWritesTests {
    @Test("reason maps errno and LMDB codes to the bypass reasons")
    func reasons() {
        let mapFull: Int32 = -30792  // MDB_MAP_FULL
        let cases: [(any Error, StoreWrites.Reason)] = [
            (SystemCallError("write", "/x", code: ENOSPC), .diskFull),
            (SystemCallError("write", "/x", code: EDQUOT), .diskFull),
            (SystemCallError("create", "/x", code: EROFS), .readOnly),
            (SystemCallError("create", "/x", code: EACCES), .readOnly),
            (SystemCallError("rename", "/x", code: EPERM), .readOnly),
            (SystemCallError("fsync", "/x", code: EIO), .ioError),
            (SystemCallError("open", "/x", code: ENOENT), .other),
            (SystemCallError("write", "/x", code: EBADF), .other),
            (LMDBError(code: mapFull, operation: "put"), .indexFull),
            (LMDBError(code: ENOSPC, operation: "commit"), .diskFull),
            (LMDBError(code: EIO, operation: "commit"), .ioError),
            (LMDBError(code: EACCES, operation: "env_open"), .readOnly),
            (LMDBError(code: -30798, operation: "get"), .other),  // MDB_NOTFOUND
            (IndexError.io("write", ENOSPC), .diskFull),
            (IndexError.io("write", EROFS), .readOnly),
            (IndexError.io("read", EIO), .ioError),
            (IndexError.state("write after the fill ended"), .other),
            (FillError.notStored, .other),
            (ProbeFailure(id: 1), .other),
        ]
        #expect(LMDBError(code: mapFull, operation: "put").isMapFull)
        for (error, reason) in cases {
            #expect(StoreWrites.reason(error) == reason, "\(error)")
        }
    }

    @Test("A cause is logged once until a write of that kind succeeds; every bypass is counted")
    func logsOncePerCause() throws {
        let dir = try TemporaryDirectory("storewrites")
        defer { dir.remove() }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 64 << 20))
        let log = CapturedLog()
        let metrics = isolatedMetrics()
        let writes = StoreWrites(store: store, logger: log.logger, metrics: metrics)
        let bypassed = "local store bypassed: clips are served but not cached until writes succeed again"
        let resumed = "local store writes resumed"
        let full = SystemCallError("write", "/cache/tmp/x", code: ENOSPC)

        writes.bypassed("clip", full)
        writes.bypassed("clip", full)
        #expect(!writes.attempt("clip") { throw full })
        #expect(log.messages(bypassed).count == 1)
        #expect(log.messages(bypassed).first?["bypass.reason"] == "disk_full")
        #expect(bypassCount(metrics, .diskFull) == 3)
        // Another cause for the same kind is logged; the same cause for another kind too.
        writes.bypassed("clip", SystemCallError("fsync", "/x", code: EIO))
        writes.bypassed("episode", full)
        #expect(log.messages(bypassed).count == 3)
        #expect(bypassCount(metrics, .ioError) == 1 && bypassCount(metrics, .diskFull) == 4)
        // A successful episode write heals only episodes; clips keep failing silently.
        #expect(writes.attempt("episode") {})
        #expect(log.messages(resumed).map { $0["store.write"] } == ["episode"])
        writes.bypassed("clip", full)
        #expect(log.messages(bypassed).count == 3)
        // A clip write that succeeds says so once, and the next failure is logged again.
        #expect(writes.attempt("clip") {})
        #expect(writes.attempt("clip") {})
        #expect(log.messages(resumed).count == 2)
        #expect(log.messages(resumed).last?["bypass.reasons"] == "[\"disk_full\", \"io_error\"]")
        writes.bypassed("clip", full)
        #expect(log.messages(bypassed).count == 4)
        #expect(bypassCount(metrics, .diskFull) == 6 && bypassCount(metrics, .ioError) == 1)
        #expect(bypassCount(metrics, .readOnly) == 0)
    }

    @Test("A full disk or index evicts least recently used clips to make room; other causes evict nothing")
    func bypassMakesRoom() throws {
        let dir = try TemporaryDirectory("storewrites-room")
        defer { dir.remove() }
        let store = try ClipStore(.init(directory: dir.path, maxBytes: 64 << 20))
        let writes = StoreWrites(store: store, logger: CapturedLog().logger, metrics: isolatedMetrics())
        for i in 0..<6 { try commitClip(store, "room-\(i)", probeBytes(10_000, seed: UInt64(i))) }
        #expect(store.storedBytes == 60_000)
        writes.bypassed("clip", SystemCallError("write", "/x", code: EIO), roomFor: 25_000)
        writes.bypassed("clip", SystemCallError("write", "/x", code: EROFS), roomFor: 25_000)
        writes.bypassed("clip", SystemCallError("write", "/x", code: ENOSPC))  // no room asked for
        #expect(store.storedBytes == 60_000)
        writes.bypassed("clip", SystemCallError("write", "/x", code: ENOSPC), roomFor: 25_000)
        #expect(store.storedBytes == 30_000)
        writes.bypassed("frame index", LMDBError(code: -30792, operation: "put"), roomFor: 10_000)
        #expect(store.storedBytes == 20_000)
        #expect(try store.stats().clips == 2)
    }
}

/// A tmpfs of a given size mounted under a temporary directory, with a clip store whose clip
/// files and temporary files live on it (its LMDB index stays on the ordinary disk, so only the
/// clip writes meet the full disk).
struct SmallDisk {
    let root: TemporaryDirectory
    var mountPoint: String { root.path + "/fs" }
    var storeDirectory: String { root.path + "/store" }
    var temporaryFiles: String { mountPoint + "/tmp" }

    /// Whether this process may mount a tmpfs (root, or CAP_SYS_ADMIN).
    static let available: Bool = {
        guard let probe = try? TemporaryDirectory("tmpfs-probe") else { return false }
        defer { probe.remove() }
        guard mountTmpfs(probe.path, size: "64k") else { return false }
        umount2(probe.path, Int32(MNT_DETACH))
        return true
    }()

    private static func mountTmpfs(_ path: String, size: String) -> Bool {
        "size=\(size)".withCString { mount("tmpfs", path, "tmpfs", 0, $0) } == 0
    }

    init(size: String) throws {
        root = try TemporaryDirectory("small-disk")
        try FileManager.default.createDirectory(atPath: root.path + "/fs", withIntermediateDirectories: true)
        guard Self.mountTmpfs(root.path + "/fs", size: size) else {
            let code = errno
            root.remove()
            throw SystemCallError("mount tmpfs", root.path + "/fs", code: code)
        }
        let fm = FileManager.default
        try fm.createDirectory(atPath: mountPoint + "/blobs", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: mountPoint + "/tmp", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: storeDirectory, withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: storeDirectory + "/blobs", withDestinationPath: mountPoint + "/blobs")
        try fm.createSymbolicLink(atPath: storeDirectory + "/tmp", withDestinationPath: mountPoint + "/tmp")
    }

    var freeBytes: Int64 {
        var info = statvfs()
        guard statvfs(mountPoint, &info) == 0 else { return -1 }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    func remove() {
        umount2(mountPoint, Int32(MNT_DETACH))
        root.remove()
    }
}

@Suite("LocalCopy: a fill's copy into the local store on a real full disk (tmpfs)", .queuedBehindBlockingSuites,
       .enabled(if: SmallDisk.available, "mounting a tmpfs is not allowed here (needs root or CAP_SYS_ADMIN): the full-disk tests are skipped"))
struct LocalCopyFullDiskTests {
    /// Produces `expected` into `fill` and `copy` as the pipeline does: the fill first, then the copy.
    private func produce(_ expected: [UInt8], into fill: Fill, _ copy: LocalCopy, chunk: Int = 8191) throws {
        var at = 0
        while at < expected.count {
            let end = min(expected.count, at + chunk)
            try expected[at..<end].withUnsafeBytes { bytes in
                try fill.append(bytes)
                copy.write(bytes, of: fill)
            }
            at = end
        }
        fill.finish(nil)
    }

    @Test("A write that meets ENOSPC evicts old clips and the copy goes on from memory to an exact, committed clip")
    func fullDiskMakesRoom() async throws {
        let disk = try SmallDisk(size: "256k")
        defer { disk.remove() }
        let store = try ClipStore(.init(directory: disk.storeDirectory, maxBytes: 64 << 20))
        var old: [(key: ClipKey, bytes: [UInt8])] = []
        for i in 0..<5 {
            let bytes = probeBytes(40_960, seed: UInt64(100 + i))
            old.append((try commitClip(store, "old-\(i)", bytes), bytes))
        }
        // A reader holds the oldest clip: eviction must pass over it.
        let reader = try #require(try store.lookup(old[0].key))
        defer { reader.release() }
        let expected = probeBytes(60_000, seed: 7)
        try #require(disk.freeBytes < Int64(expected.count), "the tmpfs has \(disk.freeBytes) bytes free: the clip would fit")

        let fill = Fill(key: ClipKey(identity: "new clip"), length: Int64(expected.count), createdMs: 1_700_000_000_000)
        let copy = LocalCopy(store: store, key: fill.key, createdMs: fill.createdMs)
        try produce(expected, into: fill, copy)
        #expect(copy.failure == nil, "the copy gave up: \(String(describing: copy.failure))")
        let blob = try #require(copy.blob)
        #expect(blob.byteCount == Int64(expected.count))
        let record = try store.commit(blob, episodeId: "ep")
        #expect(record.digest == Digest.sha256(expected))
        #expect(record.createdMs == 1_700_000_000_000)

        // Room for twice the clip (120,000 bytes) took three 40,960-byte clips, never the leased one.
        let left = try old.filter { try store.contains($0.key) }
        #expect(left.count == 2)
        #expect(left.contains { $0.key == old[0].key })
        for clip in left {
            let lease = try #require(try store.lookup(clip.key))
            #expect(sameBytes(try readThrough(lease), clip.bytes))
            lease.release()
        }
        let lease = try #require(try store.lookup(fill.key))
        defer { lease.release() }
        #expect(sameBytes(try readThrough(lease), expected))
        #expect(try FileManager.default.contentsOfDirectory(atPath: disk.temporaryFiles).isEmpty)
        #expect(try store.verify().isClean)
    }

    @Test("With nothing evictable the copy gives up: disk_full, no temporary file left, the fill unharmed")
    func fullDiskNothingToEvict() async throws {
        let disk = try SmallDisk(size: "256k")
        defer { disk.remove() }
        let store = try ClipStore(.init(directory: disk.storeDirectory, maxBytes: 64 << 20))
        let pinnedBytes = probeBytes(40_960, seed: 11)
        let pinnedKey = try commitClip(store, "pinned", pinnedBytes)
        let reader = try #require(try store.lookup(pinnedKey))
        defer { reader.release() }
        // Someone else's file takes the rest of the disk but about 24 KiB.
        let ballast = [UInt8](repeating: 0xAB, count: Int(disk.freeBytes) - 24_576)
        try Data(ballast).write(to: URL(fileURLWithPath: disk.mountPoint + "/ballast"))
        let expected = probeBytes(60_000, seed: 12)
        try #require(disk.freeBytes < Int64(expected.count))

        let fill = Fill(key: ClipKey(identity: "no room"), length: Int64(expected.count), createdMs: 0)
        let copy = LocalCopy(store: store, key: fill.key, createdMs: 0)
        try produce(expected, into: fill, copy)

        let failure = try #require(copy.failure)
        #expect(StoreWrites.reason(failure) == .diskFull, "\(failure)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: disk.temporaryFiles).isEmpty)
        if let lastTemporary = copy.blob?.temporaryPath { #expect(!FileManager.default.fileExists(atPath: lastTemporary)) }
        // The clients' copy is whole; the leased clip is untouched and the store holds nothing new.
        try await fill.waitUntilFinished()
        #expect(sameBytes(fill.contents, expected))
        #expect(try store.contains(pinnedKey))
        #expect(sameBytes(try readThrough(reader), pinnedBytes))
        #expect(try store.lookup(fill.key) == nil)
        #expect(try store.stats().clips == 1)

        // Counted and logged as a full disk when the pipeline keeps the fill.
        let metrics = isolatedMetrics()
        let log = CapturedLog()
        StoreWrites(store: store, logger: log.logger, metrics: metrics).bypassed("clip", failure, roomFor: 4 * fill.length)
        #expect(bypassCount(metrics, .diskFull) == 1)
        #expect(log.messages("local store bypassed: clips are served but not cached until writes succeed again").first?["bypass.reason"] == "disk_full")
    }
}
