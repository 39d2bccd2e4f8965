import CLMDB
import Foundation
import Support
import Synchronization

/// The local tier: clip files named by their key under `<dir>/blobs/ab/cd/<key>`, indexed in LMDB
/// under `<dir>/index`, kept under a byte budget by evicting the least recently used clips.
///
/// Crash safety: a clip is written to `<dir>/tmp`, fsynced, renamed into place (and the directory
/// fsynced) and only then recorded in LMDB. Opening the store reconciles the two: temporary files
/// are deleted, records whose file is missing or has the wrong size are dropped, and files without
/// a record are deleted (they cannot be vouched for; the clip is simply cut again when asked for).
public final class ClipStore: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var directory: String
        /// Byte budget for clip files; the least recently used clips are evicted beyond it.
        public var maxBytes: Int64
        public var initialMapSize: Int
        /// Reconcile index and disk and enforce the budget when opening (the server, `index gc`).
        /// Off for tools that only read (`index stats|verify`), which may run beside a live server
        /// whose temporary files and just-renamed clips reconciliation would take for debris.
        public var reconcileOnOpen: Bool
        public init(directory: String, maxBytes: Int64, initialMapSize: Int = 64 << 20, reconcileOnOpen: Bool = true) {
            self.directory = directory
            self.maxBytes = maxBytes
            self.initialMapSize = initialMapSize
            self.reconcileOnOpen = reconcileOnOpen
        }
    }

    public let configuration: Configuration
    public let environment: LMDBEnvironment
    let clips: LMDBDatabase
    let lru: LMDBDatabase
    let episodes: LMDBDatabase
    let frames: LMDBDatabase
    let blobRoot: String
    let temporaryRoot: String

    /// In-memory state: pins (clips being read), pending recency updates, and the bytes stored.
    private struct State {
        var pins: [ClipKey: Int] = [:]
        var pendingAccess: [ClipKey: Int64] = [:]
        var storedBytes: Int64 = 0
        /// Clips (and their bytes) evicted since the store opened, for the server's counters.
        var evictedClips = 0
        var evictedBytes: Int64 = 0
    }
    private let state = Mutex(State())
    /// Flush recency in one transaction once this many hits are pending.
    static let recencyBatch = 512

    /// Opens (creating if needed) the store and reconciles index and disk.
    public init(_ configuration: Configuration) throws {
        self.configuration = configuration
        blobRoot = configuration.directory + "/blobs"
        temporaryRoot = configuration.directory + "/tmp"
        for dir in [blobRoot, temporaryRoot] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        environment = try LMDBEnvironment(path: configuration.directory + "/index", initialMapSize: configuration.initialMapSize)
        clips = try environment.database(named: "clips")
        lru = try environment.database(named: "lru")
        episodes = try environment.database(named: "episodes")
        frames = try environment.database(named: "frames")
        guard configuration.reconcileOnOpen else {
            let total = try environment.read { txn in
                var sum: Int64 = 0
                try txn.forEach(clips) { _, value in
                    sum += (try? ClipRecord(decoding: Array(value)))?.byteCount ?? 0
                    return true
                }
                return sum
            }
            state.withLock { $0.storedBytes = total }
            return
        }
        var report = try reconcile()
        // A crash between a commit and its eviction, or a smaller budget than last run, leaves the
        // store over budget: enforce it before serving.
        // Best effort: a store on a full disk still opens (and serves; its writes are bypassed).
        report.evicted = (try? evictToBudget().count) ?? 0
        openingReport = report
    }

    /// What reconciliation and the budget did when the store was opened.
    public private(set) var openingReport = ReconcileReport()

    public static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func blobPath(_ key: ClipKey) -> String {
        // On every hit: slices of the (ASCII) hex digits, not an array of Characters.
        let hex = key.hex.utf8
        let first = hex.index(hex.startIndex, offsetBy: 2), second = hex.index(first, offsetBy: 2)
        return blobRoot + "/" + key.hex[..<first] + "/" + key.hex[first..<second] + "/" + key.hex
    }

    // MARK: - Reading

    /// A stored clip, pinned against eviction until `release()` (or deinit), with the clip file
    /// open: whatever evicts or purges the clip meanwhile, the bytes stay readable through
    /// `descriptor` until the lease is released, so a response that started never loses its file.
    public final class Lease: @unchecked Sendable {
        public let key: ClipKey
        public let record: ClipRecord
        public let path: String
        /// Open read-only on the clip file; closed by `release()`.
        public let descriptor: Int32
        private weak var store: ClipStore?
        private let released = Atomic<Bool>(false)

        init(key: ClipKey, record: ClipRecord, path: String, descriptor: Int32, store: ClipStore) {
            self.key = key
            self.record = record
            self.path = path
            self.descriptor = descriptor
            self.store = store
        }

        public func release() {
            guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
            close(descriptor)
            store?.unpin(key)
        }

        /// Ends the lease but keeps the file open: the caller owns `descriptor` from now on (and
        /// must close it). The bytes stay readable through it whatever happens to the clip.
        public func releaseKeepingDescriptor() -> Int32? {
            guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return nil }
            store?.unpin(key)
            return descriptor
        }

        deinit { release() }
    }

    /// The clip stored under `key`, pinned, with its access recorded; nil when absent.
    /// A read transaction only, unless a batch of access times is due (`deferFlush: false`, the
    /// default, writes it here; with `true` the caller flushes when `recencyFlushDue` says so, so
    /// lookups never write on a thread that must not block).
    public func lookup(_ key: ClipKey, deferFlush: Bool = false) throws -> Lease? {
        // Pin first so an eviction between the read and the pin cannot remove the file.
        pin(key)
        let record: ClipRecord?
        do {
            record = try environment.read { txn in
                try txn.withValue(clips, key: key.bytes) { value in try value.map { try ClipRecord(decoding: Array($0)) } }
            }
        } catch {
            unpin(key)
            throw error
        }
        guard let record else { unpin(key); return nil }
        // Opened now, not when the body is sent: an eviction that committed between the read
        // above and this open leaves no file (a miss, cut again); one after it cannot hurt.
        let path = blobPath(key)
        let descriptor = Posix.openForReading(path)
        var info = stat()
        guard descriptor >= 0, fstat(descriptor, &info) == 0, Int64(info.st_size) == record.byteCount else {
            // No file, or not this clip's length (deleted by hand, a record a full disk kept from
            // being dropped): a miss. The record goes, so the clip is cut and stored again.
            if descriptor >= 0 { close(descriptor) }
            unpin(key)
            staleRecords.withLock { _ = $0.insert(key) }
            return nil
        }
        touch(key, flush: !deferFlush)
        return Lease(key: key, record: record, path: path, descriptor: descriptor, store: self)
    }

    public func contains(_ key: ClipKey) throws -> Bool {
        try environment.read { try $0.withValue(clips, key: key.bytes) { $0 != nil } }
            && !staleRecords.withLock({ $0.contains(key) })
    }

    /// Records found without their file by `lookup`, dropped by `dropStaleRecords` (a write,
    /// kept off the lookup path). Until then they count as absent.
    private let staleRecords = Mutex<Set<ClipKey>>([])

    public var hasStaleRecords: Bool { staleRecords.withLock { !$0.isEmpty } }

    /// Drops the records `lookup` found without a whole file.
    public func dropStaleRecords() throws {
        let keys = staleRecords.withLock { $0 }
        guard !keys.isEmpty else { return }
        let dropped = try environment.write { txn -> [ClipRecord] in
            var dropped: [ClipRecord] = []
            for key in keys {
                guard let bytes = try txn.get(clips, key: key.bytes), let record = try? ClipRecord(decoding: bytes) else { continue }
                var info = stat()
                // Checked again under the write lock: a fill may have stored the clip meanwhile.
                let present = stat(blobPath(key), &info) == 0
                if present, Int64(info.st_size) == record.byteCount { continue }
                try txn.delete(clips, key: key.bytes)
                try txn.delete(lru, key: Self.lruKey(record.lastAccessMs, key))
                if present { unlink(blobPath(key)) }  // a wrong-size file: not this clip, and uncounted
                dropped.append(record)
            }
            return dropped
        }
        state.withLock { s in for record in dropped { s.storedBytes -= record.byteCount } }
        staleRecords.withLock { $0.subtract(keys) }
    }

    private func pin(_ key: ClipKey) { state.withLock { $0.pins[key, default: 0] += 1 } }

    fileprivate func unpin(_ key: ClipKey) {
        state.withLock {
            let n = ($0.pins[key] ?? 1) - 1
            $0.pins[key] = n > 0 ? n : nil
        }
    }

    /// Records a hit without a write transaction; hits are flushed in batches.
    public func touch(_ key: ClipKey, flush: Bool = true) {
        let flushNow = state.withLock {
            $0.pendingAccess[key] = Self.nowMs()
            return $0.pendingAccess.count >= Self.recencyBatch
        }
        if flushNow && flush { try? flushRecency() }
    }

    /// True when enough access times are pending that `flushRecency` should run.
    public var recencyFlushDue: Bool { state.withLock { $0.pendingAccess.count >= Self.recencyBatch } }

    /// Writes pending access times in one transaction.
    public func flushRecency() throws {
        let pending = state.withLock { s -> [ClipKey: Int64] in
            defer { s.pendingAccess = [:] }
            return s.pendingAccess
        }
        guard !pending.isEmpty else { return }
        try environment.write { txn in
            for (key, time) in pending {
                guard let bytes = try txn.get(clips, key: key.bytes), var record = try? ClipRecord(decoding: bytes) else { continue }
                guard time > record.lastAccessMs else { continue }
                try txn.delete(lru, key: Self.lruKey(record.lastAccessMs, key))
                record.lastAccessMs = time
                try txn.put(clips, key: key.bytes, value: record.encoded())
                try txn.put(lru, key: Self.lruKey(time, key), value: [UInt8]())
            }
        }
    }

    static func lruKey(_ time: Int64, _ key: ClipKey) -> [UInt8] {
        var k = withUnsafeBytes(of: UInt64(bitPattern: time).bigEndian) { Array($0) }
        k.append(contentsOf: key.bytes)
        return k
    }

    // MARK: - Writing

    /// Starts writing a clip. Concurrent fills of one key are the caller's to coalesce; two fills
    /// of the same key still end in one intact file (the later rename wins, both complete).
    /// `createdMs`: the clip's creation time when it is a copy of one made earlier (default: now).
    public func beginFill(_ key: ClipKey, createdMs: Int64? = nil) throws -> BlobFill {
        let name = "\(key.hex).\(getpid()).\(UInt64.random(in: 0...UInt64.max)).partial"
        return try BlobFill(key: key, temporaryPath: "\(temporaryRoot)/\(name)", startedMs: createdMs ?? Self.nowMs())
    }

    /// Makes a finished fill durable and visible: fsync, rename into place, fsync the directory,
    /// then record it. Evicts older clips if the store is now over budget.
    /// On any failure (a full disk, an I/O error, an index that cannot grow) nothing is left
    /// behind: no temporary file, no file without a record, no record without a file.
    @discardableResult
    public func commit(_ fill: BlobFill, secondTierLocation: String? = nil, episodeId: String? = nil) throws -> ClipRecord {
        let digest: [UInt8]
        do { digest = try fill.seal() } catch {
            fill.abort()
            throw error
        }
        let path = blobPath(fill.key)
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try Posix.makeDirectories(directory)
            try Posix.rename(fill.temporaryPath, to: path)
        } catch {
            fill.abort()
            throw error
        }
        fill.committed = true
        let now = Self.nowMs()
        let record = ClipRecord(byteCount: fill.byteCount, digest: digest, secondTierLocation: secondTierLocation, createdMs: fill.startedMs,
                                lastAccessMs: now, episodeId: episodeId)
        // Room first, so the bytes stored never exceed the budget, as anyone watching sees them.
        let over = storedBytes + record.byteCount - configuration.maxBytes
        if over > 0 { _ = try? evict(atLeast: over) }
        let replaced: ClipRecord?
        do {
            try Posix.fsyncDirectory(directory)
            replaced = try environment.write { txn -> ClipRecord? in
                let old = try txn.get(clips, key: fill.key.bytes).flatMap { try? ClipRecord(decoding: $0) }
                if let old { try txn.delete(lru, key: Self.lruKey(old.lastAccessMs, fill.key)) }
                try txn.put(clips, key: fill.key.bytes, value: record.encoded())
                try txn.put(lru, key: Self.lruKey(now, fill.key), value: [UInt8]())
                return old
            }
        } catch {
            // The file is in place but unrecorded: remove it (a replaced record, whose file this
            // was, finds no file and counts as a miss; reconciliation drops it).
            unlink(path)
            throw error
        }
        state.withLock { $0.storedBytes += record.byteCount - (replaced?.byteCount ?? 0) }
        staleRecords.withLock { _ = $0.remove(fill.key) }  // stored again: no longer a record without its file
        // The clip is stored whatever happens next; a failed eviction (a full disk) is retried by the next commit.
        _ = try? evictToBudget()
        return record
    }

    /// Records that the clip is now also in the second tier (clip bucket or directory) at `location`.
    public func setSecondTierLocation(_ key: ClipKey, _ location: String) throws {
        try environment.write { txn in
            guard let bytes = try txn.get(clips, key: key.bytes) else { return }
            var record = try ClipRecord(decoding: bytes)
            record.secondTierLocation = location
            try txn.put(clips, key: key.bytes, value: record.encoded())
        }
    }

    // MARK: - Budget

    public var storedBytes: Int64 { state.withLock { $0.storedBytes } }

    /// Clips evicted to keep the budget or make room since the store opened, and their bytes
    /// (purges are not evictions).
    public var evictions: (clips: Int, bytes: Int64) { state.withLock { ($0.evictedClips, $0.evictedBytes) } }

    /// Evicts least recently used, unpinned clips until the store is within its budget.
    /// Returns the keys evicted.
    @discardableResult
    public func evictToBudget() throws -> [ClipKey] {
        guard storedBytes > configuration.maxBytes else { return [] }
        return try evict(atLeast: storedBytes - configuration.maxBytes)
    }

    /// Evicts least recently used, unpinned clips until `bytes` are freed (or none is left to
    /// evict): room for new clips when the disk filled up before the budget did.
    @discardableResult
    public func makeRoom(bytes: Int64) throws -> [ClipKey] {
        try evict(atLeast: bytes)
    }

    private func evict(atLeast excess: Int64) throws -> [ClipKey] {
        try? flushRecency()  // recency is a hint; a store that cannot write it still evicts
        let pinned = state.withLock { Set($0.pins.keys) }
        var victims: [(ClipKey, ClipRecord)] = []
        try environment.write { txn in
            var freed: Int64 = 0
            var candidates: [(ClipKey, [UInt8])] = []
            try txn.forEach(lru) { lruKey, _ in
                guard lruKey.count == 8 + 64, let key = ClipKey(hex: String(decoding: lruKey[8...], as: UTF8.self)) else { return true }
                if pinned.contains(key) { return true }
                candidates.append((key, Array(lruKey)))
                return true
            }
            for (key, lruKey) in candidates where freed < excess {
                guard let bytes = try txn.get(clips, key: key.bytes), let record = try? ClipRecord(decoding: bytes) else {
                    try txn.delete(lru, key: lruKey)
                    continue
                }
                try txn.delete(clips, key: key.bytes)
                try txn.delete(lru, key: lruKey)
                victims.append((key, record))
                freed += record.byteCount
            }
        }
        // Files go after the commit: a crash in between leaves an orphan file, which start-up removes.
        for (key, record) in victims {
            unlink(blobPath(key))
            state.withLock {
                $0.storedBytes -= record.byteCount
                $0.evictedClips += 1
                $0.evictedBytes += record.byteCount
            }
        }
        return victims.map(\.0)
    }

    /// Removes every stored clip of `episodeId` (pinned ones too: their readers hold the file
    /// open) and returns their records, so the caller can remove second-tier copies as well.
    /// Clips stored before records named their episode (format 1) are not found here; they
    /// age out through the budget.
    public func purge(episodeId: String) throws -> [ClipRecord] {
        var victims: [(ClipKey, ClipRecord)] = []
        try environment.write { txn in
            try txn.forEach(clips) { keyBytes, value in
                if let record = try? ClipRecord(decoding: Array(value)), record.episodeId == episodeId,
                   let key = ClipKey(hex: String(decoding: keyBytes, as: UTF8.self)) {
                    victims.append((key, record))
                }
                return true
            }
            for (key, record) in victims {
                try txn.delete(clips, key: key.bytes)
                try txn.delete(lru, key: Self.lruKey(record.lastAccessMs, key))
            }
            try txn.delete(episodes, key: Array(episodeId.utf8))
        }
        for (key, record) in victims {
            unlink(blobPath(key))
            state.withLock {
                $0.storedBytes -= record.byteCount
                $0.pendingAccess[key] = nil
            }
        }
        return victims.map(\.1)
    }

    // MARK: - Maintenance

    public struct ReconcileReport: Sendable, Equatable {
        public var temporaryFilesRemoved = 0
        public var recordsDropped = 0
        public var orphanFilesRemoved = 0
        public var evicted = 0
        public var clips = 0
        public var bytes: Int64 = 0
    }

    /// Makes index and disk agree (see the type's documentation). Run at start-up and by `index gc`.
    @discardableResult
    public func reconcile() throws -> ReconcileReport {
        var report = ReconcileReport()
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: temporaryRoot)) ?? [] {
            unlink("\(temporaryRoot)/\(name)")
            report.temporaryFilesRemoved += 1
        }
        var known = Set<String>()
        var total: Int64 = 0
        var scanned = false
        do {
            try environment.write { txn in
                known = []  // the body runs again when the map grows
                total = 0
                var drop: [[UInt8]] = []
                var dropLRU: [[UInt8]] = []
                try txn.forEach(clips) { keyBytes, value in
                    let hex = String(decoding: keyBytes, as: UTF8.self)
                    guard let key = ClipKey(hex: hex), let record = try? ClipRecord(decoding: Array(value)) else {
                        drop.append(Array(keyBytes))
                        return true
                    }
                    var info = stat()
                    if stat(blobPath(key), &info) != 0 || Int64(info.st_size) != record.byteCount {
                        drop.append(Array(keyBytes))
                        dropLRU.append(Self.lruKey(record.lastAccessMs, key))
                    } else {
                        known.insert(hex)
                        total += record.byteCount
                    }
                    return true
                }
                scanned = true
                for key in drop { try txn.delete(clips, key: key) }
                for key in dropLRU { try txn.delete(lru, key: key) }
                report.recordsDropped = drop.count
            }
        } catch where scanned {
            // Only dropping stale records failed (a full disk): they stay, and read as misses
            // (their file cannot be opened). The scan is complete, so orphans can still go.
            report.recordsDropped = 0
        }
        if let walker = fm.enumerator(atPath: blobRoot) {
            while let relative = walker.nextObject() as? String {
                let name = (relative as NSString).lastPathComponent
                let full = "\(blobRoot)/\(relative)"
                var isDirectory: ObjCBool = false
                guard fm.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
                if !known.contains(name) {
                    unlink(full)
                    report.orphanFilesRemoved += 1
                }
            }
        }
        state.withLock { $0.storedBytes = total }
        report.clips = known.count
        report.bytes = total
        return report
    }

    public struct VerifyReport: Sendable, Equatable {
        public var checked = 0
        public var missing: [ClipKey] = []
        public var wrongSize: [ClipKey] = []
        public var wrongDigest: [ClipKey] = []
        public var isClean: Bool { missing.isEmpty && wrongSize.isEmpty && wrongDigest.isEmpty }
    }

    /// Re-reads every stored clip and recomputes its SHA-256.
    public func verify() throws -> VerifyReport {
        var entries: [(ClipKey, ClipRecord)] = []
        try environment.read { txn in
            try txn.forEach(clips) { keyBytes, value in
                if let key = ClipKey(hex: String(decoding: keyBytes, as: UTF8.self)), let record = try? ClipRecord(decoding: Array(value)) {
                    entries.append((key, record))
                }
                return true
            }
        }
        var report = VerifyReport()
        for (key, record) in entries {
            report.checked += 1
            guard let handle = FileHandle(forReadingAtPath: blobPath(key)) else { report.missing.append(key); continue }
            defer { try? handle.close() }
            var hasher = SHA256Hasher()
            var size: Int64 = 0
            while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                hasher.update(chunk)
                size += Int64(chunk.count)
            }
            if size != record.byteCount { report.wrongSize.append(key) }
            else if hasher.finalize() != record.digest { report.wrongDigest.append(key) }
        }
        return report
    }

    public struct Stats: Sendable, Equatable {
        public var clips: Int
        public var bytes: Int64
        public var maxBytes: Int64
        public var episodes: Int
        public var frameIndexes: Int
        public var mapSize: Int
    }

    public func stats() throws -> Stats {
        try environment.read { txn in
            Stats(clips: try txn.count(clips), bytes: storedBytes, maxBytes: configuration.maxBytes,
                  episodes: try txn.count(episodes), frameIndexes: try txn.count(frames), mapSize: environment.currentMapSize)
        }
    }

    // MARK: - Episodes and frame indexes

    public func episode(_ id: String) throws -> EpisodeRecord? {
        try environment.read { txn in
            try txn.withValue(episodes, key: Array(id.utf8)) { value in try value.map { try EpisodeRecord(decoding: Array($0)) } }
        }
    }

    public func putEpisode(_ id: String, _ record: EpisodeRecord) throws {
        try environment.write { try $0.put(episodes, key: Array(id.utf8), value: record.encoded()) }
    }

    /// Forgets a resolution (the source changed, or an operator purged the episode).
    public func deleteEpisode(_ id: String) throws {
        _ = try environment.write { try $0.delete(episodes, key: Array(id.utf8)) }
    }

    /// The stored frame index of a source (opaque bytes owned by the Trim module).
    public func frameIndex(source: String) throws -> [UInt8]? {
        try environment.read { try $0.get(frames, key: Array(source.utf8)) }
    }

    public func putFrameIndex(source: String, _ bytes: [UInt8]) throws {
        try environment.write { try $0.put(frames, key: Array(source.utf8), value: bytes) }
    }

    public func deleteFrameIndex(source: String) throws {
        _ = try environment.write { try $0.delete(frames, key: Array(source.utf8)) }
    }
}
