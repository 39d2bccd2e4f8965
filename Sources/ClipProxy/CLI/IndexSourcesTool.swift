import ArgumentParser
import Foundation
import Support
import Synchronization
import Trim
import Upstream

/// `clipproxy index-sources`: builds the frame index of every source audio file that the second
/// tier does not have one for yet, and shares it there under the name a node looks for
/// (`SharedFrameIndex`). A node then plans an episode's first clip from that index instead of
/// reading the whole source (a VBR episode needs one pass over every frame).
///
/// Only the second tier is written: the nodes' local stores belong to their servers. What the
/// second tier already holds is skipped, so running it again resumes an interrupted run.
enum IndexSourcesTool {
    /// The layout `SourceLocator.resolve` accepts: `<feed_slug>/<guid>/audio/<name>_<guid[:8]>_audio.mp3`.
    static let layout = "<feed_slug>/<guid>/audio/<name>_<guid[:8]>_audio.mp3"

    /// The feed slug and guid of a key laid out as `layout`, else nil. The guid is everything
    /// between the feed and `/audio/`, so a guid with a `/` in it is found as the server finds it.
    static func episode(ofKey key: String) -> (feedSlug: String, guid: String)? {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[parts.count - 2] == "audio", let name = parts.last else { return nil }
        let feedSlug = String(parts[0])
        let guid = parts[1..<(parts.count - 2)].joined(separator: "/")
        guard !feedSlug.isEmpty, !guid.isEmpty, name.hasSuffix("_\(guid.prefix(8))_audio.mp3") else { return nil }
        return (feedSlug, guid)
    }

    /// The source each episode is served from: per feed and guid, the greatest matching key (as
    /// `SourceLocator.resolve` chooses), as a `ResolvedEpisode` so its identity is the server's.
    /// `superseded` counts the older uploads beside them, which no node ever reads.
    static func sources(in objects: [StoredObject]) -> (episodes: [ResolvedEpisode], superseded: Int) {
        var chosen: [String: (StoredObject, feedSlug: String, guid: String)] = [:]
        var matching = 0
        for object in objects {
            guard let (feedSlug, guid) = episode(ofKey: object.key) else { continue }
            matching += 1
            let folder = "\(feedSlug)/\(guid)"
            if let current = chosen[folder], current.0.key >= object.key { continue }
            chosen[folder] = (object, feedSlug, guid)
        }
        let episodes = chosen.values
            // The catalog's episode id is not needed: the identity and the reads use only the object.
            .map { ResolvedEpisode(episodeId: $0.guid, guid: $0.guid, feedSlug: $0.feedSlug, sourceKey: $0.0.key, etag: $0.0.etag, size: $0.0.size) }
            .sorted { $0.sourceKey < $1.sourceKey }
        return (episodes, matching - episodes.count)
    }

    static func run(feed: String?, concurrency: Int, progressInterval: Double, _ configuration: Configuration) throws {
        if let feed, feed.isEmpty || feed.contains("/") || feed == "." || feed == ".." {
            throw ToolError("--feed takes one feed slug (the first folder of a source key, no '/'), got '\(feed)'")
        }
        guard (1...64).contains(concurrency) else { throw ToolError("--concurrency must be 1 to 64, got \(concurrency)") }
        guard progressInterval > 0 else { throw ToolError("--progress-interval must be more than 0 seconds, got \(progressInterval)") }
        let prefix = feed.map { "\($0)/" } ?? ""
        let (lister, opener) = try Upstreams.sources(configuration)
        let tier = try Upstreams.clipTier(configuration)
        let (sourceRoot, tierName) = configuration.sourceKind == "s3"
            ? ("s3://\(configuration.s3SourceBucket)", "s3://\(configuration.s3ClipBucket)/\(SharedFrameIndex.prefix)")
            : (configuration.sourceDir, "\(configuration.clipstoreDir)/\(SharedFrameIndex.prefix)")
        let sourceName = "\(sourceRoot)/\(prefix)"

        // A missing clip bucket would fail every item after its source was read: check it first.
        if configuration.sourceKind == "s3" {
            do { try Upstreams.s3Client(configuration).headBucket(configuration.s3ClipBucket) } catch {
                throw ToolError("the clip bucket s3://\(configuration.s3ClipBucket) (s3.clip_bucket) cannot be used: \(error)")
            }
        }
        let objects: [StoredObject]
        do {
            objects = try listAll(lister, prefix: prefix, sourceDir: configuration.sourceDir)
        } catch let error as ToolError {
            throw error
        } catch {
            throw ToolError("cannot list \(sourceName): \(error)")
        }
        guard !objects.isEmpty else {
            throw ToolError(feed == nil ? "no source objects in \(sourceRoot)" : "no source objects under \(prefix) in \(sourceRoot)")
        }
        let (episodes, superseded) = sources(in: objects)
        guard !episodes.isEmpty else {
            throw ToolError("\(objects.count) objects in \(sourceName), none laid out as \(layout)")
        }

        let terminal = isatty(1) == 1
        say("index-sources: \(episodes.count) episode sources in \(sourceName)"
            + (superseded > 0 ? " (\(superseded) older uploads beside newer ones left out)" : "")
            + "; \(concurrency) at a time; indexes go to \(tierName)")
        let run = IndexRun(episodes: episodes)
        let signals = [SIGINT, SIGTERM].map { number in
            _ = signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { run.interrupt() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }

        let started = ContinuousClock.now
        for _ in 0..<min(concurrency, episodes.count) {
            Thread { run.work { episode in try index(episode, opener: opener, tier: tier, run: run) } }.start()
        }
        // The calling thread only reports: a bar redrawn often on a terminal, a line now and then otherwise.
        var lastLine = ContinuousClock.now
        while !run.waitUntilFinished(timeout: terminal ? 0.2 : min(progressInterval, 0.5)) {
            if terminal {
                write("\r\u{1B}[K" + run.snapshot().bar(elapsed: ContinuousClock.now - started))
            } else if ContinuousClock.now - lastLine >= .milliseconds(Int64(progressInterval * 1000)) {
                lastLine = ContinuousClock.now
                say(run.snapshot().line(elapsed: ContinuousClock.now - started))
            }
        }
        if terminal { write("\r\u{1B}[K") }
        let final = run.snapshot()
        say(final.summary(sourceName: sourceName, superseded: superseded, elapsed: ContinuousClock.now - started))
        if final.interrupted {
            say("Interrupted: \(final.notStarted) sources not indexed yet. Run the same command again to resume; "
                + "sources already indexed are skipped.")
            throw ExitCode(130)
        }
        if !final.failures.isEmpty { throw ExitCode(1) }
    }

    /// Every object under `prefix`. A source directory is walked to its `audio` folders, each
    /// listed by `DirectoryLister` so its stand-in ETags are the ones the server records.
    static func listAll(_ lister: any ObjectLister, prefix: String, sourceDir: String) throws -> [StoredObject] {
        guard let directory = lister as? DirectoryLister else { return try lister.list(prefix: prefix) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: sourceDir, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ToolError("source.dir \(sourceDir) is not a directory")
        }
        guard let walker = FileManager.default.enumerator(atPath: directory.root + "/" + prefix) else { return [] }
        var folders: [String] = []
        while let relative = walker.nextObject() as? String {
            guard (relative as NSString).lastPathComponent == "audio",
                  (walker.fileAttributes?[.type] as? FileAttributeType) == .typeDirectory else { continue }
            folders.append(prefix + relative + "/")
        }
        return try folders.sorted().flatMap { try directory.list(prefix: $0) }
    }

    /// One source: skipped when the second tier has a usable index for its identity, else probed
    /// (the complete index) and shared.
    static func index(_ episode: ResolvedEpisode, opener: SourceOpener, tier: any ClipTier, run: IndexRun) throws -> Bool {
        let identity = opener.identity(of: episode)
        // One that does not decode (another format version, damage) is replaced, as a node would.
        if let bytes = try tier.frameIndex(source: identity), (try? FrameIndex(serialized: bytes)) != nil { return false }
        let source = CountingByteSource(try opener.open(episode))
        defer { run.bytesRead.add(source.bytesRead, ordering: .relaxed) }
        let index = try SourceDescription.probe(source).1
        try tier.storeFrameIndex(index.serialized(), source: identity)
        return true
    }

    /// A line on standard output, flushed at once (it may be a pipe a script or test reads).
    static func say(_ text: String) { write(text + "\n") }

    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// The state of one run, shared by the workers, the reporting thread and the signal handler.
final class IndexRun: @unchecked Sendable {
    struct Failure { let key: String; let error: String }

    struct Snapshot {
        let total: Int, alreadyIndexed: Int, indexedNow: Int, failures: [Failure], notStarted: Int, bytesRead: Int64
        let interrupted: Bool
        var done: Int { alreadyIndexed + indexedNow + failures.count }

        var counts: String {
            "\(indexedNow) indexed now, \(alreadyIndexed) already indexed, \(failures.count) failed; \(Self.megabytes(bytesRead)) read"
        }

        func line(elapsed: Duration) -> String {
            "progress: \(done)/\(total) done: \(counts); \(Self.seconds(elapsed))" + (interrupted ? " (stopping)" : "")
        }

        func bar(elapsed: Duration) -> String {
            let width = 30
            let filled = total == 0 ? width : done * width / total
            return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
                + "\(done)/\(total)  \(counts)  \(Self.seconds(elapsed))" + (interrupted ? "  stopping…" : "")
        }

        func summary(sourceName: String, superseded: Int, elapsed: Duration) -> String {
            var lines = ["index-sources \(interrupted ? "interrupted" : "finished"):"]
            lines.append("  listed:          \(total) episode sources in \(sourceName)"
                         + (superseded > 0 ? " (+\(superseded) older uploads, not indexed)" : ""))
            lines.append("  already indexed: \(alreadyIndexed)")
            lines.append("  indexed now:     \(indexedNow)")
            lines.append("  failed:          \(failures.count)")
            for failure in failures { lines.append("    \(failure.key): \(failure.error)") }
            if interrupted { lines.append("  not started:     \(notStarted)") }
            lines.append("  bytes read:      \(bytesRead) (\(Self.megabytes(bytesRead)))")
            lines.append("  elapsed:         \(Self.seconds(elapsed))")
            return lines.joined(separator: "\n")
        }

        static func megabytes(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1_000_000) }
        static func seconds(_ elapsed: Duration) -> String { String(format: "%.1f s", Double(elapsed.wholeMilliseconds) / 1000) }
    }

    let episodes: [ResolvedEpisode]
    let bytesRead = Atomic<Int64>(0)
    private let condition = NSCondition()
    private var next = 0
    private var running = 0
    private var workers = 0
    private var alreadyIndexed = 0
    private var indexedNow = 0
    private var failures: [Failure] = []
    private var interruptions = 0

    init(episodes: [ResolvedEpisode]) { self.episodes = episodes }

    /// A worker's loop: takes the next source until none is left or the run was interrupted.
    func work(_ index: (ResolvedEpisode) throws -> Bool) {
        condition.lock()
        workers += 1
        condition.unlock()
        while let episode = take() {
            let outcome = Result { try index(episode) }
            condition.lock()
            running -= 1
            switch outcome {
            case .success(true): indexedNow += 1
            case .success(false): alreadyIndexed += 1
            case .failure(let error): failures.append(Failure(key: episode.sourceKey, error: "\(error)"))
            }
            condition.broadcast()
            condition.unlock()
        }
        condition.lock()
        workers -= 1
        condition.broadcast()
        condition.unlock()
    }

    private func take() -> ResolvedEpisode? {
        condition.lock()
        defer { condition.unlock() }
        guard interruptions == 0, next < episodes.count else { return nil }
        next += 1
        running += 1
        return episodes[next - 1]
    }

    /// First signal: finish what is in flight, start nothing more. Second: quit now.
    func interrupt() {
        condition.lock()
        interruptions += 1
        let (count, inFlight) = (interruptions, running)
        condition.broadcast()
        condition.unlock()
        if count == 1 {
            FileHandle.standardError.write(Data("\nindex-sources: stopping after the \(inFlight) sources in flight; interrupt again to quit now\n".utf8))
        } else {
            FileHandle.standardError.write(Data("\nindex-sources: quitting now; run the same command again to resume\n".utf8))
            _exit(130)  // at once: no atexit work while workers are inside libcurl
        }
    }

    /// True once every worker has stopped (all sources done, or interrupted and drained).
    func waitUntilFinished(timeout: Double) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let finished = { (self.next == self.episodes.count || self.interruptions > 0) && self.running == 0 && self.workers == 0 }
        if !finished() { _ = condition.wait(until: Date().addingTimeInterval(timeout)) }
        return finished()
    }

    func snapshot() -> Snapshot {
        condition.lock()
        defer { condition.unlock() }
        return Snapshot(total: episodes.count, alreadyIndexed: alreadyIndexed, indexedNow: indexedNow, failures: failures,
                        notStarted: episodes.count - next, bytesRead: bytesRead.load(ordering: .relaxed),
                        // A signal after the last source was taken changed nothing: the run finished.
                        interrupted: interruptions > 0 && next < episodes.count)
    }
}
