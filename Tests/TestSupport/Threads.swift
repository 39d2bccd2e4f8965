import Foundation

/// Jobs started at once, each on a thread of its own, for blocking socket work that must overlap
/// (Swift's cooperative pool has one thread per core, so blocking calls there would take turns).
/// `wait()` returns their results in order.
public final class ThreadedJobs<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [T?]
    private let done = DispatchGroup()

    public init(_ jobs: [@Sendable () -> T]) {
        values = Array(repeating: nil, count: jobs.count)
        for (index, job) in jobs.enumerated() {
            done.enter()
            Thread { [self] in
                let value = job()
                lock.withLock { values[index] = value }
                done.leave()
            }.start()
        }
    }

    public func wait() -> [T] {
        done.wait()
        return lock.withLock { values.map { $0! } }
    }
}

/// Runs every job at once, each on a thread of its own, and returns their results in order.
public func onThreads<T: Sendable>(_ jobs: [@Sendable () -> T]) -> [T] { ThreadedJobs(jobs).wait() }
