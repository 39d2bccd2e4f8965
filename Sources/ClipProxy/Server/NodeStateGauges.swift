import Foundation
import Index
import Prometheus
import Synchronization
import Upstream

/// What the node holds and how busy it is, read when `/metrics` is scraped, so none of it costs
/// anything on the request path: the local cache against its budget, evictions, fill slots,
/// what is kept in memory, and how long the AWS credentials in use have left.
struct NodeStateGauges: Sendable {
    private let readings: [@Sendable () -> Void]

    init(registry: PrometheusCollectorRegistry, pipeline: ClipPipeline, credentials: RefreshingAWSCredentials?) {
        func gauge(_ name: String, _ help: String, _ read: @escaping @Sendable () -> Double) -> @Sendable () -> Void {
            let gauge = registry.makeGauge(descriptor: .init(metricName: name, unitName: "", helpText: help))
            gauge.set(read())
            return { gauge.set(read()) }
        }
        /// A counter that follows a total kept elsewhere (it only ever grows).
        func counter(_ name: String, _ help: String, _ read: @escaping @Sendable () -> Int64) -> @Sendable () -> Void {
            let counter = registry.makeCounter(descriptor: .init(metricName: name, unitName: "total", helpText: help))
            let seen = Mutex<Int64>(0)
            return {
                let now = read()
                let delta = seen.withLock { last in defer { last = max(last, now) }; return now - last }
                if delta > 0 { counter.increment(by: delta) }
            }
        }
        let store = pipeline.store
        let slots = pipeline.fills.slots
        var readings: [@Sendable () -> Void] = [
            gauge("clipproxy_cache_bytes", "Bytes of clip files in the local store.") { Double(store.storedBytes) },
            gauge("clipproxy_cache_budget_bytes", "The local store's byte budget (cache.max_bytes).") { Double(store.configuration.maxBytes) },
            gauge("clipproxy_cache_clips", "Clips (and peaks) in the local store.") { Double((try? store.stats().clips) ?? 0) },
            counter("clipproxy_cache_evictions", "Clips evicted from the local store (budget or a full disk).") { Int64(store.evictions.clips) },
            counter("clipproxy_cache_evicted_bytes", "Bytes of the clips evicted from the local store.") { store.evictions.bytes },
            gauge("clipproxy_fills_running", "Fills holding a fill slot.") { Double(slots.published.running) },
            gauge("clipproxy_fills_queued", "Cold clips waiting for a fill slot.") { Double(slots.published.waiting) },
            gauge("clipproxy_fill_slots", "Fill slots (limits.max_fills).") { Double(slots.capacity) },
            gauge("clipproxy_frame_indexes_in_memory", "Decoded frame indexes held in memory.") { Double(pipeline.indexes.decodedCount) },
            gauge("clipproxy_prepared_clips_in_memory", "Clips prepared in the last minute (resolution, index and plan) held in memory.") {
                Double(pipeline.preparedCount)
            },
            gauge("clipproxy_second_tier_listings", "Episode folders of the second tier whose listing is held in memory.") {
                Double(pipeline.listings?.heldCount ?? 0)
            },
        ]
        // Exported without S3 too (NaN), so every node has the series its alert and panel read.
        readings.append(gauge("clipproxy_aws_credentials_expires_in_seconds",
                              "Seconds until the AWS credentials in use expire (+Inf: static keys; NaN: none in use yet).") {
            credentials?.secondsUntilExpiry() ?? .nan
        })
        self.readings = readings
    }

    /// Reads everything again; call before each exposition.
    func refresh() { for read in readings { read() } }
}
