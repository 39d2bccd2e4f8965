import ArgumentParser
import Foundation
import Index

/// `clipproxy index stats|verify|gc`: the local store as an operator sees it. Output is JSON.
enum IndexTool {
    /// `reconcile`: only for gc; stats and verify only read, and may run beside a live server.
    static func open(_ configuration: Configuration, reconcile: Bool = false) throws -> ClipStore {
        try ClipStore(.init(directory: configuration.cacheDir, maxBytes: configuration.cacheMaxBytes, reconcileOnOpen: reconcile))
    }

    static func stats(_ configuration: Configuration) throws {
        let s = try open(configuration).stats()
        try TrimTool.printJSON([
            "directory": configuration.cacheDir, "clips": s.clips, "bytes": s.bytes, "max_bytes": s.maxBytes,
            "episodes": s.episodes, "frame_indexes": s.frameIndexes, "lmdb_map_bytes": s.mapSize,
        ])
    }

    /// Exits non-zero when any stored clip is missing, truncated or altered, so scripts can alert.
    static func verify(_ configuration: Configuration) throws {
        let report = try open(configuration).verify()
        try TrimTool.printJSON([
            "checked": report.checked, "clean": report.isClean,
            "missing": report.missing.map(\.hex), "wrong_size": report.wrongSize.map(\.hex), "wrong_digest": report.wrongDigest.map(\.hex),
        ])
        if !report.isClean { throw ExitCode(1) }
    }

    /// Opening the store reconciles it and enforces the budget; gc reports what that did.
    static func gc(_ configuration: Configuration) throws {
        let store = try open(configuration, reconcile: true)
        let report = store.openingReport
        try TrimTool.printJSON([
            "clips": try store.stats().clips, "bytes": store.storedBytes, "records_dropped": report.recordsDropped,
            "orphan_files_removed": report.orphanFilesRemoved, "temporary_files_removed": report.temporaryFilesRemoved,
            "evicted": report.evicted,
        ])
    }
}
