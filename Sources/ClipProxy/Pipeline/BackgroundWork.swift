import Index
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Runs blocking work (LMDB writes, libavformat, libmongoc, libcurl, file I/O) on the thread
/// pool, never on an event loop: `try await blocking { ... }`.
struct Blocking: Sendable {
    let pool: NIOThreadPool

    func callAsFunction<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(work)
    }
}

/// What every part of the pipeline uses: the local store and its writes, the thread pool for
/// blocking calls, the owner of background tasks, metrics and the logger.
struct PipelineShared: Sendable {
    let store: ClipStore
    let storeWrites: StoreWrites
    let blocking: Blocking
    let background: BackgroundWork
    let metrics: ClipMetrics
    let logger: Logger
}

/// A part of the pipeline: reaches what it shares with the others by name.
protocol PipelinePart {
    var shared: PipelineShared { get }
}

extension PipelinePart {
    var store: ClipStore { shared.store }
    var storeWrites: StoreWrites { shared.storeWrites }
    var blocking: Blocking { shared.blocking }
    var background: BackgroundWork { shared.background }
    var metrics: ClipMetrics { shared.metrics }
    var logger: Logger { shared.logger }
}

/// The work that outlives the request that started it: fills (they belong to the cache, not to a
/// request), uploads to the second tier, frame-index and peaks shares, writes the store defers,
/// catalog refreshes in the background. Every such task is started here and owned here, so
/// shutdown can wait for it: a task nobody awaits is work lost at SIGTERM.
///
/// As a `Service` it waits for graceful shutdown, then for the work under way (new work started
/// meanwhile, such as the upload after a fill, counts too), at most `drainLimit`.
final class BackgroundWork: Service, Sendable {
    private let tasks = Mutex<(running: [UInt64: (name: String, task: Task<Void, Never>)], next: UInt64)>(([:], 0))
    let drainLimit: Duration
    let logger: Logger

    init(drainLimit: Duration, logger: Logger) {
        self.drainLimit = drainLimit
        self.logger = logger
    }

    /// Starts `work` now; it is forgotten when it ends.
    func start(_ name: String, _ work: @escaping @Sendable () async -> Void) {
        tasks.withLock { tasks in
            let id = tasks.next
            tasks.next += 1
            // Registered under the lock, so the task's own removal (which takes it too) comes after.
            let task = Task { [self] in
                await work()
                _ = self.tasks.withLock { $0.running.removeValue(forKey: id) }
            }
            tasks.running[id] = (name, task)
        }
    }

    /// What is running now, by name (for logs and tests).
    var running: [String] { tasks.withLock { $0.running.values.map(\.name) } }

    func run() async throws {
        try? await gracefulShutdown()
        await drain()
    }

    /// Waits until no work is running, or `drainLimit` passed (then says what was left).
    func drain() async {
        let deadline = ContinuousClock.now + drainLimit
        var announced = false
        while true {
            let left = running
            if left.isEmpty { break }
            if ContinuousClock.now >= deadline || Task.isCancelled {
                logger.error("shutdown gave up waiting for background work", metadata: [
                    "work.left": "\(left.count)", "work.names": "\(Dictionary(left.map { ($0, 1) }, uniquingKeysWith: +))",
                    "drain.limit_s": "\(drainLimit.components.seconds)"])
                return
            }
            if !announced {
                logger.info("waiting for background work", metadata: ["work.running": "\(left.count)"])
                announced = true
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        if announced { logger.info("background work finished") }
    }
}
