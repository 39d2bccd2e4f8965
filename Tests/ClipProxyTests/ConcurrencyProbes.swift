import Foundation
import Synchronization
import Testing

// Small tools for the in-process concurrency tests: they let a test await a state (a gate
// opened, a count reached, an order of events) instead of sleeping or reading log lines.

/// Suspends its waiters until `open()`; once open it stays open.
actor ProbeGate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func open() {
        isOpen = true
        let waiting = waiters
        waiters = []
        for continuation in waiting { continuation.resume() }
    }
}

/// The order in which things happened, as the tasks that did them recorded it.
actor ProbeTimeline {
    private(set) var entries: [String] = []
    func record(_ entry: String) { entries.append(entry) }
}

/// A counter that synchronous code (a `@Sendable` closure, a thread) can bump without awaiting.
final class ProbeTally: Sendable {
    private let count = Mutex(0)
    /// Adds one and returns the new count.
    @discardableResult
    func add() -> Int { count.withLock { $0 += 1; return $0 } }
    var value: Int { count.withLock { $0 } }
}

/// Deterministic bytes: different seeds give different contents.
func probeBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var bytes = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        bytes[i] = UInt8(truncatingIfNeeded: state)
    }
    return bytes
}

/// An error a test raises on purpose, recognisable by its id wherever it arrives.
struct ProbeFailure: Error, Equatable {
    let id: Int
}

extension Trait where Self == TimeLimitTrait {
    /// The time limit of the in-process concurrency suites. In `make test` they run beside suites
    /// that wait synchronously (subprocess servers, curl), which can hold both threads of the
    /// cooperative pool for minutes; these tests then wait that long before they run (about 2 s
    /// in all). The limit is there to stop a hung implementation, not to time them.
    static var queuedBehindBlockingSuites: Self { .timeLimit(.minutes(10)) }
}
