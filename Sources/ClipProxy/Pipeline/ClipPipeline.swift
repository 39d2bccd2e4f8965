import Foundation
import Index
import Logging
import NIOPosix
import Support
import Synchronization
import Trim
import Upstream

/// What a request asks for, once validated.
struct ClipRequest: Sendable, Hashable {
    var episodeId: String
    var startMs: Int64
    var durationMs: Int64
}

/// A clip whose plan and key are known: its exact length, before any source byte is read.
struct PreparedClip: Sendable {
    let request: ClipRequest
    let episode: ResolvedEpisode
    let plan: ClipPlan
    let key: ClipKey
    let sourceIdentity: String
}

/// Where the bytes of a response come from.
enum ClipBody: Sendable {
    /// L1: a finished file in the local store, pinned while it is read.
    case stored(ClipStore.Lease, tier: Tier)
    /// A fill in progress (this request's or another's): read as it grows.
    case filling(Fill, tier: Tier)
    /// A cold clip asked for in part: each range is made from just the bytes behind it (the
    /// second tier's copy, or the source through the plan); nothing is cached.
    case part(PartSource)

    enum Tier: String, Sendable {
        case l1 = "l1_hit", l2 = "l2_hit", fill = "fill", coalesced = "coalesced", part = "part"
    }

    var tier: Tier {
        switch self {
        case .stored(_, let tier), .filling(_, let tier): tier
        case .part: .part
        }
    }
}

/// Where the ranges of a cold clip asked for in part come from.
struct PartSource: Sendable {
    enum Bytes: Sendable {
        /// The finished clip in the second tier.
        case stored(StoredClip)
        /// The source, cut through the plan.
        case source(any ByteSource)
    }
    let plan: ClipPlan
    let bytes: Bytes
    let createdMs: Int64

    /// Bytes `range` of the clip. Blocking.
    func write(_ range: Range<Int64>, _ emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        switch bytes {
        case .stored(let stored): try stored.bytes.stream(range, emit)
        case .source(let source): try Trimmer.write(plan, range: range, from: source, emit: emit)
        }
    }
}

/// The request flow of `/clips`: validate → resolve → plan → L1 → L2 → fill.
final class ClipPipeline: Sendable {
    let configuration: Configuration
    let store: ClipStore
    let locator: SourceLocator
    let sources: SourceOpener
    let secondTier: (any ClipTier)?
    let fills = FillCoordinator()
    let slots: FillSlots
    /// Decoded frame indexes by source identity (which includes the ETag, so entries never go
    /// stale): a hit must not decode a long episode's index from LMDB on every request.
    private let decodedIndexes = Mutex<[String: FrameIndex]>([:])
    /// Recently prepared clips (see `prepare`); bounded like the decoded indexes.
    private let preparedClips = Mutex<[ClipRequest: (clip: PreparedClip, until: ContinuousClock.Instant)]>([:])
    static let preparedClipLimit = 1024  // a plan holds its frame sizes: about 10 kB per 30 s clip
    /// Frame indexes being loaded or built, by source identity.
    private let indexLoads = SingleFlight<String, FrameIndex>()
    /// Second-tier uploads in progress, so one clip is uploaded once however many ask.
    private let uploads = SingleFlight<ClipKey, Void>()
    static let decodedIndexLimit = 256
    let threads: NIOThreadPool
    let logger: Logger
    let metrics: ClipMetrics
    /// How long a resolved episode is trusted before the catalog is asked again.
    static let episodeTTLms: Int64 = 10 * 60 * 1000

    init(configuration: Configuration, store: ClipStore, locator: SourceLocator, sources: SourceOpener,
         secondTier: (any ClipTier)?, threads: NIOThreadPool, logger: Logger, metrics: ClipMetrics) {
        self.metrics = metrics
        self.configuration = configuration
        slots = FillSlots(capacity: configuration.limitsMaxFills, queueLimit: configuration.limitsFillQueue,
                          maxWait: .milliseconds(configuration.limitsFillQueueWaitMs))
        self.store = store
        self.locator = locator
        self.sources = sources
        self.secondTier = secondTier
        self.threads = threads
        self.logger = logger
    }

    /// Runs blocking work (LMDB writes, libavformat, libmongoc, libcurl, file I/O) off the event loop.
    func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await threads.runIfActive(work)
    }

    // MARK: - The flow

    /// Resolve the episode, index its source, plan the clip and derive its key. No clip byte is read.
    /// Recent answers are kept for a minute: a hit then costs a dictionary lookup, not a plan and
    /// a hash (well inside the staleness the episode TTL already accepts).
    func prepare(_ request: ClipRequest) async throws -> PreparedClip {
        let now = ContinuousClock.now
        if let recent = preparedClips.withLock({ $0[request] }), now < recent.until { return recent.clip }
        let clip = try await prepareAfresh(request)
        preparedClips.withLock { cache in
            if cache.count >= Self.preparedClipLimit { cache.removeAll(keepingCapacity: true) }
            cache[request] = (clip, now + .seconds(60))
        }
        return clip
    }

    private func prepareAfresh(_ request: ClipRequest) async throws -> PreparedClip {
        let episode = try await resolve(request.episodeId)
        let sourceIdentity = sources.identity(of: episode)
        let index = try await frameIndex(of: episode, identity: sourceIdentity)
        let plan = try ClipPlan.plan(index, .init(startMs: request.startMs, durationMs: request.durationMs))
        let key = ClipKey(identity: "clipproxy|\(sourceIdentity)|\(plan.identity)")
        return PreparedClip(request: request, episode: episode, plan: plan, key: key, sourceIdentity: sourceIdentity)
    }

    /// The cheapest tier that has the clip: local store, then the clip directory/bucket, then a
    /// fill shared by every request for the same key.
    /// The fill is registered before the second tier is asked, so concurrent requests for a
    /// cold clip make one second-tier lookup, not one each.
    /// `knownAbsentFromSecondTier`: the caller has just asked the second tier (skip a second HEAD).
    func open(_ clip: PreparedClip, knownAbsentFromSecondTier: Bool = false) async throws -> ClipBody {
        if let warm = try await openWarm(clip) { return warm }
        guard let (blob, fill) = try await claim(clip) else { return try await joinRunning(clip) }
        do {
            if !knownAbsentFromSecondTier, let secondTier, let stored = await findInSecondTier(clip, secondTier) {
                return copyFromSecondTier(clip, secondTier, stored, blob, fill)
            }
            return try startFill(clip, blob, fill)
        } catch {
            await abandon(blob, fill, error: error)
            throw error
        }
    }

    /// For a request that wants only part of the clip: the local copy or a running fill if there
    /// is one, else a `.part` that reads only what the ranges need (nothing starts, nothing is
    /// cached; a request for the whole clip does that).
    func openForPart(_ clip: PreparedClip) async throws -> ClipBody {
        if let warm = try await openWarm(clip) { return warm }
        if let secondTier, let stored = await findInSecondTier(clip, secondTier) {
            return .part(PartSource(plan: clip.plan, bytes: .stored(stored), createdMs: stored.createdMs ?? ClipStore.nowMs()))
        }
        return .part(PartSource(plan: clip.plan, bytes: .source(try sources.open(clip.episode)), createdMs: ClipStore.nowMs()))
    }

    /// The clip's copy in the second tier. A second tier that cannot answer is logged and treated
    /// as not having it: the source can always make the clip, so an S3 clip-bucket outage costs
    /// cuts, not failed requests.
    private func findInSecondTier(_ clip: PreparedClip, _ tier: any ClipTier) async -> StoredClip? {
        do {
            return try await blocking { try tier.find(clip) }
        } catch {
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("second tier lookup failed; cutting from the source", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
            return nil
        }
    }

    /// The local store or a running fill, if either has the clip. The lookup is a read
    /// transaction done inline (a thread hop per hit cost more than the lookup); a due batch of
    /// access times is written on the blocking pool.
    private func openWarm(_ clip: PreparedClip) async throws -> ClipBody? {
        if let lease = try store.lookup(clip.key, deferFlush: true) {
            if store.recencyFlushDue {
                Task.detached { [self] in try? await blocking { [store] in try store.flushRecency() } }
            }
            return .stored(lease, tier: .l1)
        }
        if let running = await fills.join(clip.key) {
            try await running.waitUntilStarted()
            return .filling(running, tier: .coalesced)
        }
        return nil
    }

    // MARK: - Resolution and indexing (cached in LMDB)

    func resolve(_ episodeId: String) async throws -> ResolvedEpisode {
        let now = ClipStore.nowMs()
        // An LMDB read transaction (microseconds, no I/O once mapped): cheaper inline than a thread hop.
        if let cached = try store.episode(episodeId), cached.expiresMs > now {
            return ResolvedEpisode(episodeId: episodeId, guid: cached.guid, feedSlug: cached.feedSlug, sourceKey: cached.sourceKey,
                                   etag: cached.etag, size: cached.size, alsoMatched: [])
        }
        let resolved = try await blocking { [locator] in try locator.resolve(episodeId) }
        if !resolved.alsoMatched.isEmpty {
            logger.warning("several source objects match; using the greatest key",
                           metadata: ["episode.id": "\(episodeId)", "source.key": "\(resolved.sourceKey)", "source.others": "\(resolved.alsoMatched)"])
        }
        let record = EpisodeRecord(guid: resolved.guid, feedSlug: resolved.feedSlug, sourceKey: resolved.sourceKey,
                                   etag: resolved.etag, size: resolved.size, expiresMs: now + Self.episodeTTLms)
        try await blocking { [store] in try store.putEpisode(episodeId, record) }
        return resolved
    }

    /// The source's frame index: from memory, the local index, the second tier (indexed by
    /// another node), or by probing the source, in that order of cost.
    /// Concurrent first requests for one episode share one load (a VBR probe reads the whole source).
    func frameIndex(of episode: ResolvedEpisode, identity: String) async throws -> FrameIndex {
        if let cached = decodedIndexes.withLock({ $0[identity] }) { return cached }
        return try await indexLoads.run(identity) { [self] in try await loadFrameIndex(of: episode, identity: identity) }
    }

    private func loadFrameIndex(of episode: ResolvedEpisode, identity: String) async throws -> FrameIndex {
        let index: FrameIndex
        if let bytes = try await blocking({ [store] in try store.frameIndex(source: identity) }),
           let stored = try? FrameIndex(serialized: bytes) {
            index = stored
        } else if let shared = await sharedFrameIndex(identity) {
            index = shared
            try await blocking { [store] in try store.putFrameIndex(source: identity, index.serialized()) }
        } else {
            let source = try sources.open(episode)
            index = try await blocking { try SourceDescription.probe(source) }.1
            let bytes = index.serialized()
            try await blocking { [store] in try store.putFrameIndex(source: identity, bytes) }
            shareFrameIndex(bytes, identity: identity)
        }
        decodedIndexes.withLock { cache in
            // Bounded: dropping everything now and then is cheaper than tracking recency here.
            if cache.count >= Self.decodedIndexLimit { cache.removeAll(keepingCapacity: true) }
            cache[identity] = index
        }
        return index
    }

    /// Another node's index of the same source, if the second tier has one that decodes.
    private func sharedFrameIndex(_ identity: String) async -> FrameIndex? {
        guard let secondTier else { return nil }
        do {
            guard let bytes = try await blocking({ try secondTier.frameIndex(source: identity) }) else { return nil }
            return try FrameIndex(serialized: bytes)
        } catch {
            // Unreadable or corrupt: probing the source is always correct, so only note it.
            logger.warning("shared frame index unusable; probing the source", metadata: ["source": "\(identity)", "error": "\(error)"])
            return nil
        }
    }

    /// Publishes a new index to the second tier in the background (best effort).
    private func shareFrameIndex(_ bytes: [UInt8], identity: String) {
        guard let secondTier else { return }
        Task.detached { [self] in
            do {
                try await blocking { try secondTier.storeFrameIndex(bytes, source: identity) }
            } catch {
                metrics.upstreamErrors["clip_tier"]?.increment()
                logger.warning("could not share the frame index", metadata: ["source": "\(identity)", "error": "\(error)"])
            }
        }
    }

    // MARK: - Fills

    /// Cuts the clip into the local store; every request for the key reads it as it grows.
    private func startFill(_ clip: PreparedClip, _ blob: BlobFill, _ fill: Fill) throws -> ClipBody {
        let source = try sources.open(clip.episode)
        logger.info("fill started", metadata: ["clip.key": "\(clip.key)", "episode.id": "\(clip.request.episodeId)",
                                                "source.range": "\(clip.plan.readRange)", "clip.bytes": "\(clip.plan.byteCount)"])
        fill.markStarted()
        run(clip, blob, fill, location: nil, upstream: "source", failure: "fill failed; nothing cached") { emit in
            try Trimmer.write(clip.plan, from: source, emit: emit)
        } finished: { [self] elapsed in
            metrics.fillDuration.record(duration: elapsed)
            logger.info("fill finished", metadata: ["clip.key": "\(clip.key)", "fill.ms": "\(elapsed.wholeMilliseconds)"])
            await copyToSecondTier(clip)
        }
        return .filling(fill, tier: .fill)
    }

    /// A clip found in the second tier is streamed to the client while it is copied into L1; it
    /// keeps the creation time it has there.
    private func copyFromSecondTier(_ clip: PreparedClip, _ tier: any ClipTier, _ stored: StoredClip, _ blob: BlobFill, _ fill: Fill) -> ClipBody {
        if let createdMs = stored.createdMs {
            blob.startedMs = createdMs
            fill.createdMs = createdMs
        }
        fill.markStarted()
        run(clip, blob, fill, location: tier.location(clip), upstream: "clip_tier", failure: "copy from the second tier failed") { emit in
            try stored.bytes.stream(0..<clip.plan.byteCount, emit)
        } finished: { [self] _ in
            logger.info("local copy from the second tier finished", metadata: ["clip.key": "\(clip.key)"])
        }
        return .filling(fill, tier: .l2)
    }

    /// A new temporary file and fill for `clip`, registered (so every other request for the key
    /// joins it from now on), then a fill slot, waiting in the queue if all are busy. nil when
    /// another request's fill is running or has just finished (then `joinRunning` finds it). The
    /// slot is released when the fill ends (`run` or `abandon`).
    /// The caller calls `fill.markStarted()` once it knows what the fill reads (joined requests
    /// wait for that), or `abandon`.
    private func claim(_ clip: PreparedClip) async throws -> (BlobFill, Fill)? {
        let blob = try await blocking { [store] in try store.beginFill(clip.key) }
        let fill: Fill
        do { fill = try Fill(key: clip.key, length: clip.plan.byteCount, temporaryPath: blob.temporaryPath, createdMs: blob.startedMs) } catch {
            blob.abort()
            throw error
        }
        switch await fills.claim(fill, isStored: { [store] in (try? store.contains(clip.key)) ?? false }) {
        case .mine:
            break
        case .running, .stored:
            blob.abort()
            return nil
        }
        do { try await slots.acquire() } catch {
            metrics.overloaded.increment()
            logger.warning("fill refused: all fill slots busy and the queue full or too slow",
                           metadata: ["clip.key": "\(clip.key)", "limits.max_fills": "\(configuration.limitsMaxFills)"])
            await abandon(blob, fill, error: error, holdsSlot: false)
            throw error
        }
        return (blob, fill)
    }

    /// Undoes a claimed fill that never started: joined requests get `error`, nothing is cached.
    private func abandon(_ blob: BlobFill, _ fill: Fill, error: any Error, holdsSlot: Bool = true) async {
        blob.abort()
        fill.finish(error)
        await fills.remove(fill)
        if holdsSlot { await slots.release() }
    }

    private func joinRunning(_ clip: PreparedClip) async throws -> ClipBody {
        if let running = await fills.join(clip.key) {
            try await running.waitUntilStarted()
            return .filling(running, tier: .coalesced)
        }
        return try await open(clip)  // it finished in between: now it is in L1
    }

    /// Runs a fill in the background: `produce` emits the clip's bytes into the temporary file
    /// (waking readers as they grow), then the file is committed to L1. The fill belongs to the
    /// cache, not to a request: it finishes even if every client leaves. On failure every reader's
    /// transfer is aborted and nothing is cached.
    private func run(_ clip: PreparedClip, _ blob: BlobFill, _ fill: Fill, location: String?, upstream: String, failure: String,
                     produce: @escaping @Sendable (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
                     finished: @escaping @Sendable (Duration) async -> Void) {
        Task.detached { [self] in
            let started = ContinuousClock.now
            do {
                try await blocking {
                    try produce { bytes in
                        try blob.write(bytes)
                        fill.advance(to: blob.byteCount)
                    }
                }
                // A short copy (an object replaced between HEAD and GET) must never be stored.
                guard blob.byteCount == clip.plan.byteCount else {
                    throw FillError.incomplete(written: blob.byteCount, expected: clip.plan.byteCount)
                }
                _ = try await blocking { [store] in try store.commit(blob, s3Key: location) }
                fill.finish(nil)
                await fills.remove(fill)
                await slots.release()
                await finished(ContinuousClock.now - started)
            } catch {
                blob.abort()
                fill.finish(error)
                await fills.remove(fill)
                await slots.release()
                metrics.fillFailures.increment()
                metrics.upstreamErrors[upstream]?.increment()
                logger.error("\(failure)", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
            }
        }
    }

    /// After a fill: copy the clip to the second tier in the background; failures are logged
    /// (the clip is still served from L1 and is copied again when the JSON API asks for it).
    private func copyToSecondTier(_ clip: PreparedClip) async {
        do {
            try await uploadToSecondTier(clip)
            logger.info("second tier copy finished", metadata: ["clip.key": "\(clip.key)"])
        } catch {
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("could not copy the clip to the second tier", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
        }
    }

    /// Uploads the committed L1 clip to the second tier once, however many callers ask at the
    /// same time; returns at once if the index says it is there already.
    func uploadToSecondTier(_ clip: PreparedClip) async throws {
        guard let secondTier else { return }
        try await uploads.run(clip.key) { [self] in
            try await blocking { [store] in
                guard let lease = try store.lookup(clip.key) else { throw FillError.notStored }
                defer { lease.release() }
                if lease.record.s3Key == secondTier.location(clip) { return }
                try secondTier.store(clip, from: lease.path, createdMs: lease.record.createdMs)
                try store.setS3Key(clip.key, secondTier.location(clip))
            }
        }
    }

    /// Makes sure the clip is in the second tier (the S3 clip bucket), cutting it if needed and
    /// sharing the work with `/clips` requests for it. Returns whether it existed before the call,
    /// in the local store or the second tier.
    func ensureInSecondTier(_ clip: PreparedClip) async throws -> Bool {
        if let lease = try await blocking({ [store] in try store.lookup(clip.key) }) {
            let uploaded = secondTier == nil || lease.record.s3Key == secondTier?.location(clip)
            lease.release()
            if !uploaded { try await uploadToSecondTier(clip) }
            return true
        }
        // Found in the second tier: the URL can point there; no need to copy it here too.
        if let secondTier, try await blocking({ try secondTier.find(clip) }) != nil { return true }
        let body = try await open(clip, knownAbsentFromSecondTier: true)
        switch body {
        case .stored(let lease, _): lease.release()
        case .filling(let fill, _): try await fill.waitUntilFinished()
        case .part: break  // not returned by open
        }
        try await uploadToSecondTier(clip)
        return false
    }
}

enum ServiceError: Error, CustomStringConvertible {
    case overloaded
    var description: String { "too many clips are being cut right now; retry in a second" }
}
