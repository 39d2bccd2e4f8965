import ArgumentParser
import Foundation
import Upstream

/// `clipproxy warm --feed`: has the running server cut every `<podcast:soundbite>` of a feed, so
/// the clips a podcast itself highlights are cached before anyone asks. Each item's `<guid>` is
/// the episode id (the server resolves guids as well as ObjectIds).
enum FeedWarmTool {
    static let help = """
        Asks the running server (http.host/http.port of the configuration, or --server) for each \
        clip and reads it to the end, so it is cut once and stored in both tiers before listeners \
        ask. With signing.key set the URLs are signed as `clipproxy sign` signs them.

        With start times: clips of one episode, e.g. `clipproxy warm 685ba776e4f9ec2f0756267a 0 30000`.

        With --feed: every <podcast:soundbite startTime="73.5" duration="45.0"> in the items of a \
        podcast RSS feed (namespace https://podcastindex.org/namespace/1.0, any prefix), as the \
        clip /clips/<item guid>/<startTime in ms>?duration_ms=<duration in ms>. A soundbite longer \
        than clips.max_duration_ms is cut to that length, with a warning. Items without a <guid> \
        are skipped with a warning. Run it after ingest, e.g. \
        `clipproxy warm --feed https://feeds.example.com/show.xml`.

        Shows a progress bar on a terminal, a line every few seconds otherwise, and a summary \
        (warmed, already cached, capped, failed, bytes). Exits 0 when every clip was warmed or \
        already cached (or the feed has no soundbites), 1 naming each failure (unknown guids, \
        windows past the episode's end, bad values in the feed), 130 when interrupted with Ctrl-C \
        (clips in flight finish; a second Ctrl-C quits).
        """

    static func run(feed: String, server: String?, concurrency: Int, progressInterval: Double, _ configuration: Configuration) throws {
        guard (1...64).contains(concurrency) else { throw ToolError("--concurrency must be 1 to 64, got \(concurrency)") }
        guard progressInterval > 0 else { throw ToolError("--progress-interval must be more than 0 seconds, got \(progressInterval)") }
        let items: [FeedItem]
        do {
            items = try SoundbiteFeed.parse(try FeedSource.load(feed))
        } catch let error as SoundbiteFeed.ParseError {
            throw ToolError("the feed \(feed) cannot be read: \(error)")
        }
        let maxDurationMs = configuration.clipsMaxDurationMs
        let plan = WarmPlan(items: items, maxDurationMs: maxDurationMs)
        for warning in plan.warnings { ToolOutput.warn("warm: warning: \(warning)") }
        guard !plan.jobs.isEmpty || !plan.invalid.isEmpty else {
            ToolOutput.say("warm: no <podcast:soundbite> with a guid in the \(items.count) items of \(feed): nothing to warm")
            return
        }
        let base = server ?? ClipURLTools.localServer(configuration)
        if !plan.jobs.isEmpty { try checkServer(base) }
        let signer = URLSigner(key: configuration.signingKey, previousKey: configuration.signingPreviousKey)
        ToolOutput.say("warm: \(ToolOutput.count(plan.jobs.count, "soundbite")) in \(ToolOutput.count(plan.itemsWithSoundbites, "item")) of \(feed); "
                       + "\(concurrency) at a time from \(base)" + (signer == nil ? "" : " (signed URLs)"))

        let pool = CurlHandlePool(maxIdle: concurrency)
        let run = ParallelRun<SoundbiteJob, ClipFetch, WarmTally>(
            jobs: plan.jobs, tally: WarmTally(),
            words: .init(tool: "warm", job: "clip", afterQuit: "clips already warmed stay cached"),
            record: { $0.record($1, $2) })
        let signals = run.interruptOnSignals()
        defer { signals.forEach { $0.cancel() } }
        let started = ContinuousClock.now
        run.start(threads: concurrency) { job in try pool.withHandle { try warm(job, base: base, signer: signer, transfer: $0) } }
        let (final, elapsed) = run.report(started: started, interval: progressInterval,
                                          bar: { $0.tally.bar($0, elapsed: $1) }, line: { $0.tally.line($0, elapsed: $1) })
        ToolOutput.say(final.tally.summary(feed: feed, plan: plan, notStarted: final.notStarted, interrupted: final.interrupted,
                                           maxDurationMs: maxDurationMs, elapsed: elapsed))
        if final.interrupted {
            ToolOutput.say("Interrupted: \(final.notStarted) soundbites not requested. Run the same command again to finish; "
                           + "clips already warmed come back as already cached.")
            throw ExitCode(130)
        }
        if !final.tally.failures.isEmpty || !plan.invalid.isEmpty { throw ExitCode(1) }
    }

    /// One soundbite: the whole clip read through the server, its length checked against the
    /// Content-Length it announced (a short body is a clip the server could not finish).
    static func warm(_ job: SoundbiteJob, base: String, signer: URLSigner?, transfer: CurlTransfer) throws -> ClipFetch {
        let path = ClipURLTools.clipPath(job.guid, startMs: job.startMs, durationMs: job.durationMs, signer: signer)
        let fetch = try ClipFetch.get(base + path, with: transfer)
        guard fetch.status == 200 else {
            let (error, detail) = fetch.refusal
            throw WarmRefusal(status: fetch.status, error: error, detail: detail)
        }
        guard let length = fetch.contentLength, length == fetch.bytes else {
            throw WarmRefusal(status: fetch.status, error: "short_body",
                              detail: "received \(fetch.bytes) bytes, Content-Length \(fetch.contentLength.map(String.init) ?? "missing")")
        }
        return fetch
    }

    /// Fails early, once, when no server answers: otherwise every soundbite would fail alike.
    static func checkServer(_ base: String) throws {
        do {
            _ = try CurlTransfer().perform(HTTPRequest(method: "GET", url: base + "/healthz"),
                                           timeouts: TransferTimeouts(connect: .seconds(5), lowSpeedWindow: .seconds(10))) { _ in true }
        } catch {
            throw ToolError("no server answers at \(base) (\(error)): start `clipproxy serve`, or pass --server URL")
        }
    }
}
