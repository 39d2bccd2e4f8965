import Foundation
import Testing
import Support
import TestSupport
@testable import Index

/// Deterministic content for a clip: its bytes depend on the seed.
func clipBytes(_ seed: Int, count: Int) -> [UInt8] {
    var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in state ^= state << 13; state ^= state >> 7; state ^= state << 17; return UInt8(truncatingIfNeeded: state) }
}

@discardableResult
func store(_ s: ClipStore, _ name: String, _ bytes: [UInt8]) throws -> ClipKey {
    let key = ClipKey(identity: name)
    let fill = try s.beginFill(key)
    for chunk in stride(from: 0, to: bytes.count, by: 7000) { try fill.write(Array(bytes[chunk..<min(bytes.count, chunk + 7000)])) }
    try s.commit(fill)
    return key
}

@Suite("Index: the crash-safe, content-addressed clip store")
struct ClipStoreTests {
    @Test("A committed clip is found with its size and digest; an aborted fill leaves nothing")
    func commitAndAbort() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let s = try ClipStore(.init(directory: dir.path, maxBytes: 10 << 20))
        let bytes = clipBytes(1, count: 123_456)
        let key = try store(s, "a", bytes)
        let lease = try #require(try s.lookup(key))
        #expect(lease.record.byteCount == 123_456)
        #expect(lease.record.digest == Digest.sha256(bytes))
        #expect(sameBytes(try Array(Data(contentsOf: URL(fileURLWithPath: lease.path))), bytes))

        let aborted = try s.beginFill(ClipKey(identity: "b"))
        try aborted.write(clipBytes(2, count: 1000))
        aborted.abort()
        #expect(try s.lookup(ClipKey(identity: "b")) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/tmp").isEmpty)
        // A fill dropped without commit or abort (a failed request) also cleans up.
        do { let dropped = try s.beginFill(ClipKey(identity: "c")); try dropped.write([1, 2, 3]) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/tmp").isEmpty)
    }

    @Test("verify detects a flipped byte in a stored clip")
    func verifyFindsFlippedByte() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let s = try ClipStore(.init(directory: dir.path, maxBytes: 10 << 20))
        var keys: [ClipKey] = []
        for i in 0..<10 { keys.append(try store(s, "clip\(i)", clipBytes(i, count: 20_000 + i))) }
        #expect(try s.verify().isClean)
        let victim = s.blobPath(keys[4])
        var data = try Data(contentsOf: URL(fileURLWithPath: victim))
        data[777] ^= 0x01
        try data.write(to: URL(fileURLWithPath: victim))
        let report = try s.verify()
        #expect(report.checked == 10)
        #expect(report.wrongDigest == [keys[4]])
        #expect(report.missing.isEmpty && report.wrongSize.isEmpty)
    }

    @Test("Eviction keeps the store under budget and never removes a clip that is being read")
    func evictionRespectsBudgetAndLeases() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let budget: Int64 = 1_000_000
        let s = try ClipStore(.init(directory: dir.path, maxBytes: budget))
        let heldKey = try store(s, "held", clipBytes(999, count: 50_000))
        let held = try #require(try s.lookup(heldKey))
        var recent: [ClipKey] = []
        for i in 0..<400 {
            recent.append(try store(s, "clip\(i)", clipBytes(i, count: 10_000 + (i * 7919) % 40_000)))
            #expect(s.storedBytes <= budget, "over budget after insert \(i): \(s.storedBytes)")
            // Keep touching one clip: the least recently used go first, not it.
            if i % 10 == 0, let lease = try s.lookup(recent[0]) { lease.release() }
        }
        #expect(try s.contains(heldKey), "a leased clip survives eviction")
        #expect(FileManager.default.fileExists(atPath: held.path))
        #expect(try s.contains(recent[0]), "a clip hit often is kept")
        #expect(!(try s.contains(recent[1])), "an old clip never read again is evicted")
        #expect(try s.contains(recent[399]), "the newest clip is kept")
        held.release()
        // Once released, it is an ordinary old clip and goes at the next eviction.
        for i in 400..<450 { try store(s, "clip\(i)", clipBytes(i, count: 30_000)) }
        #expect(!(try s.contains(heldKey)))
        #expect(try s.verify().isClean)
        let disk = try FileManager.default.subpathsOfDirectory(atPath: dir.path + "/blobs").filter { $0.count > 60 }
        #expect(disk.count == (try s.stats().clips), "files on disk match records")
    }

    @Test("Reconciliation drops records without a whole file and removes orphan and temporary files")
    func reconciliation() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var keys: [ClipKey] = []
        do {
            let s = try ClipStore(.init(directory: dir.path, maxBytes: 10 << 20))
            for i in 0..<6 { keys.append(try store(s, "clip\(i)", clipBytes(i, count: 5_000))) }
            unlink(s.blobPath(keys[0]))                                        // record without file
            try Data(clipBytes(1, count: 10)).write(to: URL(fileURLWithPath: s.blobPath(keys[1])))  // wrong size
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir.path + "/tmp/x.partial"))        // leftover temp
            let orphan = s.blobPath(ClipKey(identity: "orphan"))
            try FileManager.default.createDirectory(atPath: (orphan as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data([9]).write(to: URL(fileURLWithPath: orphan))                                   // file without record
        }
        let s = try ClipStore(.init(directory: dir.path, maxBytes: 10 << 20))
        #expect(try s.lookup(keys[0]) == nil)
        #expect(try s.lookup(keys[1]) == nil)
        #expect(try s.stats().clips == 4)
        #expect(s.storedBytes == 4 * 5_000)
        #expect(try s.verify().isClean)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/tmp").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: s.blobPath(ClipKey(identity: "orphan"))))
    }

    @Test("Records decode garbage as an error, never a crash")
    func recordsRejectGarbage() throws {
        for n in 0..<200 {
            let garbage = clipBytes(n, count: n % 90)
            #expect(throws: (any Error).self) { try ClipRecord(decoding: garbage) }
            #expect(throws: (any Error).self) { try EpisodeRecord(decoding: garbage) }
        }
        let record = ClipRecord(byteCount: 5, digest: Array(repeating: 7, count: 32), secondTierLocation: "k", createdMs: 1, lastAccessMs: 2)
        #expect(try ClipRecord(decoding: record.encoded()) == record)
        let episode = EpisodeRecord(guid: "g", feedSlug: "f", sourceKey: "s", etag: "e", size: 9, expiresMs: 3)
        #expect(try EpisodeRecord(decoding: episode.encoded()) == episode)
    }

    @Test("SIGKILL at random moments during fills: reconcile + verify always find a consistent store (50 kills)")
    func crashSafety() throws {
        let child = try RepoPaths.require(RepoPaths.clipproxyBinary.deletingLastPathComponent().appendingPathComponent("IndexCrashChild"),
                                          hint: "build it with `swift build --build-tests`")
        let dir = try TemporaryDirectory("crash")
        defer { dir.remove() }
        var maxClipsSeen = 0
        var committedTotal = 0
        for round in 0..<50 {
            let process = Process()
            process.executableURL = child
            process.arguments = [dir.path, String(3 << 20)]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Wait for the first commit, then let it run a random while before the kill.
            let handle = out.fileHandleForReading
            var seen = Data()
            let deadline = Date().addingTimeInterval(10)
            while !String(decoding: seen, as: UTF8.self).contains("committed") && Date() < deadline {
                seen.append(handle.availableData)
            }
            usleep(UInt32.random(in: 0...150_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal, "round \(round): the child was killed, not exited")
            committedTotal += String(decoding: seen, as: UTF8.self).components(separatedBy: "committed").count - 1

            let s = try ClipStore(.init(directory: dir.path, maxBytes: 3 << 20, initialMapSize: 256 << 10))
            let report = try s.verify()
            #expect(report.isClean, "round \(round): \(report)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/tmp").isEmpty, "round \(round): temporary files survive")
            let stats = try s.stats()
            #expect(stats.bytes <= 3 << 20 || stats.clips <= 1, "round \(round): over budget after reconcile")
            let files = try FileManager.default.subpathsOfDirectory(atPath: dir.path + "/blobs").filter { $0.count > 60 }
            #expect(files.count == stats.clips, "round \(round): \(files.count) files for \(stats.clips) records")
            maxClipsSeen = max(maxClipsSeen, stats.clips)
        }
        #expect(committedTotal >= 50, "the children committed clips before being killed")
        #expect(maxClipsSeen > 0)
    }

    @Test("Concurrent readers see consistent values while a writer commits")
    func concurrentReaders() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let env = try LMDBEnvironment(path: dir.path, initialMapSize: 128 << 10)
        let db = try env.database(named: "kv")
        try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                for i in 0..<2000 {
                    // Each value is its key repeated: a reader can tell a torn or mixed value.
                    let value = [UInt8](repeating: UInt8(i % 251), count: 1 + i % 3000)
                    try env.write { try $0.put(db, key: Array("k\(i % 300)".utf8), value: value) }
                }
                return 0
            }
            for _ in 0..<4 {
                group.addTask {
                    var checked = 0
                    for round in 0..<3000 {
                        try env.read { txn in
                            try txn.withValue(db, key: Array("k\(round % 300)".utf8)) { value in
                                if let value, let first = value.first {
                                    #expect(value.allSatisfy { $0 == first })
                                    checked += 1
                                }
                            }
                        }
                    }
                    return checked
                }
            }
            var total = 0
            for try await n in group { total += n }
            #expect(total > 0)
        }
        #expect(env.currentMapSize > 128 << 10, "the map grew while readers were active")
    }
}
