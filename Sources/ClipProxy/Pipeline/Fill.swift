import Foundation
import Index
import NIOCore
import Synchronization

/// One clip being made while any number of requests stream it.
///
/// The bytes live in memory, in a buffer of the clip's exact length allocated up front: readers
/// copy from it as it grows, so what a client receives never depends on the local disk (a full
/// or failing cache disk costs the cached copy, never a response). The local store's copy is
/// written beside it by the pipeline, best effort.
///
/// A fill "starts" once its first source bytes have arrived (or it copies from a tier that
/// answered): requests send their status line only then, so a source that refuses the read
/// becomes a clean error instead of a 200 with a broken body. If the fill fails after that,
/// every reader's wait throws and the transfer is aborted; it never ends short with a success.
final class Fill: Sendable {
    let key: ClipKey
    let length: Int64
    /// The clip's creation time: the store records the same time when the fill is committed.
    /// Set before `markStarted` (a copy keeps its original's time); read by requests after it.
    var createdMs: Int64 {
        get { progress.withLock { $0.createdMs } }
        set { progress.withLock { $0.createdMs = newValue } }
    }

    /// Written only by the producer, below `written`'s new value, before it publishes that value
    /// under the lock; read only below a published `written`. `@unchecked`: that ordering is the
    /// synchronisation.
    private struct Storage: @unchecked Sendable { let bytes: UnsafeMutableRawBufferPointer }
    private let storage: Storage

    private struct Progress {
        var written: Int64 = 0
        var failure: (any Error)?
        var finished = false
        var started = false
        var startedAt: ContinuousClock.Instant?
        var createdMs: Int64 = 0
        var startWaiters: [CheckedContinuation<Void, any Error>] = []
        var waiters: [(Int64, CheckedContinuation<Void, any Error>)] = []
    }
    private let progress = Mutex(Progress())

    init(key: ClipKey, length: Int64, createdMs: Int64) {
        self.key = key
        self.length = length
        storage = Storage(bytes: .allocate(byteCount: Int(length), alignment: 16))
        progress.withLock { $0.createdMs = createdMs }
    }

    deinit { storage.bytes.deallocate() }

    /// The producer appends the clip's next bytes. Never more than `length` in all.
    func append(_ chunk: UnsafeRawBufferPointer) throws {
        let at = progress.withLock { $0.written }
        guard at + Int64(chunk.count) <= length else {
            throw FillError.overlong(expected: length)
        }
        if chunk.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: storage.bytes[Int(at)..<(Int(at) + chunk.count)]).copyMemory(from: chunk)
        }
        let written = at + Int64(chunk.count)
        let ready = progress.withLock { p -> [CheckedContinuation<Void, any Error>] in
            p.written = written
            let due = p.waiters.filter { $0.0 <= written }.map(\.1)
            p.waiters.removeAll { $0.0 <= written }
            return due
        }
        for continuation in ready { continuation.resume() }
    }

    var bytesWritten: Int64 { progress.withLock { $0.written } }

    /// A copy of bytes `range`, which must already be written (`waitForBytes`).
    func bytes(_ range: Range<Int64>) -> ByteBuffer {
        precondition(range.upperBound <= progress.withLock { $0.written }, "read past the written part of a fill")
        return ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: storage.bytes[Int(range.lowerBound)..<Int(range.upperBound)]))
    }

    /// The whole clip, once the fill has finished successfully.
    var contents: [UInt8] {
        precondition(bytesWritten == length, "a fill's contents before it is whole")
        return Array(UnsafeRawBufferPointer(storage.bytes))
    }

    /// The source answered (or the tier it copies from did): requests may now send their headers.
    func markStarted() {
        let waiting = progress.withLock { p -> [CheckedContinuation<Void, any Error>] in
            guard !p.started else { return [] }
            p.started = true
            p.startedAt = .now
            defer { p.startWaiters = [] }
            return p.startWaiters
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Suspends until the fill has started; throws if it failed before that (a refused source
    /// read, no fill slot), so every request waiting on it answers with that error instead of
    /// a broken 200.
    func waitUntilStarted() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let resumeNow: Result<Void, any Error>? = progress.withLock { p in
                if let failure = p.failure { return .failure(failure) }
                if p.started || p.finished { return .success(()) }
                p.startWaiters.append(continuation)
                return nil
            }
            if let resumeNow { continuation.resume(with: resumeNow) }
        }
    }

    /// Whether the fill had started when it failed (then its readers' bodies were cut short).
    var hasStarted: Bool { progress.withLock { $0.started } }

    /// When the upstream first answered (nil until then).
    var startedAt: ContinuousClock.Instant? { progress.withLock { $0.startedAt } }

    /// The fill ended: successfully (all `length` bytes written) or with `error`.
    func finish(_ error: (any Error)?) {
        let (waiting, starting, failure) = progress.withLock { p in
            p.finished = true
            p.failure = error ?? (p.written == length ? nil : FillError.incomplete(written: p.written, expected: length))
            defer { p.waiters = []; p.startWaiters = [] }
            return (p.waiters.map(\.1), p.startWaiters, p.failure)
        }
        for continuation in waiting + starting {
            if let failure { continuation.resume(throwing: failure) } else { continuation.resume() }
        }
    }

    /// Suspends until at least `count` bytes are written (or throws if the fill failed).
    func waitForBytes(_ count: Int64) async throws {
        let target = min(count, length)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let resumeNow: Result<Void, any Error>? = progress.withLock { p in
                if let failure = p.failure { return .failure(failure) }
                if p.written >= target { return .success(()) }
                if p.finished { return .failure(FillError.incomplete(written: p.written, expected: length)) }
                p.waiters.append((target, continuation))
                return nil
            }
            if let resumeNow { continuation.resume(with: resumeNow) }
        }
    }

    /// Suspends until the fill has ended; throws if it failed.
    func waitUntilFinished() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let resumeNow: Result<Void, any Error>? = progress.withLock { p in
                if p.finished { return p.failure.map { .failure($0) } ?? .success(()) }
                // No byte count reaches Int64.max, so only `finish` resumes this waiter.
                p.waiters.append((Int64.max, continuation))
                return nil
            }
            if let resumeNow { continuation.resume(with: resumeNow) }
        }
    }
}

enum FillError: Error, CustomStringConvertible {
    case incomplete(written: Int64, expected: Int64)
    case overlong(expected: Int64)
    case notStored
    var description: String {
        switch self {
        case .incomplete(let written, let expected): "the clip fill stopped after \(written) of \(expected) bytes"
        case .overlong(let expected): "the clip came out longer than its planned \(expected) bytes"
        case .notStored: "the clip is not in the local store (evicted, or the store could not keep it); request it again"
        }
    }
}

/// Makes concurrent requests for one clip key share one fill (Varnish's "busy object").
///
/// Race-free because a fill is committed to the local store (or has given up on it) before it
/// is removed here, and `claim` looks at running fills and at the store in one actor turn: a
/// request either joins the running fill or finds the clip stored, never starts a second cut
/// of a clip that was stored.
actor FillCoordinator {
    private var running: [ClipKey: Fill] = [:]

    enum Claim {
        case mine             // registered: the caller runs the fill
        case running(Fill)    // another request's fill: read it as it grows
        case stored           // finished in the meantime: read it from the store
    }

    func join(_ key: ClipKey) -> Fill? { running[key] }

    /// Registers `fill` unless one is running for its key or the clip is already stored.
    func claim(_ fill: Fill, isStored: @Sendable () -> Bool) -> Claim {
        if let existing = running[fill.key] { return .running(existing) }
        if isStored() { return .stored }
        running[fill.key] = fill
        return .mine
    }

    func remove(_ fill: Fill) {
        if running[fill.key] === fill { running[fill.key] = nil }
    }
}
