import Support
import CLMDB
import Foundation

/// An LMDB error with the library's own text and, where it helps, what to do.
public struct LMDBError: Error, CustomStringConvertible, Sendable, Equatable {
    public let code: Int32
    public let operation: String
    public var description: String {
        "LMDB \(operation) failed: \(String(cString: mdb_strerror(code))) (\(code))"
    }
    public var isMapFull: Bool { code == MDB_MAP_FULL }
}

@inline(__always)
func check(_ rc: Int32, _ operation: String) throws {
    if rc != 0 { throw LMDBError(code: rc, operation: operation) }
}

/// A handle to one named database inside an environment.
public struct LMDBDatabase: Sendable, Hashable {
    let dbi: MDB_dbi
    public let name: String
}

/// An LMDB environment: one directory, many named databases.
///
/// Reads run concurrently from any thread (MDB_NOTLS: a read transaction is not bound to the
/// thread that began it, which Swift tasks need). Writes are serialized by LMDB's own writer lock.
/// When a write fills the map, the map is doubled and the write retried; resizing needs every
/// transaction of this process closed, so transactions hold a shared lock and a resize an exclusive one.
///
/// `@unchecked Sendable`: the MDB_env pointer is thread-safe under these rules, and the only
/// mutable Swift state (`mapSize`) is guarded by `resizeLock`.
public final class LMDBEnvironment: @unchecked Sendable {
    private let env: OpaquePointer
    private let resizeLock: UnsafeMutablePointer<pthread_rwlock_t>  // heap: a pthread lock must not move
    private var mapSize: Int
    public let path: String

    /// Opens (creating if needed) the environment in directory `path`.
    public init(path: String, maxDatabases: Int = 16, initialMapSize: Int = 64 << 20) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "env_create")
        guard let env else { throw LMDBError(code: ENOMEM, operation: "env_create") }
        do {
            try check(mdb_env_set_maxdbs(env, MDB_dbi(maxDatabases)), "env_set_maxdbs")
            try check(mdb_env_set_mapsize(env, initialMapSize), "env_set_mapsize")
            // The reader table bounds concurrent read transactions; tasks can hold many at once.
            try check(mdb_env_set_maxreaders(env, 1024), "env_set_maxreaders")
            try check(mdb_env_open(env, path, UInt32(MDB_NOTLS), 0o644), "env_open \(path)")
            // A process killed while reading leaves its reader slot behind; free such slots.
            var dead: Int32 = 0
            mdb_reader_check(env, &dead)
            Self.allocateLockFile(path + "/lock.mdb")
        } catch {
            mdb_env_close(env)
            throw error
        }
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        self.env = env
        self.path = path
        self.mapSize = max(initialMapSize, info.me_mapsize)
        resizeLock = .allocate(capacity: 1)
        pthread_rwlock_init(resizeLock, nil)
    }

    /// The reader table lives in a shared mapping of `lock.mdb`, created sparse. On a full file
    /// system (a small tmpfs above all) the first touch of a new page of it would kill the
    /// process with SIGBUS; allocating its blocks now turns that into nothing worse than a
    /// failed allocation here (ignored: the file may still fit as it is used).
    private static func allocateLockFile(_ path: String) {
        let fd = Posix.open(path, O_RDWR)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, info.st_size > 0 { _ = posix_fallocate(fd, 0, info.st_size) }
    }

    deinit {
        mdb_env_close(env)
        pthread_rwlock_destroy(resizeLock)
        resizeLock.deallocate()
    }

    /// The current map size in bytes (grows on demand).
    public var currentMapSize: Int {
        pthread_rwlock_rdlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        return mapSize
    }

    /// Opens or creates a named database.
    public func database(named name: String) throws -> LMDBDatabase {
        try write { txn in
            var dbi = MDB_dbi()
            try check(mdb_dbi_open(txn.txn, name, UInt32(MDB_CREATE), &dbi), "dbi_open \(name)")
            return LMDBDatabase(dbi: dbi, name: name)
        }
    }

    /// Runs `body` in a read-only transaction. Values lent to `body` are valid only inside it.
    public func read<T>(_ body: (LMDBTransaction) throws -> T) throws -> T {
        pthread_rwlock_rdlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), "txn_begin(read)")
        defer { mdb_txn_abort(txn) }  // read transactions end by abort; nothing to commit
        return try body(LMDBTransaction(txn: txn!))
    }

    /// Runs `body` in a write transaction: committed when it returns, aborted when it throws.
    /// If the map is full, the map is doubled and `body` runs again, so it must not have side
    /// effects outside the transaction.
    public func write<T>(_ body: (LMDBTransaction) throws -> T) throws -> T {
        while true {
            do {
                return try writeOnce(body)
            } catch let error as LMDBError where error.isMapFull {
                try grow()
            }
        }
    }

    private func writeOnce<T>(_ body: (LMDBTransaction) throws -> T) throws -> T {
        pthread_rwlock_rdlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, 0, &txn), "txn_begin(write)")
        let result: T
        do {
            result = try body(LMDBTransaction(txn: txn!))
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        try check(mdb_txn_commit(txn), "txn_commit")  // commit frees txn even on failure
        return result
    }

    private func grow() throws {
        pthread_rwlock_wrlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        let newSize = mapSize * 2
        try check(mdb_env_set_mapsize(env, newSize), "env_set_mapsize")
        mapSize = newSize
    }
}

/// A transaction lent to a closure. Never store it or any buffer it hands out.
public struct LMDBTransaction {
    let txn: OpaquePointer

    /// Lends the stored bytes of `key` to `body`, or nil when absent. The buffer is LMDB's mapped
    /// memory: valid only during `body`, and never to be written.
    public func withValue<T>(_ db: LMDBDatabase, key: some ContiguousBytes,
                             _ body: (UnsafeRawBufferPointer?) throws -> T) throws -> T {
        try key.withUnsafeBytes { keyBytes in
            var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
            var v = MDB_val()
            let rc = mdb_get(txn, db.dbi, &k, &v)
            if rc == MDB_NOTFOUND { return try body(nil) }
            try check(rc, "get(\(db.name))")
            return try body(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
        }
    }

    /// A copy of the stored bytes of `key`, or nil when absent.
    public func get(_ db: LMDBDatabase, key: some ContiguousBytes) throws -> [UInt8]? {
        try withValue(db, key: key) { $0.map { Array($0) } }
    }

    public func put(_ db: LMDBDatabase, key: some ContiguousBytes, value: some ContiguousBytes) throws {
        try key.withUnsafeBytes { keyBytes in
            try value.withUnsafeBytes { valueBytes in
                var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
                var v = MDB_val(mv_size: valueBytes.count, mv_data: UnsafeMutableRawPointer(mutating: valueBytes.baseAddress))
                try check(mdb_put(txn, db.dbi, &k, &v, 0), "put(\(db.name))")
            }
        }
    }

    /// Deletes `key`; returns false when it was absent.
    @discardableResult
    public func delete(_ db: LMDBDatabase, key: some ContiguousBytes) throws -> Bool {
        try key.withUnsafeBytes { keyBytes in
            var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
            let rc = mdb_del(txn, db.dbi, &k, nil)
            if rc == MDB_NOTFOUND { return false }
            try check(rc, "del(\(db.name))")
            return true
        }
    }

    /// Visits entries in key order starting at the first key ≥ `start` (or the first key);
    /// `body` returns false to stop. Buffers are valid only during each call.
    public func forEach(_ db: LMDBDatabase, from start: [UInt8]? = nil,
                        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(txn, db.dbi, &cursor), "cursor_open(\(db.name))")
        defer { mdb_cursor_close(cursor) }
        var k = MDB_val()
        var v = MDB_val()
        var startCopy = start ?? []
        var rc: Int32 = startCopy.withUnsafeMutableBytes { raw in
            if start != nil {
                k = MDB_val(mv_size: raw.count, mv_data: raw.baseAddress)
                return mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE)
            }
            return mdb_cursor_get(cursor, &k, &v, MDB_FIRST)
        }
        while rc == 0 {
            let keep = try body(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                                UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
            if !keep { return }
            rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)
        }
        if rc != MDB_NOTFOUND { try check(rc, "cursor_get(\(db.name))") }
    }

    /// Number of entries in `db`.
    public func count(_ db: LMDBDatabase) throws -> Int {
        var stat = MDB_stat()
        try check(mdb_stat(txn, db.dbi, &stat), "stat(\(db.name))")
        return stat.ms_entries
    }
}
