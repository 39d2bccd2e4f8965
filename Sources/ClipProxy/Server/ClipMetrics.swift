import Metrics
import Prometheus

/// Every metric clipproxy exports, created once (after `bootstrap`) with few fixed label values.
struct ClipMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let tierCounters: [ClipBody.Tier: Metrics.Counter]
    let responses: [String: Metrics.Counter]
    let bytesServed: Metrics.Counter
    let fillDuration: Metrics.Timer
    let fillFailures: Metrics.Counter
    /// Cold clips refused because every fill slot was busy and the queue full or too slow.
    let overloaded: Metrics.Counter
    let upstreamErrors: [String: Metrics.Counter]

    /// Routes swift-metrics to a Prometheus registry; call once per process.
    static func bootstrap() -> ClipMetrics {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let tiers: [ClipBody.Tier] = [.l1, .l2, .fill, .coalesced, .part]
        return ClipMetrics(
            registry: registry,
            tierCounters: Dictionary(uniqueKeysWithValues: tiers.map { ($0, Metrics.Counter(label: "clipproxy_clip_requests_total", dimensions: [("tier", $0.rawValue)])) }),
            responses: Dictionary(uniqueKeysWithValues: ["2xx", "3xx", "4xx", "5xx"].map { ($0, Metrics.Counter(label: "clipproxy_responses_total", dimensions: [("class", $0)])) }),
            bytesServed: Metrics.Counter(label: "clipproxy_bytes_served_total"),
            fillDuration: Metrics.Timer(label: "clipproxy_fill_duration_seconds"),
            fillFailures: Metrics.Counter(label: "clipproxy_fill_failures_total"),
            overloaded: Metrics.Counter(label: "clipproxy_fills_refused_total"),
            upstreamErrors: Dictionary(uniqueKeysWithValues: ["catalog", "source", "clip_tier"].map {
                ($0, Metrics.Counter(label: "clipproxy_upstream_errors_total", dimensions: [("upstream", $0)]))
            }))
    }

    func response(status: Int) {
        responses["\(min(5, max(2, status / 100)))xx"]?.increment()
    }

    /// Prometheus text exposition of everything recorded so far.
    func exposition() -> String { registry.emitToString() }
}
