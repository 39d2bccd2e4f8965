import Foundation
import Prometheus
import Upstream

/// How long S3 and the catalog take to answer, and how S3 requests fail. Upstream keeps no
/// metrics itself: an `S3Client` reports each attempt (`S3AttemptReport`) to `s3Observer`, and the
/// catalog is wrapped in a `TimedCatalog`.
struct UpstreamMetrics: Sendable {
    /// S3 operations as the metrics name them: a GET is for a source or for a stored clip by bucket.
    enum S3Operation: Int, CaseIterable {
        case getSource = 0, getClip, head, put, list, delete

        var label: String { ["get_source", "get_clip", "head", "put", "list", "delete"][rawValue] }
    }

    static let catalogQueries = ["resolve", "transcripts", "episodes", "episode", "search", "ping"]
    /// 1 ms to 10 s, plus 30 s: a source GET streams a whole clip's bytes.
    static let buckets: [Duration] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
        .map { Duration.nanoseconds(Int64($0 * 1e9)) }

    let s3Requests: [DurationHistogram]
    let s3Retries: Counter
    /// By `S3FailureCause` (in `allCases` order).
    let s3Errors: [Counter]
    let catalogQueries: [String: DurationHistogram]
    let catalogErrors: [String: Counter]

    init(registry: PrometheusCollectorRegistry) {
        let requests = MetricNameDescriptor(metricName: "clipproxy_s3_request_duration", unitName: "seconds",
                                            helpText: "S3 requests (each attempt) from signing to the last byte, by operation.")
        s3Requests = S3Operation.allCases.map { registry.makeDurationHistogram(descriptor: requests, labels: [("operation", $0.label)], buckets: Self.buckets) }
        s3Retries = registry.makeCounter(descriptor: .init(metricName: "clipproxy_s3_retries", unitName: "total",
                                                           helpText: "S3 requests that failed and were tried again."))
        let errors = MetricNameDescriptor(metricName: "clipproxy_s3_errors", unitName: "total",
                                          helpText: "S3 requests that failed, by cause (a missing object is not counted).")
        s3Errors = S3FailureCause.allCases.map { registry.makeCounter(descriptor: errors, labels: [("cause", $0.rawValue)]) }
        let queries = MetricNameDescriptor(metricName: "clipproxy_catalog_query_duration", unitName: "seconds",
                                           helpText: "Catalog (MongoDB or files) queries, by query.")
        let queryErrors = MetricNameDescriptor(metricName: "clipproxy_catalog_query_errors", unitName: "total",
                                               helpText: "Catalog queries that failed (not: no such episode), by query.")
        catalogQueries = Dictionary(uniqueKeysWithValues: Self.catalogQueries.map {
            ($0, registry.makeDurationHistogram(descriptor: queries, labels: [("query", $0)], buckets: Self.buckets))
        })
        catalogErrors = Dictionary(uniqueKeysWithValues: Self.catalogQueries.map { ($0, registry.makeCounter(descriptor: queryErrors, labels: [("query", $0)])) })
    }

    /// What an `S3Client` reports to: `sourceBucket` tells a source GET from a clip GET.
    func s3Observer(sourceBucket: String) -> @Sendable (S3AttemptReport) -> Void {
        { [self] report in
            let operation: S3Operation
            switch report.operation {
            case "GetObject": operation = report.bucket == sourceBucket ? .getSource : .getClip
            case "HeadObject", "HeadBucket": operation = .head
            case "PutObject": operation = .put
            case "ListObjectsV2": operation = .list
            case "DeleteObject": operation = .delete
            default: return
            }
            s3Requests[operation.rawValue].record(report.duration)
            if report.retrying { s3Retries.increment() }
            if let cause = report.failure, let index = S3FailureCause.allCases.firstIndex(of: cause) { s3Errors[index].increment() }
        }
    }
}

/// A catalog whose every query is timed and whose failures are counted (`UpstreamMetrics`).
struct TimedCatalog: EpisodeCatalog {
    let catalog: any EpisodeCatalog
    let metrics: UpstreamMetrics

    private func timed<T>(_ query: String, _ work: () throws -> T) throws -> T {
        let started = ContinuousClock.now
        defer { metrics.catalogQueries[query]?.record(ContinuousClock.now - started) }
        do {
            return try work()
        } catch let error as CatalogError {
            if case .notFound = error {} else { metrics.catalogErrors[query]?.increment() }
            throw error
        } catch {
            metrics.catalogErrors[query]?.increment()
            throw error
        }
    }

    func resolve(_ episodeId: String) throws -> CatalogEntry { try timed("resolve") { try catalog.resolve(episodeId) } }
    func transcriptChunks(guid: String) throws -> [TranscriptChunk] { try timed("transcripts") { try catalog.transcriptChunks(guid: guid) } }
    func recentEpisodes(limit: Int) throws -> [EpisodeSummary] { try timed("episodes") { try catalog.recentEpisodes(limit: limit) } }
    func episodeSummary(guid: String) throws -> EpisodeSummary? { try timed("episode") { try catalog.episodeSummary(guid: guid) } }
    func searchTranscripts(_ query: TranscriptQuery, limit: Int) throws -> [TranscriptHit] {
        try timed("search") { try catalog.searchTranscripts(query, limit: limit) }
    }
    func ping() throws { try timed("ping") { try catalog.ping() } }
}
