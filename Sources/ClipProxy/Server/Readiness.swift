import Foundation
import Synchronization

/// `/readyz`: is every part a request needs usable right now (the index, the catalog, the source
/// store, the second tier)? Each check runs on the blocking pool with a deadline; a check that
/// hangs (a dead MongoDB can hold libmongoc for its server-selection timeout) is reported as not
/// ready and is not started again until it returns, so probes never pile up blocked threads.
/// Results are reused for a second, so a busy load balancer cannot turn probes into load.
final class Readiness: Sendable {
    struct Check: Sendable {
        let name: String
        let run: @Sendable () throws -> Void
    }

    struct Report: Sendable {
        var ready: Bool { failures.isEmpty }
        /// Check name → what went wrong; absent when the check passed.
        var failures: [String: String]
        var checked: [String]
    }

    private struct State {
        var last: (at: ContinuousClock.Instant, report: Report)?
        /// Checks running now, shared by every probe that arrives meanwhile.
        var running: [String: (since: ContinuousClock.Instant, task: Task<String?, Never>)] = [:]
    }

    let checks: [Check]
    let deadline: Duration
    private let state = Mutex(State())
    private let runBlocking: @Sendable (@escaping @Sendable () throws -> Void) async throws -> Void

    init(checks: [Check], deadline: Duration = .seconds(2),
         runBlocking: @escaping @Sendable (@escaping @Sendable () throws -> Void) async throws -> Void) {
        self.checks = checks
        self.deadline = deadline
        self.runBlocking = runBlocking
    }

    func report() async -> Report {
        let now = ContinuousClock.now
        if let last = state.withLock({ $0.last }), now - last.at < .seconds(1) { return last.report }
        var failures: [String: String] = [:]
        await withTaskGroup(of: (String, String?).self) { group in
            for check in checks {
                let (since, task) = runningCheck(check, now: now)
                let deadline = deadline
                group.addTask {
                    guard let outcome = await Self.outcome(of: task, within: deadline) else {
                        let running = (ContinuousClock.now - since).components.seconds
                        return (check.name, "no answer within \(deadline) (running for \(running) s)")
                    }
                    return (check.name, outcome)
                }
            }
            for await (name, failure) in group { if let failure { failures[name] = failure } }
        }
        let report = Report(failures: failures, checked: checks.map(\.name))
        state.withLock { $0.last = (ContinuousClock.now, report) }
        return report
    }

    /// The running task of `check`, or a new one. It runs detached from the probe: it finishes
    /// (and leaves the registry) even after the probe's deadline has passed.
    private func runningCheck(_ check: Check, now: ContinuousClock.Instant) -> (ContinuousClock.Instant, Task<String?, Never>) {
        state.withLock { s in
            if let running = s.running[check.name] { return (running.since, running.task) }
            let task = Task { [self] () -> String? in
                defer { _ = state.withLock { $0.running.removeValue(forKey: check.name) } }
                do {
                    try await runBlocking(check.run)
                    return nil
                } catch {
                    return "\(error)"
                }
            }
            s.running[check.name] = (now, task)
            return (now, task)
        }
    }

    /// The task's result, or nil when `deadline` passes first. Returns at the deadline even if
    /// the task is stuck in a blocking call (awaiting `task.value` alone would not).
    static func outcome(of task: Task<String?, Never>, within deadline: Duration) async -> String?? {
        let once = ResumeOnce<String??>()
        return await withCheckedContinuation { (continuation: CheckedContinuation<String??, Never>) in
            once.set(continuation)
            Task { once.resume(.some(await task.value)) }
            Task {
                try? await Task.sleep(for: deadline)
                once.resume(nil)
            }
        }
    }
}

/// A continuation resumed by whichever caller comes first; later calls do nothing.
final class ResumeOnce<Value: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<Value, Never>?, done: Bool)>((nil, false))

    func set(_ continuation: CheckedContinuation<Value, Never>) { state.withLock { $0.continuation = continuation } }

    func resume(_ value: Value) {
        let continuation = state.withLock { s -> CheckedContinuation<Value, Never>? in
            guard !s.done, let c = s.continuation else { return nil }
            s.done = true
            return c
        }
        continuation?.resume(returning: value)
    }
}
