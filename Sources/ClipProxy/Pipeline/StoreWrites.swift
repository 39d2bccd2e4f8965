import Foundation
import Index
import Logging
import Support
import Synchronization

/// Writes to the local store that must never fail a response: a clip's file, its commit, a
/// resolution or a frame index. When the disk is full, failing or read-only, or the index
/// cannot grow, the write is skipped ("bypassed"): the response is served from memory or the
/// source, the half-written file is removed, the cause is counted
/// (`clipproxy_cache_bypass_total{reason}`) and logged once until writes succeed again, and on
/// a full disk the least recently used clips are evicted to make room for the next ones.
final class StoreWrites: Sendable {
    enum Reason: String, CaseIterable, Sendable {
        case diskFull = "disk_full", ioError = "io_error", readOnly = "read_only", indexFull = "index_full", other = "other"
    }

    let store: ClipStore
    let logger: Logger
    let metrics: ClipMetrics
    /// Causes seen since the last successful write of the same kind (a clip, an episode, ...):
    /// each is logged once, not once per clip; a small index write that still fits does not
    /// make failing clip writes log again.
    private let activeCauses = Mutex<[String: Set<Reason>]>([:])

    init(store: ClipStore, logger: Logger, metrics: ClipMetrics) {
        self.store = store
        self.logger = logger
        self.metrics = metrics
    }

    /// Why a store write failed, from the errno or LMDB code it carries.
    static func reason(_ error: any Error) -> Reason {
        if let error = error as? LMDBError, error.isMapFull { return .indexFull }
        let code: Int32? = switch error {
        case let error as SystemCallError: error.code
        case let error as LMDBError: error.code  // LMDB passes system errors through as errno
        case let error as IndexError: if case .io(_, let code) = error { code } else { nil }
        default: nil
        }
        switch code {
        case ENOSPC?, EDQUOT?: return .diskFull
        case EROFS?, EACCES?, EPERM?: return .readOnly
        case EIO?: return .ioError
        default: return .other
        }
    }

    /// Runs a store write; on failure counts and logs the bypass and returns false.
    /// `roomFor`: bytes to free on a full disk, so the next write fits.
    @discardableResult
    func attempt(_ what: String, roomFor bytes: Int64 = 0, _ write: () throws -> Void) -> Bool {
        do {
            try write()
            succeeded(what)
            return true
        } catch {
            bypassed(what, error, roomFor: bytes)
            return false
        }
    }

    /// A write failed: count it, log the cause the first time, and make room on a full disk.
    func bypassed(_ what: String, _ error: any Error, roomFor bytes: Int64 = 0) {
        let reason = Self.reason(error)
        metrics.cacheBypass[reason]?.increment()
        if activeCauses.withLock({ $0[what, default: []].insert(reason).inserted }) {
            logger.error("local store bypassed: clips are served but not cached until writes succeed again",
                         metadata: ["store.write": "\(what)", "bypass.reason": "\(reason.rawValue)", "error": "\(error)"])
        }
        if reason == .diskFull || reason == .indexFull, bytes > 0 {
            // Evicting frees disk space for the next clip; a full disk owned by others costs our
            // least recently used clips, which is what a cache is for.
            if let evicted = try? store.makeRoom(bytes: bytes), !evicted.isEmpty {
                logger.info("evicted clips to make room on a full disk", metadata: ["cache.evicted": "\(evicted.count)"])
            }
        }
    }

    /// A write of this kind went through: if such writes had been failing, say they are back.
    func succeeded(_ what: String) {
        guard let healed = activeCauses.withLock({ $0.removeValue(forKey: what) }), !healed.isEmpty else { return }
        logger.info("local store writes resumed", metadata: ["store.write": "\(what)", "bypass.reasons": "\(healed.map(\.rawValue).sorted())"])
    }
}

/// A fill's copy into the local store, written beside the copy in memory that clients read.
/// Its temporary file is created with the first bytes, after the fill has them (never on the
/// client's path). On a full disk it makes room once (evicting least recently used clips) and
/// starts over from the fill's memory, so the clip being cut is cached too; any other failure,
/// or a second one, gives the copy up (file removed) and the fill goes on, the cause counted as
/// a bypass when the fill ends. `@unchecked Sendable`: one fill is written by one task at a time.
final class LocalCopy: @unchecked Sendable {
    private(set) var blob: BlobFill?
    private(set) var failure: (any Error)?
    private let store: ClipStore
    private let key: ClipKey
    /// The clip's creation time, recorded with it (a copy keeps its original's).
    var createdMs: Int64
    private var madeRoom = false

    init(store: ClipStore, key: ClipKey, createdMs: Int64) {
        self.store = store
        self.key = key
        self.createdMs = createdMs
    }

    /// Appends `bytes`, which `fill` (whose memory holds the clip so far) has just appended too.
    func write(_ bytes: UnsafeRawBufferPointer, of fill: Fill) {
        guard failure == nil else { return }
        do {
            if blob == nil { blob = try store.beginFill(key, createdMs: createdMs) }
            try blob!.write(bytes)
        } catch {
            blob?.abort()
            guard !madeRoom, StoreWrites.reason(error) == .diskFull else {
                failure = error
                return
            }
            madeRoom = true
            do {
                try store.makeRoom(bytes: 2 * fill.length)
                let fresh = try store.beginFill(key, createdMs: createdMs)
                blob = fresh
                try fill.bytes(0..<fill.bytesWritten).withUnsafeReadableBytes { try fresh.write($0) }
            } catch {
                blob?.abort()
                failure = error
            }
        }
    }

    func abort() { blob?.abort() }
}
