import Foundation
import Index
import Logging
import NIOPosix
import Support
import Synchronization
import Trim
import Upstream

/// The request flow of `/clips`, composed of parts that each own their state and tasks:
/// prepare (`EpisodeResolver` → `FrameIndexes` → plan and key) → answer (open the clip, decide
/// Range and conditionals) → open (local store → a running fill → the second tier, checked
/// against `SecondTierListings` → a new fill from `FillRunner`).
///
/// The one promise every path keeps: a body is returned only once its bytes are assured to
/// start flowing (a stored file is open, or the upstream of a fill has answered), so a refusal
/// becomes a clean error, never a status line followed by a broken body.
final class ClipPipeline: PipelinePart, Sendable {
    let shared: PipelineShared
    let configuration: Configuration
    let locator: SourceLocator
    let sources: SourceOpener
    let secondTier: (any ClipTier)?
    let resolver: EpisodeResolver
    let indexes: FrameIndexes
    let listings: SecondTierListings?
    let fills: FillRunner
    /// The windows `snap=pause` requests moved to (`PauseSnaps.swift`).
    let pauses: PauseSnaps
    /// Episodes' transcript chunks, for captions (`Transcripts.swift`).
    let transcripts: TranscriptCache
    /// Waveform peaks being read or computed, by peaks key: one computation however many ask (`Peaks.swift`).
    let peakLoads = SingleFlight<ClipKey, [UInt8]>()
    /// Recently prepared clips (see `prepare`), bounded.
    private let preparedClips = Mutex<[ClipRequest: (clip: PreparedClip, until: ContinuousClock.Instant)]>([:])
    static let preparedClipLimit = 1024  // a plan holds its frame sizes: about 10 kB per 30 s clip
    /// Prepared clips held in memory now (resolution, index and plan: what the fast path answers from).
    var preparedCount: Int { preparedClips.withLock { $0.count } }
    private let firstCuts = Mutex(FirstCuts())

    init(configuration: Configuration, store: ClipStore, locator: SourceLocator, sources: SourceOpener, secondTier: (any ClipTier)?,
         threads: NIOThreadPool, background: BackgroundWork, logger: Logger, metrics: ClipMetrics) {
        let shared = PipelineShared(store: store, storeWrites: StoreWrites(store: store, logger: logger, metrics: metrics),
                                    blocking: Blocking(pool: threads), background: background, metrics: metrics, logger: logger)
        self.shared = shared
        self.configuration = configuration
        self.locator = locator
        self.sources = sources
        self.secondTier = secondTier
        transcripts = TranscriptCache(ttl: .seconds(configuration.catalogTTLs))
        resolver = EpisodeResolver(shared, locator: locator, ttlSeconds: configuration.catalogTTLs)
        indexes = FrameIndexes(shared, sources: sources, secondTier: secondTier)
        listings = secondTier.map { SecondTierListings(shared, tier: $0, keyTemplate: configuration.s3ClipKeyTemplate, ttl: .seconds(configuration.catalogTTLs)) }
        pauses = PauseSnaps(shared, indexes: indexes, sources: sources)
        fills = FillRunner(shared, secondTier: secondTier, listings: listings, indexes: indexes,
                           limits: (configuration.limitsMaxFills, configuration.limitsFillQueue, .milliseconds(configuration.limitsFillQueueWaitMs)))
    }

    // MARK: - Prepare

    /// Runs `answer` on the prepared clip; if a read finds that the source changed since it was
    /// indexed (re-uploaded), forgets what was derived from it and runs `answer` once more on a
    /// fresh resolution, so the same request is served from the new audio.
    func withCurrentSource<T>(_ request: ClipRequest, _ answer: (PreparedClip) async throws -> T) async throws -> T {
        do {
            return try await answer(try await prepare(request))
        } catch where SourceChangedError.matches(error) {
            metrics.sourceChanged.increment()
            logger.warning("source changed since it was indexed; resolving it again",
                           metadata: ["episode.id": "\(request.episodeId)", "error": "\(error)"])
            await forget(request.episodeId)
            return try await answer(try await prepare(request))
        }
    }

    /// Resolve the episode, index its source, plan the clip and derive its key. No clip byte is read.
    /// Recent answers are kept for a minute: a hit then costs a dictionary lookup, not a plan and
    /// a hash (well inside the staleness the catalog TTL already accepts; a changed source is
    /// noticed by the first read of it).
    func prepare(_ request: ClipRequest) async throws -> PreparedClip {
        if let recent = recentlyPrepared(request) { return recent }
        let now = ContinuousClock.now
        let episode = try await resolver.resolve(request.episodeId)
        listings?.listAhead(episode)
        let identity = sources.identity(of: episode)
        // A snapped request is prepared as the exact window it moved to: same plan, key and bytes.
        let exact = request.snapsToPauses ? request.exactly(try await snapped(request, of: episode, identity: identity)) : request
        let plan = try await plan(exact, of: episode, identity: identity).plan
        let key = ClipKey(identity: "clipproxy|\(identity)|\(plan.identity)")
        let clip = PreparedClip(request: exact, episode: episode, plan: plan, key: key, sourceIdentity: identity)
        preparedClips.withLock { cache in
            if cache.count >= Self.preparedClipLimit { cache.removeAll(keepingCapacity: true) }
            cache[request] = (clip, now + .seconds(60))
        }
        return clip
    }

    /// The window a `snap=pause` request moves to, chosen once per source and window (`PauseSnaps`).
    private func snapped(_ request: ClipRequest, of episode: ResolvedEpisode, identity: String) async throws -> ClipPlan.Request {
        try await pauses.window(ClipPlan.Request(startMs: request.startMs, durationMs: request.durationMs), episode: episode,
                                episodeId: request.episodeId, identity: identity, maxDurationMs: configuration.clipsMaxDurationMs) { [self] window in
            try await plan(request.exactly(window), of: episode, identity: identity)
        }
    }

    /// The clip's plan, and the index it was planned with. A VBR source is indexed only as far
    /// as the clips asked for so far; a clip beyond that extends the index first (bounded: an
    /// index extended to the end plans or says 422).
    private func plan(_ request: ClipRequest, of episode: ResolvedEpisode, identity: String) async throws -> (plan: ClipPlan, index: FrameIndex) {
        let window = ClipPlan.Request(startMs: request.startMs, durationMs: request.durationMs)
        let coveringMs = request.startMs.addingReportingOverflow(request.durationMs).overflow ? Int64.max : request.startMs + request.durationMs
        var index = try await indexes.index(of: episode, identity: identity, coveringMs: coveringMs)
        while true {
            do {
                return (try ClipPlan.plan(index, window), index)
            } catch let short as FrameIndexTooShort where !index.isComplete {
                let before = index.frameCount
                index = try await indexes.extend(index, of: episode, identity: identity, coveringMs: short.neededMs)
                if !index.isComplete && index.frameCount == before && index.coveredMs >= short.neededMs {
                    // It covers what the plan asked for, did not grow, and the plan still wants
                    // more: never loop on that; index to the end (then it plans or says 422).
                    index = try await indexes.extend(index, of: episode, identity: identity, coveringMs: nil)
                }
            }
        }
    }

    /// The clip `prepare` made for this request within the last minute, if any: no catalog,
    /// index or hash work. (The fast path answers only from these.)
    func recentlyPrepared(_ request: ClipRequest) -> PreparedClip? {
        guard let recent = preparedClips.withLock({ $0[request] }), ContinuousClock.now < recent.until else { return nil }
        return recent.clip
    }

    /// When the clip was first cut on this node: now, or when a part of it was first answered
    /// from the source a little earlier. A clip is one representation, so the Last-Modified of a
    /// browser's first probe (`Range: bytes=0-1`, then the whole clip) must not move: a client
    /// revalidating with it gets 304, and If-Range with it gets 206. Kept a few minutes.
    private func firstCut(of clip: PreparedClip) -> Int64 {
        firstCuts.withLock { $0.time(of: clip.key, now: ClipStore.nowMs()) }
    }

    // MARK: - Answer

    /// What a request is answered with: the body, the RFC 9110 decision and, for a part, its bytes.
    struct Answer: Sendable {
        let clip: PreparedClip
        let body: ClipBody
        let decision: ByteRangeResponse
        var partBytes: [UInt8]?
    }

    /// Opens the clip for a request and decides the response. A Range request on a cold clip
    /// costs only the bytes it asks for (a `part`, read here), unless the decision needs more of
    /// the clip than one range of it (then it is filled like any other request). Every upstream
    /// read the response depends on has answered when this returns, so the status line that
    /// follows is one the body can honour.
    func answer(_ clip: PreparedClip, _ conditions: ByteRangeResponse.RequestConditions) async throws -> Answer {
        let wantsPart = conditions.method == "GET" && conditions.range != nil
        let body = try await wantsPart ? openForPart(clip) : open(clip)
        let decision = ByteRangeResponse.decide(conditions, for: clip.representation(createdMs: body.createdMs))
        guard case .part(let part) = body else { return Answer(clip: clip, body: body, decision: decision) }
        guard Self.worthAPart(decision, of: clip.plan.byteCount) else {
            // The second tier was just asked for this clip (a HEAD): its answer opens the whole
            // clip too, instead of a second lookup of the same object.
            let whole = try await open(clip, found: part.storedCopy)
            return Answer(clip: clip, body: whole, decision: ByteRangeResponse.decide(conditions, for: clip.representation(createdMs: whole.createdMs)))
        }
        var answer = Answer(clip: clip, body: body, decision: decision)
        if let range = decision.parts.lazy.compactMap({ if case .bytes(let r) = $0 { r } else { nil } }).first {
            answer.partBytes = try await blocking { try part.read(range) }
        }
        return answer
    }

    /// A download (`ClipDownload`): the whole clip opened as `/clips` opens it (nothing is read in
    /// part: the tag shifts every range), decided on the tagged representation.
    func answer(_ clip: PreparedClip, _ conditions: ByteRangeResponse.RequestConditions, download: ClipDownload) async throws -> Answer {
        let body = try await open(clip)
        return Answer(clip: clip, body: body, decision: ByteRangeResponse.decide(conditions, for: download.representation(of: clip, createdMs: body.createdMs)))
    }

    /// A part is read from the bytes behind it only for a single range that is not the whole
    /// clip (a browser seeking, a CDN slicing). Several ranges would each be their own uncached
    /// read, every time: they are answered from a fill that caches the clip and takes a fill slot
    /// like any other.
    static func worthAPart(_ decision: ByteRangeResponse, of length: Int64) -> Bool {
        let ranges = decision.parts.compactMap { if case .bytes(let r) = $0 { r } else { nil } }
        return ranges.count <= 1 && ranges.allSatisfy { $0.count < length }
    }

    // MARK: - Open

    /// The cheapest tier that has the clip: local store, a running fill, the clip directory or
    /// bucket, else a new fill from the source, shared by every request for the key. Returns
    /// once the bytes are assured (see the type's note). `found`: the second tier's copy, checked
    /// by this request a moment ago (`openForPart`); the first claim uses it instead of asking again.
    func open(_ clip: PreparedClip, found: StoredClip? = nil) async throws -> ClipBody {
        // A claim loses only to a fill that registered or committed a moment earlier; the next
        // turn finds it. Bounded, so a record whose file vanished cannot spin.
        var found = found
        for _ in 0..<3 {
            if let warm = try await openWarm(clip) { return warm }
            let known = found
            found = nil
            if let started = try await fills.fill(clip, createdMs: firstCut(of: clip), lookup: { if let known { known } else { await findInSecondTier(clip) } }) {
                return .filling(started.fill, tier: started.from == nil ? .fill : .l2)
            }
        }
        throw FillError.notStored
    }

    /// For a request that wants only part of the clip: the local copy or a running fill if there
    /// is one, else a `.part` that reads only what the ranges need (nothing starts, nothing is
    /// cached; a request for the whole clip does that).
    func openForPart(_ clip: PreparedClip) async throws -> ClipBody {
        if let warm = try await openWarm(clip) { return warm }
        if let stored = await findInSecondTier(clip) {
            return .part(PartSource(plan: clip.plan, bytes: .stored(stored), createdMs: stored.createdMs ?? ClipStore.nowMs()))
        }
        let source = try indexes.openSource(clip.episode, identity: clip.sourceIdentity)
        return .part(PartSource(plan: clip.plan, bytes: .source(source), createdMs: firstCut(of: clip)))
    }

    /// The local store or a running fill, if either has the clip.
    private func openWarm(_ clip: PreparedClip) async throws -> ClipBody? {
        if let lease = try storedLease(clip) { return .stored(lease, tier: .l1) }
        guard let running = await fills.coordinator.join(clip.key) else { return nil }
        try await running.waitUntilStarted()
        return .filling(running, tier: .coalesced)
    }

    /// The clip's local copy, leased, if the store has it whole: a read transaction and an open
    /// done inline (a thread hop per hit cost more than both), never a wait. Writes it defers
    /// (access times, dropping a record without its file) run in the background.
    func storedLease(_ clip: PreparedClip) throws -> ClipStore.Lease? {
        if let lease = try store.lookup(clip.key, deferFlush: true) {
            if store.recencyFlushDue {
                background.start("access times") { [self] in _ = try? await blocking { [store] in try store.flushRecency() } }
            }
            return lease
        }
        if store.hasStaleRecords {
            background.start("stale records") { [self] in
                _ = try? await blocking { [storeWrites, store] in storeWrites.attempt("index") { try store.dropStaleRecords() } }
            }
        }
        return nil
    }

    /// The clip's copy in the second tier. A second tier that cannot answer is logged and treated
    /// as not having it: the source can always make the clip, so an S3 clip-bucket outage costs
    /// cuts, not failed requests. A clip missing from the episode's listing is absent without
    /// a request (a copy another node stored since the listing is cut once more: rare behind
    /// consistent hashing, and it costs one clip's source bytes).
    private func findInSecondTier(_ clip: PreparedClip) async -> StoredClip? {
        guard let secondTier, await listings?.mayHold(clip) != false else { return nil }
        do {
            return try await blocking { try secondTier.find(clip) }
        } catch {
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("second tier lookup failed; cutting from the source", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
            return nil
        }
    }

    // MARK: - The JSON API and operators

    /// Makes sure the clip is in the second tier (the S3 clip bucket), cutting it if needed and
    /// sharing the work with `/clips` requests for it. Returns whether it existed before the call,
    /// in the local store or the second tier.
    func ensureInSecondTier(_ clip: PreparedClip) async throws -> Bool {
        if let lease = try await blocking({ [store] in try store.lookup(clip.key) }) {
            let uploaded = secondTier == nil || lease.record.secondTierLocation == secondTier?.location(clip)
            lease.release()
            if !uploaded { try await fills.upload(clip) }
            return true
        }
        // Found in the second tier: the URL can point there; no need to copy it here too.
        if await findInSecondTier(clip) != nil { return true }
        // (`open` asks the second tier again: a set lookup in the episode's listing, or a HEAD
        // when that listing failed; a fill started meanwhile by a /clips request is joined.)
        let body = try await open(clip)
        if case .filling(let fill, _) = body {
            try await fill.waitUntilFinished()
            try await fills.upload(clip, unkept: fill)
        } else {
            body.release()
            try await fills.upload(clip)
        }
        return false
    }

    /// Drops everything derived from an episode's source: resolution, frame index, prepared
    /// clips, transcript. The next request resolves and indexes it again. Clips stay (their keys
    /// name the old source's ETag, so they are never served for the new one; `purge` removes them).
    func forget(_ episodeId: String) async {
        preparedClips.withLock { cache in cache = cache.filter { $0.key.episodeId != episodeId } }
        let recorded = resolver.recorded(episodeId)
        transcripts.forget(recorded?.guid ?? episodeId)
        await resolver.forget(episodeId)
        if let recorded { await indexes.forget(identity: sources.identity(of: recorded)) }
    }

    struct PurgeReport: Sendable {
        var clipsRemoved = 0
        var secondTierRemoved = 0
    }

    /// Forgets an episode now: its resolution, frame index and prepared clips, its clips in the
    /// local store, and with `secondTier` its clips and shared frame index in the clip bucket or
    /// directory too, whichever node cut them (the episode's folder there is listed). An episode
    /// the catalog does not know throws `CatalogError.notFound`.
    func purge(_ episodeId: String, secondTier includeSecondTier: Bool) async throws -> PurgeReport {
        // The resolution this node has, however old (a takedown may already have removed the
        // episode from the catalog); else the catalog's.
        let known = resolver.recorded(episodeId)
        let episode = if let known { known } else { try await resolver.resolve(episodeId) }
        await forget(episodeId)
        let removed = try await blocking { [store] in try store.purge(episodeId: episodeId) }
        var report = PurgeReport(clipsRemoved: removed.count)
        if includeSecondTier, let secondTier {
            let prefix = listings?.folder(of: episode)
            if let prefix { listings?.drop(prefix) }
            let identity = sources.identity(of: episode)
            report.secondTierRemoved = try await blocking {
                var locations = Set(removed.compactMap(\.secondTierLocation))
                if let prefix { locations.formUnion(try secondTier.locations(under: prefix)) }
                try secondTier.removeFrameIndex(source: identity)
                return try locations.reduce(0) { count, location in count + (try secondTier.remove(location) ? 1 : 0) }
            }
        }
        logger.notice("episode purged", metadata: ["episode.id": "\(episodeId)", "purge.clips": "\(report.clipsRemoved)",
                                                    "purge.second_tier": "\(report.secondTierRemoved)"])
        return report
    }
}
