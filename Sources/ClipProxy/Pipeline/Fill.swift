import Foundation
import Index
import Synchronization

/// One clip being cut into the local store while any number of requests stream it.
///
/// The writer appends to a temporary file (`BlobFill`); readers read the same file through a
/// descriptor opened at the start, so they are unaffected when the finished file is renamed into
/// the store. Readers wait for bytes with `waitForBytes`; if the fill fails, every reader's wait
/// throws, so no response ever ends short with a success status.
final class Fill: Sendable {
    let key: ClipKey
    let length: Int64
    /// The clip's creation time: the store records the same time when the fill is committed.
    /// Set before `markStarted` (a copy keeps its original's time); read by requests after it.
    var createdMs: Int64 {
        get { progress.withLock { $0.createdMs } }
        set { progress.withLock { $0.createdMs = newValue } }
    }
    /// Opened on the temporary file before any byte is written; shared by all readers (pread).
    let readDescriptor: Int32

    private struct Progress {
        var written: Int64 = 0
        var failure: (any Error)?
        var finished = false
        var started = false
        var createdMs: Int64 = 0
        var startWaiters: [CheckedContinuation<Void, any Error>] = []
        var waiters: [(Int64, CheckedContinuation<Void, any Error>)] = []
    }
    private let progress = Mutex(Progress())

    init(key: ClipKey, length: Int64, temporaryPath: String, createdMs: Int64) throws {
        let fd = open(temporaryPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw IndexError.io("cannot open \(temporaryPath) for reading", errno) }
        self.key = key
        self.length = length
        readDescriptor = fd
        progress.withLock { $0.createdMs = createdMs }
    }

    deinit { close(readDescriptor) }

    /// The writer reports that the file now holds `count` bytes.
    func advance(to count: Int64) {
        let ready = progress.withLock { p -> [CheckedContinuation<Void, any Error>] in
            p.written = count
            let (due, waiting) = p.waiters.reduce(into: ([CheckedContinuation<Void, any Error>](), [(Int64, CheckedContinuation<Void, any Error>)]())) {
                if $1.0 <= count { $0.0.append($1.1) } else { $0.1.append($1) }
            }
            p.waiters = waiting
            return due
        }
        for continuation in ready { continuation.resume() }
    }

    /// The fill got its slot and is cutting: requests that joined it may now send their headers.
    func markStarted() {
        let waiting = progress.withLock { p -> [CheckedContinuation<Void, any Error>] in
            p.started = true
            defer { p.startWaiters = [] }
            return p.startWaiters
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Suspends while the fill waits for a slot; throws if it never got one (or failed), so a
    /// request that joined a queued fill answers with the same error instead of a broken 200.
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

    /// Suspends until at least `count` bytes are in the file (or throws if the fill failed).
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

    /// Suspends until the fill has ended: returns once the clip is committed to the local store,
    /// throws if the fill failed.
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

    var bytesWritten: Int64 { progress.withLock { $0.written } }
}

enum FillError: Error, CustomStringConvertible {
    case incomplete(written: Int64, expected: Int64)
    case notStored
    var description: String {
        switch self {
        case .incomplete(let written, let expected): "the clip fill stopped after \(written) of \(expected) bytes"
        case .notStored: "the clip left the local store before it could be copied to the second tier (evicted); request it again"
        }
    }
}

/// Makes concurrent requests for one clip key share one fill (Varnish's "busy object").
///
/// Race-free because a fill is committed to the local store before it is removed here, and
/// `claim` looks at running fills and at the store in one actor turn: a request either joins the
/// running fill or finds the clip stored, never starts a second cut.
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

    var count: Int { running.count }
}
