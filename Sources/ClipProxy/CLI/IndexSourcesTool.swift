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
            : (configuration.sourceDir, "\(configuration.secondTierDir)/\(SharedFrameIndex.prefix)")
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

        say("index-sources: \(episodes.count) episode sources in \(sourceName)"
            + (superseded > 0 ? " (\(superseded) older uploads beside newer ones left out)" : "")
            + "; \(concurrency) at a time; indexes go to \(tierName)")
        let bytesRead = ByteCount()
        let run = ParallelRun<ResolvedEpisode, Bool, IndexTally>(
            jobs: episodes, tally: IndexTally(),
            words: .init(tool: "index-sources", job: "source", afterQuit: "run the same command again to resume"),
            record: { $0.record($1, $2) })
        let signals = run.interruptOnSignals()
        defer { signals.forEach { $0.cancel() } }

        let started = ContinuousClock.now
        run.start(threads: concurrency) { episode in try index(episode, opener: opener, tier: tier, bytesRead: bytesRead) }
        let snapshot = { (state: ParallelRun<ResolvedEpisode, Bool, IndexTally>.Snapshot) in
            IndexSnapshot(state, bytesRead: bytesRead.total)
        }
        let (last, elapsed) = run.report(started: started, interval: progressInterval,
                                         bar: { snapshot($0).bar(elapsed: $1) }, line: { snapshot($0).line(elapsed: $1) })
        let final = snapshot(last)
        say(final.summary(sourceName: sourceName, superseded: superseded, elapsed: elapsed))
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
    static func index(_ episode: ResolvedEpisode, opener: SourceOpener, tier: any ClipTier, bytesRead: ByteCount) throws -> Bool {
        let identity = opener.identity(of: episode)
        // One that does not decode (another format version, damage) is replaced, as a node would.
        if let bytes = try tier.frameIndex(source: identity), (try? FrameIndex(serialized: bytes)) != nil { return false }
        let source = CountingByteSource(try opener.open(episode))
        defer { bytesRead.add(source.bytesRead) }
        let index = try SourceDescription.probe(source).1
        try tier.storeFrameIndex(index.serialized(), source: identity)
        return true
    }

    static func say(_ text: String) { ToolOutput.say(text) }
}

/// Source bytes read by all workers together.
final class ByteCount: Sendable {
    private let count = Atomic<Int64>(0)
    func add(_ bytes: Int64) { count.add(bytes, ordering: .relaxed) }
    var total: Int64 { count.load(ordering: .relaxed) }
}

/// What the workers of one run have done so far.
struct IndexTally {
    struct Failure { let key: String; let error: String }
    var alreadyIndexed = 0
    var indexedNow = 0
    var failures: [Failure] = []

    mutating func record(_ episode: ResolvedEpisode, _ outcome: Result<Bool, any Error>) {
        switch outcome {
        case .success(true): indexedNow += 1
        case .success(false): alreadyIndexed += 1
        case .failure(let error): failures.append(Failure(key: episode.sourceKey, error: "\(error)"))
        }
    }
}

/// One moment of a run, as progress lines and the summary show it.
struct IndexSnapshot {
    let total: Int, alreadyIndexed: Int, indexedNow: Int, failures: [IndexTally.Failure], notStarted: Int, bytesRead: Int64
    let interrupted: Bool
    var done: Int { alreadyIndexed + indexedNow + failures.count }

    init(_ state: ParallelRun<ResolvedEpisode, Bool, IndexTally>.Snapshot, bytesRead: Int64) {
        total = state.total
        alreadyIndexed = state.tally.alreadyIndexed
        indexedNow = state.tally.indexedNow
        failures = state.tally.failures
        notStarted = state.notStarted
        interrupted = state.interrupted
        self.bytesRead = bytesRead
    }

    var counts: String {
        "\(indexedNow) indexed now, \(alreadyIndexed) already indexed, \(failures.count) failed; \(ToolOutput.megabytes(bytesRead)) read"
    }

    func line(elapsed: Duration) -> String {
        "progress: \(done)/\(total) done: \(counts); \(ToolOutput.seconds(elapsed))" + (interrupted ? " (stopping)" : "")
    }

    func bar(elapsed: Duration) -> String {
        ToolOutput.bar(done: done, total: total) + "  \(counts)  \(ToolOutput.seconds(elapsed))" + (interrupted ? "  stopping…" : "")
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
        lines.append("  bytes read:      \(bytesRead) (\(ToolOutput.megabytes(bytesRead)))")
        lines.append("  elapsed:         \(ToolOutput.seconds(elapsed))")
        return lines.joined(separator: "\n")
    }
}
