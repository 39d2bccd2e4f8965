import Foundation

/// The engine of the batch subcommands (`index-sources`, `warm --feed`): a list of jobs done by a
/// few threads, results folded into a tally under one lock, progress drawn by the calling thread,
/// and Ctrl-C handled the same way everywhere: the first signal finishes what is in flight and
/// starts nothing more, the second quits at once.
///
/// `@unchecked Sendable`: every mutable field is read or changed only while `condition` is held.
final class ParallelRun<Job: Sendable, Outcome, Tally>: @unchecked Sendable {
    struct Snapshot {
        let tally: Tally
        let total: Int
        let notStarted: Int
        /// Stopped by a signal before every job was taken.
        let interrupted: Bool
    }

    /// How the run names itself in the lines it writes to standard error on a signal.
    struct Words {
        /// The subcommand, e.g. `index-sources`.
        let tool: String
        /// What a job is, e.g. `source`.
        let job: String
        /// Said after the second signal, e.g. `run the same command again to resume`.
        let afterQuit: String
    }

    let jobs: [Job]
    private let words: Words
    private let record: (inout Tally, Job, Result<Outcome, any Error>) -> Void
    private let condition = NSCondition()
    private var tally: Tally
    private var next = 0
    private var running = 0
    private var workers = 0
    private var interruptions = 0

    init(jobs: [Job], tally: Tally, words: Words, record: @escaping (inout Tally, Job, Result<Outcome, any Error>) -> Void) {
        self.jobs = jobs
        self.tally = tally
        self.words = words
        self.record = record
    }

    /// Starts `threads` workers, each taking the next job until none is left or the run was
    /// interrupted. Each job's result goes to `record`.
    func start(threads: Int, _ perform: @escaping @Sendable (Job) throws -> Outcome) {
        condition.lock()
        workers += min(threads, jobs.count)
        condition.unlock()
        for _ in 0..<min(threads, jobs.count) {
            Thread { [self] in work(perform) }.start()
        }
    }

    private func work(_ perform: (Job) throws -> Outcome) {
        while let job = take() {
            let outcome = Result { try perform(job) }
            condition.lock()
            running -= 1
            record(&tally, job, outcome)
            condition.broadcast()
            condition.unlock()
        }
        condition.lock()
        workers -= 1
        condition.broadcast()
        condition.unlock()
    }

    private func take() -> Job? {
        condition.lock()
        defer { condition.unlock() }
        guard interruptions == 0, next < jobs.count else { return nil }
        next += 1
        running += 1
        return jobs[next - 1]
    }

    /// SIGINT and SIGTERM call `interrupt` until the returned sources are cancelled.
    func interruptOnSignals() -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { number in
            _ = signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in interrupt() }
            source.resume()
            return source
        }
    }

    /// First signal: finish what is in flight, start nothing more. Second: quit now.
    func interrupt() {
        condition.lock()
        interruptions += 1
        let (count, inFlight) = (interruptions, running)
        condition.broadcast()
        condition.unlock()
        if count == 1 {
            ToolOutput.warn("\n\(words.tool): stopping after the \(ToolOutput.count(inFlight, words.job)) in flight; interrupt again to quit now")
        } else {
            ToolOutput.warn("\n\(words.tool): quitting now; \(words.afterQuit)")
            _exit(130)  // at once: no atexit work while workers are inside libcurl
        }
    }

    /// True once every worker has stopped (all jobs done, or interrupted and drained).
    func waitUntilFinished(timeout: Double) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let finished = { (self.next == self.jobs.count || self.interruptions > 0) && self.running == 0 && self.workers == 0 }
        if !finished() { _ = condition.wait(until: Date().addingTimeInterval(timeout)) }
        return finished()
    }

    func snapshot() -> Snapshot {
        condition.lock()
        defer { condition.unlock() }
        return Snapshot(tally: tally, total: jobs.count, notStarted: jobs.count - next,
                        // A signal after the last job was taken changed nothing: the run finished.
                        interrupted: interruptions > 0 && next < jobs.count)
    }

    /// Blocks until the run has finished, showing progress: on a terminal a bar redrawn often,
    /// otherwise a line every `interval` seconds (logs and pipes get no carriage returns).
    /// Returns the final snapshot and the time the run took since `started`.
    func report(started: ContinuousClock.Instant, interval: Double,
                bar: (Snapshot, Duration) -> String, line: (Snapshot, Duration) -> String) -> (Snapshot, Duration) {
        let terminal = isatty(1) == 1
        var lastLine = ContinuousClock.now
        while !waitUntilFinished(timeout: terminal ? 0.2 : min(interval, 0.5)) {
            if terminal {
                ToolOutput.write("\r\u{1B}[K" + bar(snapshot(), ContinuousClock.now - started))
            } else if ContinuousClock.now - lastLine >= .milliseconds(Int64(interval * 1000)) {
                lastLine = ContinuousClock.now
                ToolOutput.say(line(snapshot(), ContinuousClock.now - started))
            }
        }
        if terminal { ToolOutput.write("\r\u{1B}[K") }
        return (snapshot(), ContinuousClock.now - started)
    }
}
