import Foundation
import Index
import Logging
import NIOPosix
import Support
import Synchronization
import Trim
import Upstream

/// The request flow of `/clips`: validate → resolve → plan → L1 → L2 → fill.
///
/// The one promise every path keeps: a body is returned only once its bytes are assured to
/// start flowing (a stored file is open, or the upstream of a fill has answered), so a refusal
/// becomes a clean error, never a status line followed by a broken body.
final class ClipPipeline: Sendable {
    let configuration: Configuration
    let store: ClipStore
    let locator: SourceLocator
    let sources: SourceOpener
    let secondTier: (any ClipTier)?
    let fills = FillCoordinator()
    let slots: FillSlots
    let storeWrites: StoreWrites
    /// Decoded frame indexes by source identity (which includes the ETag, so entries never go
    /// stale): a hit must not decode a long episode's index from LMDB on every request.
    private let decodedIndexes = Mutex<[String: FrameIndex]>([:])
    static let decodedIndexLimit = 256
    /// Recently prepared clips (see `prepare`); bounded like the decoded indexes.
    private let preparedClips = Mutex<[ClipRequest: (clip: PreparedClip, until: ContinuousClock.Instant)]>([:])
    static let preparedClipLimit = 1024  // a plan holds its frame sizes: about 10 kB per 30 s clip
    /// Frame indexes being loaded, built or extended, by source identity: one at a time per source.
    private let indexLoads = SingleFlight<String, FrameIndex>()
    /// Catalog lookups in progress, by episode id: a burst for one episode asks once.
    private let resolutions = SingleFlight<String, ResolvedEpisode>()
    /// Episodes served from a resolution past its TTL because the catalog could not answer,
    /// with the time of the last attempt to refresh them (at most one a second each).
    private let staleEpisodes = Mutex<[String: ContinuousClock.Instant]>([:])
    /// Second-tier uploads in progress, so one clip is uploaded once however many ask.
    private let uploads = SingleFlight<ClipKey, Void>()
    /// What the second tier holds under each episode's folder, listed once per `catalog.ttl_s`
    /// (plus this node's own uploads), so a miss does not ask the clip bucket before it cuts.
    /// A listing that failed is an empty entry with `failed` set: not retried for a few seconds.
    private let secondTierListings = Mutex<[String: (locations: Set<String>, until: ContinuousClock.Instant, failed: Bool)]>([:])
    private let listingLoads = SingleFlight<String, Set<String>>()
    /// What index scans read last, so the clip a scan was for is cut without reading it again.
    private let recentSourceBytes = RecentSourceBytes()
    /// Episodes' transcript chunks, for captions (`Transcripts.swift`).
    let transcripts: TranscriptCache
    /// Waveform peaks being read or computed, by peaks key: one computation however many ask (`Peaks.swift`).
    let peakLoads = SingleFlight<ClipKey, [UInt8]>()
    let threads: NIOThreadPool
    let logger: Logger
    let metrics: ClipMetrics

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
        storeWrites = StoreWrites(store: store, logger: logger, metrics: metrics)
        transcripts = TranscriptCache(ttl: .seconds(configuration.catalogTTLs))
    }

    /// Runs blocking work (LMDB writes, libavformat, libmongoc, libcurl, file I/O) off the event loop.
    func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await threads.runIfActive(work)
    }

    // MARK: - The flow

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
        let episode = try await resolve(request.episodeId)
        listSecondTierAhead(episode)
        let sourceIdentity = sources.identity(of: episode)
        let window = ClipPlan.Request(startMs: request.startMs, durationMs: request.durationMs)
        // A VBR source is indexed only as far as the clips asked for so far; a clip beyond that
        // extends the index first (bounded: an index extended to the end plans or says 422).
        let coveringMs = request.startMs.addingReportingOverflow(request.durationMs).overflow ? Int64.max : request.startMs + request.durationMs
        var index = try await frameIndex(of: episode, identity: sourceIdentity, coveringMs: coveringMs)
        let plan: ClipPlan
        while true {
            do {
                plan = try ClipPlan.plan(index, window)
                break
            } catch let short as FrameIndexTooShort where !index.isComplete {
                let before = index.frameCount
                index = try await extendFrameIndex(index, of: episode, identity: sourceIdentity, coveringMs: short.neededMs)
                if !index.isComplete && index.frameCount == before && index.coveredMs >= short.neededMs {
                    // It covers what the plan asked for, did not grow, and the plan still wants
                    // more: never loop on that; index to the end (then it plans or says 422).
                    index = try await extendFrameIndex(index, of: episode, identity: sourceIdentity, coveringMs: nil)
                }
            }
        }
        let key = ClipKey(identity: "clipproxy|\(sourceIdentity)|\(plan.identity)")
        let clip = PreparedClip(request: request, episode: episode, plan: plan, key: key, sourceIdentity: sourceIdentity)
        preparedClips.withLock { cache in
            if cache.count >= Self.preparedClipLimit { cache.removeAll(keepingCapacity: true) }
            cache[request] = (clip, now + .seconds(60))
        }
        return clip
    }

    /// When the clip was first cut on this node: now, or when a part of it was first answered
    /// from the source a little earlier. A clip is one representation, so the Last-Modified of a
    /// browser's first probe (`Range: bytes=0-1`, then the whole clip) must not move: a client
    /// revalidating with it gets 304, and If-Range with it gets 206. Kept a few minutes.
    private func firstCut(of clip: PreparedClip) -> Int64 {
        firstCuts.withLock { $0.time(of: clip.key, now: ClipStore.nowMs()) }
    }
    private let firstCuts = Mutex(FirstCuts())

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
            let whole = try await open(clip)
            return Answer(clip: clip, body: whole, decision: ByteRangeResponse.decide(conditions, for: clip.representation(createdMs: whole.createdMs)))
        }
        var answer = Answer(clip: clip, body: body, decision: decision)
        if let range = decision.parts.lazy.compactMap({ if case .bytes(let r) = $0 { r } else { nil } }).first {
            answer.partBytes = try await blocking { try part.read(range) }
        }
        return answer
    }

    /// A part is read from the bytes behind it only for a single range that is not the whole
    /// clip (a browser seeking, a CDN slicing). Several ranges would each be their own uncached
    /// read, every time: they are answered from a fill that caches the clip and takes a fill slot
    /// like any other.
    static func worthAPart(_ decision: ByteRangeResponse, of length: Int64) -> Bool {
        let ranges = decision.parts.compactMap { if case .bytes(let r) = $0 { r } else { nil } }
        return ranges.count <= 1 && ranges.allSatisfy { $0.count < length }
    }

    /// The cheapest tier that has the clip: local store, a running fill, the clip directory or
    /// bucket, else a new fill from the source, shared by every request for the key. Returns
    /// once the bytes are assured (see the type's note).
    func open(_ clip: PreparedClip) async throws -> ClipBody {
        // A claim loses only to a fill that registered or committed a moment earlier; the next
        // turn finds it. Bounded, so a record whose file vanished cannot spin.
        for _ in 0..<3 {
            if let warm = try await openWarm(clip) { return warm }
            guard let fill = try await claim(clip) else { continue }
            // The fill is registered before the second tier is asked, so concurrent requests for
            // a cold clip make one second-tier lookup, not one each.
            let stored = await findInSecondTier(clip)
            startFill(clip, fill, from: stored)
            try await fill.waitUntilStarted()
            return .filling(fill, tier: stored == nil ? .fill : .l2)
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
        return .part(PartSource(plan: clip.plan, bytes: .source(try openSource(clip)), createdMs: firstCut(of: clip)))
    }

    /// The clip's copy in the second tier. A second tier that cannot answer is logged and treated
    /// as not having it: the source can always make the clip, so an S3 clip-bucket outage costs
    /// cuts, not failed requests. A clip missing from the episode's listing is absent without
    /// a request (a copy another node stored since the listing is cut once more: rare behind
    /// consistent hashing, and it costs one clip's source bytes).
    private func findInSecondTier(_ clip: PreparedClip) async -> StoredClip? {
        guard let secondTier else { return nil }
        if let prefix = ClipKeyTemplate.episodePrefix(configuration.s3ClipKeyTemplate, episode: clip.episode),
           let listed = await secondTierListing(prefix), !listed.contains(secondTier.location(clip)) {
            return nil
        }
        do {
            return try await blocking { try secondTier.find(clip) }
        } catch {
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("second tier lookup failed; cutting from the source", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
            return nil
        }
    }

    /// The local store or a running fill, if either has the clip. The lookup is a read
    /// transaction and an open done inline (a thread hop per hit cost more than both); a due
    /// batch of access times is written on the blocking pool.
    /// The clip `prepare` made for this request within the last minute, if any: no catalog,
    /// index or hash work. (The fast path answers only from these.)
    func recentlyPrepared(_ request: ClipRequest) -> PreparedClip? {
        guard let recent = preparedClips.withLock({ $0[request] }), ContinuousClock.now < recent.until else { return nil }
        return recent.clip
    }

    /// The clip's local copy, leased, if the store has it whole: a read transaction and an open,
    /// never a wait. Writes it defers (access times, dropping a record without its file) run on
    /// the blocking pool.
    func storedLease(_ clip: PreparedClip) throws -> ClipStore.Lease? {
        if let lease = try store.lookup(clip.key, deferFlush: true) {
            if store.recencyFlushDue {
                Task.detached { [self] in try? await blocking { [store] in try store.flushRecency() } }
            }
            return lease
        }
        if store.hasStaleRecords {
            Task.detached { [self] in _ = try? await blocking { [storeWrites, store] in storeWrites.attempt("index") { try store.dropStaleRecords() } } }
        }
        return nil
    }

    private func openWarm(_ clip: PreparedClip) async throws -> ClipBody? {
        if let lease = try storedLease(clip) { return .stored(lease, tier: .l1) }
        if let running = await fills.join(clip.key) {
            try await running.waitUntilStarted()
            return .filling(running, tier: .coalesced)
        }
        return nil
    }

    /// Starts listing the episode's folder in the second tier, if no listing is current, while
    /// the rest of `prepare` runs: a first miss then waits on it only if it takes longer.
    private func listSecondTierAhead(_ episode: ResolvedEpisode) {
        guard secondTier != nil, let prefix = ClipKeyTemplate.episodePrefix(configuration.s3ClipKeyTemplate, episode: episode),
              secondTierListings.withLock({ $0[prefix].map { ContinuousClock.now >= $0.until } ?? true }) else { return }
        Task.detached { [self] in _ = await secondTierListing(prefix) }
    }

    /// The locations under `prefix` in the second tier, listed at most once per `catalog.ttl_s`
    /// however many ask; nil when the listing failed (then each miss asks for its clip).
    private func secondTierListing(_ prefix: String) async -> Set<String>? {
        if let current = secondTierListings.withLock({ $0[prefix] }), ContinuousClock.now < current.until {
            return current.failed ? nil : current.locations
        }
        guard let secondTier else { return nil }
        do {
            let locations = try await listingLoads.run(prefix) { [self] in
                let listed = Set(try await blocking { try secondTier.locations(under: prefix) })
                secondTierListings.withLock { listings in
                    listings[prefix] = (listed, ContinuousClock.now + .seconds(configuration.catalogTTLs), false)
                }
                return listed
            }
            return locations
        } catch {
            secondTierListings.withLock { $0[prefix] = ([], ContinuousClock.now + .seconds(5), true) }
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("second tier listing failed; asking it per clip", metadata: ["clip_tier.prefix": "\(prefix)", "error": "\(error)"])
            return nil
        }
    }

    /// Keeps a current listing true after this node stored a clip in the second tier (or purged it).
    private func noteSecondTier(_ clip: PreparedClip, stored: Bool) {
        guard let secondTier, let prefix = ClipKeyTemplate.episodePrefix(configuration.s3ClipKeyTemplate, episode: clip.episode) else { return }
        let location = secondTier.location(clip)
        secondTierListings.withLock { listings in
            guard listings[prefix]?.failed == false else { return }
            if stored { listings[prefix]?.locations.insert(location) } else { listings[prefix]?.locations.remove(location) }
        }
    }

    // MARK: - Resolution and indexing (cached in LMDB)

    /// The episode's source, from the index while the resolution is younger than `catalog.ttl_s`,
    /// else from the catalog. Past the TTL a catalog that cannot answer leaves the last
    /// resolution in use (stale-if-error) until it answers again; while it is down, requests
    /// do not wait for it: the refresh runs in the background.
    func resolve(_ episodeId: String) async throws -> ResolvedEpisode {
        // An LMDB read transaction (microseconds, no I/O once mapped): cheaper inline than a thread hop.
        let cached = try store.episode(episodeId)
        if let cached, cached.expiresMs > ClipStore.nowMs() { return cached.resolved(episodeId) }
        if let cached, let retryNow = staleEpisodes.withLock({ stale -> Bool? in
            guard let last = stale[episodeId] else { return nil }
            let now = ContinuousClock.now
            guard now - last >= .seconds(1) else { return false }
            stale[episodeId] = now
            return true
        }) {
            metrics.catalogStale.increment()
            if retryNow { Task.detached { [self] in _ = try? await refreshResolution(episodeId) } }
            return cached.resolved(episodeId)
        }
        do {
            return try await refreshResolution(episodeId)
        } catch where cached != nil && Self.isOutage(error) {
            metrics.catalogStale.increment()
            logger.warning("catalog unavailable; serving the last known resolution",
                           metadata: ["episode.id": "\(episodeId)", "error": "\(error)"])
            return cached!.resolved(episodeId)
        }
    }

    /// Asks the catalog and the source listing (once, however many ask at the same time) and
    /// records the answer for `catalog.ttl_s`.
    private func refreshResolution(_ episodeId: String) async throws -> ResolvedEpisode {
        do {
            let resolved = try await resolutions.run(episodeId) { [self] in
                try await blocking { [locator] in try locator.resolve(episodeId) }
            }
            if !resolved.alsoMatched.isEmpty {
                logger.warning("several source objects match; using the greatest key",
                               metadata: ["episode.id": "\(episodeId)", "source.key": "\(resolved.sourceKey)", "source.others": "\(resolved.alsoMatched)"])
            }
            let record = EpisodeRecord(guid: resolved.guid, feedSlug: resolved.feedSlug, sourceKey: resolved.sourceKey, etag: resolved.etag,
                                       size: resolved.size, expiresMs: ClipStore.nowMs() + Int64(configuration.catalogTTLs) * 1000)
            _ = try? await blocking { [storeWrites, store] in storeWrites.attempt("episode") { try store.putEpisode(episodeId, record) } }
            if staleEpisodes.withLock({ $0.removeValue(forKey: episodeId) }) != nil {
                logger.info("catalog answered again; resolution refreshed", metadata: ["episode.id": "\(episodeId)"])
            }
            return resolved
        } catch where Self.isOutage(error) {
            staleEpisodes.withLock { $0[episodeId] = ContinuousClock.now }
            throw error
        }
    }

    /// A failure of the catalog or the source listing to answer at all (as opposed to an
    /// answer: not found, bad data).
    static func isOutage(_ error: any Error) -> Bool {
        switch error {
        case CatalogError.unavailable: true
        case let error as S3Error: error.kind == .transport || error.kind == .serverError || error.kind == .throttled
        default: false
        }
    }

    /// Drops everything derived from an episode's source: resolution, frame index, prepared
    /// clips, transcript. The next request resolves and indexes it again. Clips stay (their keys name the
    /// old source's ETag, so they are never served for the new one; `purge` removes them).
    func forget(_ episodeId: String) async {
        preparedClips.withLock { cache in cache = cache.filter { $0.key.episodeId != episodeId } }
        let record = (try? store.episode(episodeId)).flatMap { $0 }
        transcripts.forget(record?.guid ?? episodeId)
        let identity = record.map { sources.identity(of: $0.resolved(episodeId)) }
        if let identity { decodedIndexes.withLock { _ = $0.removeValue(forKey: identity) } }
        _ = try? await blocking { [store] in
            try store.deleteEpisode(episodeId)
            if let identity { try store.deleteFrameIndex(source: identity) }
        }
    }

    /// The source's frame index: from memory, the local index, the second tier (indexed by
    /// another node), or by probing the source, in that order of cost. A probe of a VBR source
    /// scans only as far as `coveringMs` (a partial index, extended when a later clip needs more).
    /// Concurrent first requests for one episode share one load.
    func frameIndex(of episode: ResolvedEpisode, identity: String, coveringMs: Int64? = nil) async throws -> FrameIndex {
        if let cached = decodedIndexes.withLock({ $0[identity] }) { return cached }
        return try await indexLoads.run(identity) { [self] in
            if let cached = decodedIndexes.withLock({ $0[identity] }) { return cached }  // loaded while this waited
            return try await loadFrameIndex(of: episode, identity: identity, coveringMs: coveringMs)
        }
    }

    private func loadFrameIndex(of episode: ResolvedEpisode, identity: String, coveringMs: Int64?) async throws -> FrameIndex {
        let stored = try await blocking { [store] in try store.frameIndex(source: identity) }.flatMap { try? FrameIndex(serialized: $0) }
        if let stored, stored.isComplete { return remember(stored, identity: identity, keep: false, share: false) }
        // Another node's index may reach further than this node's partial one.
        if let shared = await sharedFrameIndex(identity), Self.reachesFurther(shared, than: stored) {
            return remember(shared, identity: identity, keep: true, share: false)
        }
        if let stored { return remember(stored, identity: identity, keep: false, share: false) }
        let source = recentSourceBytes.recording(try sources.open(episode))
        let index = try await blocking { try SourceDescription.probe(source, coveringMs: coveringMs) }.1
        // Only a scan ends on the clip's bytes; a constant-bitrate model reads a few scattered kB.
        if !index.isConstantBitrate { recentSourceBytes.keep(source, identity: identity) }
        return remember(index, identity: identity, keep: true, share: true)
    }

    /// Extends a partial index to cover `coveringMs` (nil: to the end), one extension per source
    /// at a time; a request whose clip a concurrent extension already covers waits for it.
    private func extendFrameIndex(_ index: FrameIndex, of episode: ResolvedEpisode, identity: String, coveringMs: Int64?) async throws -> FrameIndex {
        try await indexLoads.run(identity) { [self] in
            let current = decodedIndexes.withLock({ $0[identity] }).flatMap { Self.reachesFurther($0, than: index) ? $0 : nil } ?? index
            if current.isComplete || coveringMs.map({ current.coveredMs >= $0 }) == true { return current }
            let source = recentSourceBytes.recording(try sources.open(episode))
            let extended = try await blocking { try FrameIndexBuilder.extend(current, source: source, coveringMs: coveringMs) }
            recentSourceBytes.keep(source, identity: identity)
            logger.info("frame index extended", metadata: ["source": "\(identity)", "index.covered_ms": "\(extended.coveredMs)",
                                                           "index.complete": "\(extended.isComplete)"])
            return remember(extended, identity: identity, keep: true, share: true)
        }
    }

    /// True when `index` covers more of the source than `other` (or `other` is nil).
    static func reachesFurther(_ index: FrameIndex, than other: FrameIndex?) -> Bool {
        guard let other else { return true }
        return !other.isComplete && (index.isComplete || index.frameCount > other.frameCount)
    }

    /// Makes `index` the one in use for `identity`; `keep` stores it in the local index and
    /// `share` publishes it to the second tier (both in the background, best effort). Partial
    /// indexes are shared too, so a node new to an episode plans its early clips without a scan.
    private func remember(_ index: FrameIndex, identity: String, keep: Bool, share: Bool) -> FrameIndex {
        decodedIndexes.withLock { cache in
            // Bounded: dropping everything now and then is cheaper than tracking recency here.
            if cache.count >= Self.decodedIndexLimit { cache.removeAll(keepingCapacity: true) }
            if Self.reachesFurther(index, than: cache[identity]) { cache[identity] = index }
        }
        if keep || share {
            let bytes = index.serialized()
            if keep { keepFrameIndex(index, bytes, identity: identity) }
            if share { shareFrameIndex(bytes, identity: identity) }
        }
        return index
    }

    /// Stores a frame index in the local index, best effort (a full disk costs a re-index later).
    /// Never over a longer one: extensions are stored in the background and may land out of order.
    private func keepFrameIndex(_ index: FrameIndex, _ bytes: [UInt8], identity: String) {
        Task.detached { [self] in
            _ = try? await blocking { [storeWrites, store] in
                storeWrites.attempt("frame index") {
                    let old = try store.frameIndex(source: identity).flatMap { try? FrameIndex(serialized: $0) }
                    if Self.reachesFurther(index, than: old) { try store.putFrameIndex(source: identity, bytes) }
                }
            }
        }
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

    /// A new fill for `clip`, registered (so every other request for the key joins it from now
    /// on), then a fill slot, waiting in the queue if all are busy. nil when another request's
    /// fill is running or has just been stored (the caller looks again). The slot is released
    /// when the fill ends (`startFill`).
    private func claim(_ clip: PreparedClip) async throws -> Fill? {
        let fill = Fill(key: clip.key, length: clip.plan.byteCount, createdMs: firstCut(of: clip))
        switch await fills.claim(fill, isStored: { [store] in (try? store.contains(clip.key)) ?? false }) {
        case .mine:
            break
        case .running, .stored:
            return nil
        }
        do { try await slots.acquire() } catch {
            metrics.overloaded.increment()
            logger.warning("fill refused: all fill slots busy and the queue full or too slow",
                           metadata: ["clip.key": "\(clip.key)", "limits.max_fills": "\(configuration.limitsMaxFills)"])
            await end(fill, error: error, holdsSlot: false)
            throw error
        }
        return fill
    }

    /// Ends a fill, whatever its outcome: readers learn it, later requests stop joining it (they
    /// find the stored clip or start anew), its fill slot is free.
    private func end(_ fill: Fill, error: (any Error)?, holdsSlot: Bool = true) async {
        fill.finish(error)
        await fills.remove(fill)
        if holdsSlot { await slots.release() }
    }

    /// Makes the clip in the background: from the second tier's copy when there is one (and, if
    /// that read fails, the rest from the source), else from the source. Clients read the fill
    /// from memory as it grows; the local store gets its copy when the clip is whole. The fill
    /// belongs to the cache, not to a request: it finishes even if every client leaves.
    private func startFill(_ clip: PreparedClip, _ fill: Fill, from stored: StoredClip?) {
        if let createdMs = stored?.createdMs { fill.createdMs = createdMs }
        let local = LocalCopy(store: store, key: clip.key, createdMs: fill.createdMs)
        logger.info(stored == nil ? "fill started" : "local copy from the second tier started",
                    metadata: ["clip.key": "\(clip.key)", "episode.id": "\(clip.request.episodeId)",
                               "source.range": "\(clip.plan.readRange)", "clip.bytes": "\(clip.plan.byteCount)"])
        Task.detached { [self] in
            let started = ContinuousClock.now
            do {
                try await blocking { [self] in
                    try produce(clip, from: stored, fill: fill) { bytes in
                        try fill.append(bytes)
                        local.write(bytes, of: fill)
                    }
                }
                guard fill.bytesWritten == clip.plan.byteCount else {
                    throw FillError.incomplete(written: fill.bytesWritten, expected: clip.plan.byteCount)
                }
            } catch {
                local.abort()
                await end(fill, error: error)
                metrics.fillFailures.increment()
                metrics.upstreamErrors[stored == nil ? "source" : "clip_tier"]?.increment()
                logger.error("fill failed; nothing cached", metadata: ["clip.key": "\(clip.key)", "error": "\(error)",
                                                                       "fill.answered": "\(fill.hasStarted)"])
                return
            }
            // Readers have every byte already (`append` woke them); the fill ends once the local
            // store has kept the clip or given up, so `waitUntilFinished` means settled.
            let kept = await keep(clip, local, location: stored == nil ? nil : secondTier?.location(clip))
            // Ended only once stored (or given up): a request in between joins this fill.
            await end(fill, error: nil)
            let elapsed = ContinuousClock.now - started
            if stored == nil {
                metrics.fillDuration.record(duration: elapsed)
                // How long the source took to answer, as this node saw it (the upstream's own
                // time to first byte plus the network): what a client's wait is measured against.
                let sourceWait = fill.startedAt.map { String(format: "%.3f", Double(($0 - started).components.attoseconds) / 1e15
                                                                + Double(($0 - started).components.seconds) * 1000) } ?? "-"
                logger.info("fill finished", metadata: ["clip.key": "\(clip.key)", "fill.ms": "\(elapsed.wholeMilliseconds)", "cache.kept": "\(kept)",
                                                        "source.first_byte_ms": "\(sourceWait)"])
            } else {
                logger.info("local copy from the second tier finished", metadata: ["clip.key": "\(clip.key)", "cache.kept": "\(kept)"])
            }
            if stored == nil { await copyToSecondTier(clip, kept ? nil : fill) }
        }
    }

    /// Emits the whole clip into `emit`, announcing the fill started when its upstream answers.
    /// The clip writer emits a frame at a time (a few hundred bytes); they are handed on in
    /// batches, once per source chunk or 64 KiB, so the local copy, the readers' wake-ups and
    /// their socket writes come per batch, not per frame. Blocking.
    private func produce(_ clip: PreparedClip, from stored: StoredClip?, fill: Fill,
                         emit: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        let answered: @Sendable () -> Void = { fill.markStarted() }
        let batch = EmitBatch(emit)
        defer { batch.discard() }
        if let stored {
            do {
                try AnnouncingSource(base: stored.bytes, onFirstBytes: answered).stream(0..<clip.plan.byteCount) { chunk in
                    try batch.add(chunk)
                    try batch.flush()
                }
                return
            } catch {
                try batch.flush()  // the bytes before the failure are the clip's: keep them
                // The copy is the same bytes the source makes: carry on from where it stopped.
                metrics.upstreamErrors["clip_tier"]?.increment()
                logger.warning("second tier copy failed; cutting the rest from the source",
                               metadata: ["clip.key": "\(clip.key)", "clip.offset": "\(fill.bytesWritten)", "error": "\(error)"])
            }
            let source = AnnouncingSource(base: try openSource(clip), onFirstBytes: answered)
            try Trimmer.write(clip.plan, range: fill.bytesWritten..<clip.plan.byteCount, from: batch.flushingAfterEachChunk(source), emit: batch.add)
        } else {
            let source = AnnouncingSource(base: try openSource(clip), onFirstBytes: answered)
            try Trimmer.write(clip.plan, from: batch.flushingAfterEachChunk(source), emit: batch.add)
        }
        try batch.flush()
    }

    /// The clip's source, its bytes taken from a scan that just read them where it can.
    private func openSource(_ clip: PreparedClip) throws -> any ByteSource {
        recentSourceBytes.source(try sources.open(clip.episode), identity: clip.sourceIdentity)
    }

    /// Commits a finished fill's local copy, or counts why it could not be kept. True when stored.
    private func keep(_ clip: PreparedClip, _ local: LocalCopy, location: String?) async -> Bool {
        let room = 4 * clip.plan.byteCount
        guard local.failure == nil, let blob = local.blob else {
            let failure = local.failure ?? FillError.notStored
            _ = try? await blocking { [storeWrites] in storeWrites.bypassed("clip", failure, roomFor: room) }
            return false
        }
        return (try? await blocking { [storeWrites, store] in
            storeWrites.attempt("clip", roomFor: room) {
                try store.commit(blob, secondTierLocation: location, episodeId: clip.request.episodeId)
            }
        }) ?? false
    }

    /// After a fill: copy the clip to the second tier in the background; failures are logged
    /// (the clip is still served from L1 and is copied again when the JSON API asks for it).
    private func copyToSecondTier(_ clip: PreparedClip, _ unkept: Fill?) async {
        do {
            try await uploadToSecondTier(clip, unkept: unkept)
            logger.info("second tier copy finished", metadata: ["clip.key": "\(clip.key)"])
        } catch {
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("could not copy the clip to the second tier", metadata: ["clip.key": "\(clip.key)", "error": "\(error)"])
        }
    }

    /// Uploads the clip to the second tier once, however many callers ask at the same time:
    /// the local store's copy (returns at once if the index says it is there already), or the
    /// bytes of a finished fill the local store could not keep.
    func uploadToSecondTier(_ clip: PreparedClip, unkept: Fill? = nil) async throws {
        guard let secondTier else { return }
        try await uploads.run(clip.key) { [self] in
            try await blocking { [store, storeWrites] in
                guard let lease = try store.lookup(clip.key) else {
                    guard let unkept else { throw FillError.notStored }
                    return try secondTier.store(clip, contents: .bytes(unkept.contents), createdMs: unkept.createdMs)
                }
                defer { lease.release() }
                if lease.record.secondTierLocation == secondTier.location(clip) { return }
                // Through the lease's descriptor: the file may be evicted during the upload.
                try secondTier.store(clip, contents: .file("/proc/self/fd/\(lease.descriptor)"), createdMs: lease.record.createdMs)
                storeWrites.attempt("second tier location") { try store.setSecondTierLocation(clip.key, secondTier.location(clip)) }
            }
            noteSecondTier(clip, stored: true)
        }
    }

    /// Makes sure the clip is in the second tier (the S3 clip bucket), cutting it if needed and
    /// sharing the work with `/clips` requests for it. Returns whether it existed before the call,
    /// in the local store or the second tier.
    func ensureInSecondTier(_ clip: PreparedClip) async throws -> Bool {
        if let lease = try await blocking({ [store] in try store.lookup(clip.key) }) {
            let uploaded = secondTier == nil || lease.record.secondTierLocation == secondTier?.location(clip)
            lease.release()
            if !uploaded { try await uploadToSecondTier(clip) }
            return true
        }
        // Found in the second tier: the URL can point there; no need to copy it here too.
        if await findInSecondTier(clip) != nil { return true }
        // (`open` asks the second tier again: a set lookup in the episode's listing, or a HEAD
        // when that listing failed; a fill started meanwhile by a /clips request is joined.)
        let body = try await open(clip)
        if case .filling(let fill, _) = body {
            try await fill.waitUntilFinished()
            try await uploadToSecondTier(clip, unkept: fill)
        } else {
            body.release()
            try await uploadToSecondTier(clip)
        }
        return false
    }

    // MARK: - Purge

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
        let episode: ResolvedEpisode
        if let known = try store.episode(episodeId) { episode = known.resolved(episodeId) } else { episode = try await resolve(episodeId) }
        await forget(episodeId)
        let removed = try await blocking { [store] in try store.purge(episodeId: episodeId) }
        var report = PurgeReport(clipsRemoved: removed.count)
        if includeSecondTier, let secondTier {
            let prefix = ClipKeyTemplate.episodePrefix(configuration.s3ClipKeyTemplate, episode: episode)
            if let prefix { secondTierListings.withLock { _ = $0.removeValue(forKey: prefix) } }
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

extension EpisodeRecord {
    func resolved(_ episodeId: String) -> ResolvedEpisode {
        ResolvedEpisode(episodeId: episodeId, guid: guid, feedSlug: feedSlug, sourceKey: sourceKey, etag: etag, size: size, alsoMatched: [])
    }
}

enum ServiceError: Error, CustomStringConvertible {
    case overloaded
    var description: String { "too many clips are being cut right now; retry in a second" }
}
