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
    /// Store writes skipped (the clip was served, not cached), by cause.
    let cacheBypass: [StoreWrites.Reason: Metrics.Counter]
    /// Responses whose body stopped after their headers (a source that died mid-transfer after
    /// every retry): the one way a client can still see a broken transfer.
    let responsesAborted: Metrics.Counter
    /// Requests served from a resolution past `catalog.ttl_s` because the catalog could not answer.
    let catalogStale: Metrics.Counter
    /// Reads that found the source re-uploaded since it was indexed (resolved and indexed again).
    let sourceChanged: Metrics.Counter
    /// Stored clips answered by `StoredClipFastPath` (also counted as l1_hit responses).
    let fastPathAnswers: Metrics.Counter
    /// First-byte and whole-response times by tier or route (`ResponseTimings` records them).
    let latency: ResponseLatencyMetrics
    /// S3 and catalog latency, S3 retries and errors by cause.
    let upstream: UpstreamMetrics
    /// Client connections open on the public port.
    let openConnections: Prometheus.Gauge

    /// Routes swift-metrics to a Prometheus registry; call once per process.
    static func bootstrap() -> ClipMetrics {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        MetricsSystem.bootstrap(factory)
        return ClipMetrics(registry: registry, factory: factory)
    }

    /// Every metric, made by `factory` (which records into `registry`); tests pass their own.
    init(registry: PrometheusCollectorRegistry, factory: any MetricsFactory) {
        func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Metrics.Counter {
            Metrics.Counter(label: label, dimensions: dimensions, factory: factory)
        }
        self.registry = registry
        tierCounters = Dictionary(uniqueKeysWithValues: ClipBody.Tier.allCases.map { ($0, counter("clipproxy_clip_requests_total", [("tier", $0.rawValue)])) })
        responses = Dictionary(uniqueKeysWithValues: ["2xx", "3xx", "4xx", "5xx"].map { ($0, counter("clipproxy_responses_total", [("class", $0)])) })
        bytesServed = counter("clipproxy_bytes_served_total")
        fillDuration = Metrics.Timer(label: "clipproxy_fill_duration_seconds", dimensions: [], factory: factory)
        fillFailures = counter("clipproxy_fill_failures_total")
        overloaded = counter("clipproxy_fills_refused_total")
        upstreamErrors = Dictionary(uniqueKeysWithValues: ["catalog", "source", "clip_tier"].map {
            ($0, counter("clipproxy_upstream_errors_total", [("upstream", $0)]))
        })
        cacheBypass = Dictionary(uniqueKeysWithValues: StoreWrites.Reason.allCases.map {
            ($0, counter("clipproxy_cache_bypass_total", [("reason", $0.rawValue)]))
        })
        responsesAborted = counter("clipproxy_responses_aborted_total")
        catalogStale = counter("clipproxy_catalog_stale_total")
        sourceChanged = counter("clipproxy_source_changed_total")
        fastPathAnswers = counter("clipproxy_fast_path_responses_total")
        latency = ResponseLatencyMetrics(registry: registry)
        upstream = UpstreamMetrics(registry: registry)
        openConnections = registry.makeGauge(descriptor: .init(metricName: "clipproxy_open_connections", unitName: "",
                                                               helpText: "Client connections open on the public port."))
    }

    func response(status: Int) {
        responses["\(min(5, max(2, status / 100)))xx"]?.increment()
    }

    /// Prometheus text exposition of everything recorded so far.
    func exposition() -> String { registry.emitToString() }
}
