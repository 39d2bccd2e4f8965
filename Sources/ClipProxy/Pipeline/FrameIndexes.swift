import Index
import Logging
import Synchronization
import Trim
import Upstream

/// Each source's frame index: from memory, the local index, the second tier (indexed by another
/// node), or by probing the source, in that order of cost. A probe of a VBR source scans only as
/// far as a clip needs (a partial index), and a later clip beyond it extends it. One load or
/// extension runs per source at a time; a new or longer index is kept locally and shared through
/// the second tier in the background, never over a longer one.
final class FrameIndexes: PipelinePart, Sendable {
    let shared: PipelineShared
    let sources: SourceOpener
    let secondTier: (any ClipTier)?
    /// What index scans read last, so the clip a scan was for is cut without reading it again.
    let recentSourceBytes = RecentSourceBytes()
    /// Decoded indexes by source identity (which includes the ETag, so entries never go stale):
    /// a hit must not decode a long episode's index from LMDB on every request.
    private let decoded = Mutex<[String: FrameIndex]>([:])
    static let decodedLimit = 256
    /// Decoded indexes held in memory now.
    var decodedCount: Int { decoded.withLock { $0.count } }
    /// Loads and extensions in progress, by source identity: one at a time per source.
    private let loads = SingleFlight<String, FrameIndex>()

    init(_ shared: PipelineShared, sources: SourceOpener, secondTier: (any ClipTier)?) {
        self.shared = shared
        self.sources = sources
        self.secondTier = secondTier
    }

    /// The index of `episode`'s source, covering at least `coveringMs` when the source needs a
    /// scan (nil: the whole source). Concurrent first requests for one source share one load.
    func index(of episode: ResolvedEpisode, identity: String, coveringMs: Int64?) async throws -> FrameIndex {
        if let cached = decoded.withLock({ $0[identity] }) { return cached }
        return try await loads.run(identity) { [self] in
            if let cached = decoded.withLock({ $0[identity] }) { return cached }  // loaded while this waited
            return try await load(episode, identity: identity, coveringMs: coveringMs)
        }
    }

    /// Extends a partial index to cover `coveringMs` (nil: to the end), one extension per source
    /// at a time; a request whose clip a concurrent extension already covers waits for it.
    func extend(_ index: FrameIndex, of episode: ResolvedEpisode, identity: String, coveringMs: Int64?) async throws -> FrameIndex {
        try await loads.run(identity) { [self] in
            let current = decoded.withLock({ $0[identity] }).flatMap { Self.reachesFurther($0, than: index) ? $0 : nil } ?? index
            if current.isComplete || coveringMs.map({ current.coveredMs >= $0 }) == true { return current }
            let source = recentSourceBytes.recording(try sources.open(episode), identity: identity)
            let extended = try await blocking { try FrameIndexBuilder.extend(current, source: source, coveringMs: coveringMs) }
            recentSourceBytes.keep(source)
            logger.info("frame index extended", metadata: ["source": "\(identity)", "index.covered_ms": "\(extended.coveredMs)",
                                                           "index.complete": "\(extended.isComplete)"])
            return remember(extended, identity: identity, keep: true, share: true)
        }
    }

    /// Drops the index held in memory and in the local index (the source changed, or a purge).
    func forget(identity: String) async {
        decoded.withLock { _ = $0.removeValue(forKey: identity) }
        _ = try? await blocking { [store] in try store.deleteFrameIndex(source: identity) }
    }

    /// The source of a clip, its bytes taken from what index scans just read where they can.
    func openSource(_ episode: ResolvedEpisode, identity: String) throws -> any ByteSource {
        recentSourceBytes.source(try sources.open(episode), identity: identity)
    }

    /// True when `index` covers more of the source than `other` (or `other` is nil).
    static func reachesFurther(_ index: FrameIndex, than other: FrameIndex?) -> Bool {
        guard let other else { return true }
        return !other.isComplete && (index.isComplete || index.frameCount > other.frameCount)
    }

    private func load(_ episode: ResolvedEpisode, identity: String, coveringMs: Int64?) async throws -> FrameIndex {
        let stored = try await blocking { [store] in try store.frameIndex(source: identity) }.flatMap { try? FrameIndex(serialized: $0) }
        if let stored, stored.isComplete { return remember(stored, identity: identity, keep: false, share: false) }
        // Another node's index may reach further than this node's partial one.
        if let shared = await sharedIndex(identity), Self.reachesFurther(shared, than: stored) {
            return remember(shared, identity: identity, keep: true, share: false)
        }
        if let stored { return remember(stored, identity: identity, keep: false, share: false) }
        let source = recentSourceBytes.recording(try sources.open(episode), identity: identity)
        let index = try await blocking { try SourceDescription.probe(source, coveringMs: coveringMs) }.1
        // Only a scan ends on the clip's bytes; a constant-bitrate model reads a few scattered kB.
        if !index.isConstantBitrate { recentSourceBytes.keep(source) }
        return remember(index, identity: identity, keep: true, share: true)
    }

    /// Makes `index` the one in use for `identity`; `keep` stores it in the local index and
    /// `share` publishes it to the second tier (both in the background, best effort). Partial
    /// indexes are shared too, so a node new to an episode plans its early clips without a scan.
    private func remember(_ index: FrameIndex, identity: String, keep: Bool, share: Bool) -> FrameIndex {
        decoded.withLock { cache in
            // Bounded: dropping everything now and then is cheaper than tracking recency here.
            if cache.count >= Self.decodedLimit { cache.removeAll(keepingCapacity: true) }
            if Self.reachesFurther(index, than: cache[identity]) { cache[identity] = index }
        }
        guard keep || share else { return index }
        let bytes = index.serialized()
        if keep {
            // Never over a longer one: extensions are stored in the background and may land out of order.
            background.start("frame index store") { [self] in
                _ = try? await blocking { [storeWrites, store] in
                    storeWrites.attempt("frame index") {
                        let old = try store.frameIndex(source: identity).flatMap { try? FrameIndex(serialized: $0) }
                        if Self.reachesFurther(index, than: old) { try store.putFrameIndex(source: identity, bytes) }
                    }
                }
            }
        }
        if share, let secondTier {
            background.start("frame index share") { [self] in
                do {
                    try await blocking { try secondTier.storeFrameIndex(bytes, source: identity) }
                } catch {
                    metrics.upstreamErrors["clip_tier"]?.increment()
                    logger.warning("could not share the frame index", metadata: ["source": "\(identity)", "error": "\(error)"])
                }
            }
        }
        return index
    }

    /// Another node's index of the same source, if the second tier has one that decodes.
    private func sharedIndex(_ identity: String) async -> FrameIndex? {
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
}
