import Index
import Logging
import Synchronization
import Upstream

/// Episode id → source object (guid, feed, key, ETag, size), kept in the local index for
/// `catalog.ttl_s`. Past it the catalog and the source listing are asked again; while they cannot
/// answer, the last resolution stays in use (stale-if-error) and requests do not wait for them.
final class EpisodeResolver: PipelinePart, Sendable {
    let shared: PipelineShared
    let locator: SourceLocator
    let ttlSeconds: Int
    /// Catalog lookups in progress, by episode id: a burst for one episode asks once.
    private let lookups = SingleFlight<String, ResolvedEpisode>()
    /// Episodes served from a resolution past its TTL because the catalog could not answer,
    /// with the time of the last attempt to refresh them (at most one a second each).
    private let staleEpisodes = Mutex<[String: ContinuousClock.Instant]>([:])

    init(_ shared: PipelineShared, locator: SourceLocator, ttlSeconds: Int) {
        self.shared = shared
        self.locator = locator
        self.ttlSeconds = ttlSeconds
    }

    /// The episode's source, from the index while the resolution is younger than `catalog.ttl_s`,
    /// else from the catalog. Past the TTL a catalog that cannot answer leaves the last
    /// resolution in use until it answers again; meanwhile the refresh runs in the background.
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
            if retryNow { background.start("catalog refresh") { [self] in _ = try? await refresh(episodeId) } }
            return cached.resolved(episodeId)
        }
        do {
            return try await refresh(episodeId)
        } catch where cached != nil && Self.isOutage(error) {
            metrics.catalogStale.increment()
            logger.warning("catalog unavailable; serving the last known resolution",
                           metadata: ["episode.id": "\(episodeId)", "error": "\(error)"])
            return cached!.resolved(episodeId)
        }
    }

    /// The resolution in the local index, however old; nil when there is none.
    func recorded(_ episodeId: String) -> ResolvedEpisode? {
        (try? store.episode(episodeId))?.map { $0.resolved(episodeId) }
    }

    /// Drops the recorded resolution: the next request asks the catalog.
    func forget(_ episodeId: String) async {
        _ = try? await blocking { [store] in try store.deleteEpisode(episodeId) }
    }

    /// Asks the catalog and the source listing (once, however many ask at the same time) and
    /// records the answer for `catalog.ttl_s`.
    private func refresh(_ episodeId: String) async throws -> ResolvedEpisode {
        do {
            let resolved = try await lookups.run(episodeId) { [self] in
                try await blocking { [locator] in try locator.resolve(episodeId) }
            }
            if !resolved.alsoMatched.isEmpty {
                logger.warning("several source objects match; using the greatest key",
                               metadata: ["episode.id": "\(episodeId)", "source.key": "\(resolved.sourceKey)", "source.others": "\(resolved.alsoMatched)"])
            }
            let record = EpisodeRecord(guid: resolved.guid, feedSlug: resolved.feedSlug, sourceKey: resolved.sourceKey, etag: resolved.etag,
                                       size: resolved.size, expiresMs: ClipStore.nowMs() + Int64(ttlSeconds) * 1000)
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
}

extension EpisodeRecord {
    func resolved(_ episodeId: String) -> ResolvedEpisode {
        ResolvedEpisode(episodeId: episodeId, guid: guid, feedSlug: feedSlug, sourceKey: sourceKey, etag: etag, size: size, alsoMatched: [])
    }
}
