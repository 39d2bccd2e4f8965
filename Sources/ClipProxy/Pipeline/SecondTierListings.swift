import Logging
import Upstream
import Synchronization

/// What the second tier holds under each episode's folder, listed once per `catalog.ttl_s` (plus
/// this node's own uploads and purges), so a miss does not ask the clip bucket before it cuts.
/// A listing that failed is remembered for a few seconds, during which each miss asks for its clip.
final class SecondTierListings: PipelinePart, Sendable {
    let shared: PipelineShared
    let tier: any ClipTier
    /// `s3.clip_key_template`: what it puts before `{start_ms}` is an episode's folder.
    let keyTemplate: String
    let ttl: Duration
    private let listings = Mutex<[String: (locations: Set<String>, until: ContinuousClock.Instant, failed: Bool)]>([:])
    private let loads = SingleFlight<String, Set<String>>()
    static let retryFailedAfter: Duration = .seconds(5)
    /// Episode folders whose listing (or failure) is held in memory now, current or not.
    var heldCount: Int { listings.withLock { $0.count } }

    init(_ shared: PipelineShared, tier: any ClipTier, keyTemplate: String, ttl: Duration) {
        self.shared = shared
        self.tier = tier
        self.keyTemplate = keyTemplate
        self.ttl = ttl
    }

    /// The episode's folder in the second tier; nil when the key template gives it none.
    func folder(of episode: ResolvedEpisode) -> String? { ClipKeyTemplate.episodePrefix(keyTemplate, episode: episode) }

    /// Whether the second tier may hold `clip`: false when a current listing of its folder
    /// lacks it (no request needed), true when it lists it or nothing is known.
    func mayHold(_ clip: PreparedClip) async -> Bool {
        guard let folder = folder(of: clip.episode), let listed = await locations(under: folder) else { return true }
        return listed.contains(tier.location(clip))
    }

    /// Starts listing the episode's folder, if no listing is current, while the caller goes on:
    /// a first miss then waits on it only if it takes longer than the rest of the preparation.
    func listAhead(_ episode: ResolvedEpisode) {
        guard let prefix = folder(of: episode), listings.withLock({ $0[prefix].map { ContinuousClock.now >= $0.until } ?? true }) else { return }
        background.start("second tier listing") { [self] in _ = await locations(under: prefix) }
    }

    /// The locations under `prefix`, listed at most once per TTL however many ask; nil when the
    /// listing failed (then each miss asks for its clip).
    func locations(under prefix: String) async -> Set<String>? {
        if let current = listings.withLock({ $0[prefix] }), ContinuousClock.now < current.until {
            return current.failed ? nil : current.locations
        }
        do {
            return try await loads.run(prefix) { [self] in
                let listed = Set(try await blocking { [tier] in try tier.locations(under: prefix) })
                listings.withLock { $0[prefix] = (listed, ContinuousClock.now + ttl, false) }
                return listed
            }
        } catch {
            listings.withLock { $0[prefix] = ([], ContinuousClock.now + Self.retryFailedAfter, true) }
            metrics.upstreamErrors["clip_tier"]?.increment()
            logger.warning("second tier listing failed; asking it per clip", metadata: ["clip_tier.prefix": "\(prefix)", "error": "\(error)"])
            return nil
        }
    }

    /// Keeps a current listing true after this node stored `clip` in the second tier.
    func noteStored(_ clip: PreparedClip) {
        guard let prefix = folder(of: clip.episode) else { return }
        let location = tier.location(clip)
        listings.withLock { listings in
            guard listings[prefix]?.failed == false else { return }
            listings[prefix]?.locations.insert(location)
        }
    }

    /// Forgets the listing of `prefix` (a purge): the next miss lists it again.
    func drop(_ prefix: String) {
        listings.withLock { _ = $0.removeValue(forKey: prefix) }
    }
}
