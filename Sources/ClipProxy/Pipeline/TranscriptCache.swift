import Synchronization
import Upstream

/// Episodes' transcript chunks by guid, kept in memory like resolutions are kept in the index:
/// fresh for `catalog.ttl_s`, then asked again, with the last answer still at hand for when the
/// catalog cannot answer (stale-if-error). Bounded like the pipeline's other memory caches.
final class TranscriptCache: Sendable {
    struct Entry: Sendable {
        let chunks: [TranscriptChunk]
        let freshUntil: ContinuousClock.Instant
        var isFresh: Bool { ContinuousClock.now < freshUntil }
    }

    static let limit = 1024  // a typical episode's chunks are a few kB of text
    let ttl: Duration
    private let entries = Mutex<[String: Entry]>([:])
    /// Catalog lookups in progress, by guid: a burst of first requests for one episode asks once.
    let loads = SingleFlight<String, [TranscriptChunk]>()

    init(ttl: Duration) { self.ttl = ttl }

    /// The last answer for `guid`, fresh or not.
    func entry(_ guid: String) -> Entry? { entries.withLock { $0[guid] } }

    func keep(_ chunks: [TranscriptChunk], guid: String) {
        let entry = Entry(chunks: chunks, freshUntil: ContinuousClock.now + ttl)
        entries.withLock { cache in
            // Dropping everything now and then is cheaper than tracking recency here.
            if cache.count >= Self.limit && cache[guid] == nil { cache.removeAll(keepingCapacity: true) }
            cache[guid] = entry
        }
    }

    func forget(_ guid: String) { _ = entries.withLock { $0.removeValue(forKey: guid) } }
}
