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
        var inFlight: [String: ContinuousClock.Instant] = [:]
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
                let stuckSince = state.withLock { s -> ContinuousClock.Instant? in
                    if let since = s.inFlight[check.name] { return since }
                    s.inFlight[check.name] = now
                    return nil
                }
                if let stuckSince {
                    failures[check.name] = "no answer for \((ContinuousClock.now - stuckSince).components.seconds) s"
                    continue
                }
                // The check itself runs detached: it finishes (and clears its flag) even after the deadline passed.
                let work = Task { [self] () -> String? in
                    defer { _ = state.withLock { $0.inFlight.removeValue(forKey: check.name) } }
                    do {
                        try await runBlocking(check.run)
                        return nil
                    } catch {
                        return "\(error)"
                    }
                }
                let deadline = deadline
                group.addTask {
                    await withTaskGroup(of: String??.self) { race in
                        race.addTask { .some(await work.value) }
                        race.addTask {
                            try? await Task.sleep(for: deadline)
                            return .none
                        }
                        let first = await race.next() ?? nil
                        race.cancelAll()
                        guard let outcome = first else { return (check.name, "no answer within \(deadline)") }
                        return (check.name, outcome)
                    }
                }
            }
            for await (name, failure) in group { if let failure { failures[name] = failure } }
        }
        let report = Report(failures: failures, checked: checks.map(\.name))
        state.withLock { $0.last = (ContinuousClock.now, report) }
        return report
    }
}
