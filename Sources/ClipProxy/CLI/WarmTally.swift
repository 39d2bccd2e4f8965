/// What `warm --feed` has done so far, and how progress lines and the summary say it.
struct WarmTally {
    struct Failure {
        let job: SoundbiteJob
        /// The HTTP status; nil when no answer came.
        let status: Int?
        /// The server's JSON `error` (`not_found`, `window_outside_episode`, …), or `transfer_failed`.
        let error: String
        let detail: String

        var reason: String { (status.map { "HTTP \($0) " } ?? "") + "\(error): \(detail)" }
    }

    var warmed = 0
    var l1Hits = 0
    var l2Hits = 0
    var bytes: Int64 = 0
    var failures: [Failure] = []

    var alreadyCached: Int { l1Hits + l2Hits }
    var done: Int { warmed + alreadyCached + failures.count }

    mutating func record(_ job: SoundbiteJob, _ outcome: Result<ClipFetch, any Error>) {
        switch outcome {
        case .success(let fetch):
            bytes += fetch.bytes
            switch fetch.tier {
            case "l1_hit": l1Hits += 1
            case "l2_hit": l2Hits += 1
            default: warmed += 1  // fill or coalesced: cut now
            }
        case .failure(let refusal as WarmRefusal):
            failures.append(Failure(job: job, status: refusal.status, error: refusal.error, detail: refusal.detail))
        case .failure(let error):
            failures.append(Failure(job: job, status: nil, error: "transfer_failed", detail: "\(error)"))
        }
    }

    var counts: String {
        "\(warmed) warmed, \(alreadyCached) already cached, \(failures.count) failed; \(ToolOutput.megabytes(bytes))"
    }

    func line(_ run: ParallelRun<SoundbiteJob, ClipFetch, WarmTally>.Snapshot, elapsed: Duration) -> String {
        "progress: \(done)/\(run.total) done: \(counts); \(ToolOutput.seconds(elapsed))" + (run.interrupted ? " (stopping)" : "")
    }

    func bar(_ run: ParallelRun<SoundbiteJob, ClipFetch, WarmTally>.Snapshot, elapsed: Duration) -> String {
        ToolOutput.bar(done: done, total: run.total) + "  \(counts)  \(ToolOutput.seconds(elapsed))" + (run.interrupted ? "  stopping…" : "")
    }

    /// The summary: counts, then each failure. Unknown episodes are grouped by guid, since one
    /// missing episode fails all its soundbites for the same reason.
    func summary(feed: String, plan: WarmPlan, notStarted: Int, interrupted: Bool, maxDurationMs: Int64, elapsed: Duration) -> String {
        var lines = ["warm \(interrupted ? "interrupted" : "finished"):"]
        lines.append("  soundbites:      \(plan.jobs.count + plan.invalid.count) in \(ToolOutput.count(plan.itemsWithSoundbites, "item")) of \(feed)")
        lines.append("  warmed:          \(warmed)")
        lines.append("  already cached:  \(alreadyCached) (l1_hit \(l1Hits), l2_hit \(l2Hits))")
        lines.append("  capped:          \(plan.jobs.filter(\.capped).count) (to clips.max_duration_ms = \(maxDurationMs) ms)")
        lines.append("  failed:          \(failures.count + plan.invalid.count)")
        let failures = failures.sorted { $0.job.index < $1.job.index }
        let unknown = failures.filter { $0.error == "not_found" }
        var guids: [String] = []
        for failure in unknown where !guids.contains(failure.job.guid) { guids.append(failure.job.guid) }
        if !guids.isEmpty {
            lines.append("    unknown episodes (HTTP 404 not_found): \(ToolOutput.count(guids.count, "guid")), "
                         + ToolOutput.count(unknown.count, "soundbite"))
            for guid in guids {
                let mine = unknown.filter { $0.job.guid == guid }
                lines.append("      \(mine[0].job.item): soundbites at " + mine.map { "\($0.job.startTime) s" }.joined(separator: ", "))
            }
        }
        for failure in failures where failure.error != "not_found" {
            lines.append("    \(failure.job.name): \(failure.reason)")
        }
        for reason in plan.invalid { lines.append("    \(reason) (not requested)") }
        if interrupted { lines.append("  not started:     \(notStarted)") }
        lines.append("  bytes:           \(bytes) (\(ToolOutput.megabytes(bytes)))")
        lines.append("  elapsed:         \(ToolOutput.seconds(elapsed))")
        return lines.joined(separator: "\n")
    }
}

/// A clip the server did not deliver whole: its JSON error, or a body shorter than announced.
struct WarmRefusal: Error, CustomStringConvertible {
    let status: Int
    let error: String
    let detail: String
    var description: String { "HTTP \(status) \(error): \(detail)" }
}
