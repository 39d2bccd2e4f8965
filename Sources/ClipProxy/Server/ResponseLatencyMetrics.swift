import Foundation
import Prometheus

/// What a listener waited: time to the first byte of the response head and to its last byte,
/// per `/clips` tier and per other timed route, by status class. Every histogram is made once,
/// up front, and picked by array index on the request path (no labels built, no strings formatted).
struct ResponseLatencyMetrics: Sendable {
    /// The tiers of `X-Clip-Tier`, plus `none` for answers without one (errors before the headers).
    static let tiers = ClipBody.Tier.allCases.map(\.rawValue) + ["none"]
    static let statusClasses = ["2xx", "3xx", "4xx", "5xx"]
    /// 0.5 ms to 10 s: a hit from the page cache and a cold fill from a slow source both resolve.
    static let buckets: [Duration] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        .map { Duration.nanoseconds(Int64($0 * 1e9)) }

    /// One pair of histograms for one label set.
    struct Pair: Sendable {
        let firstByte: DurationHistogram
        let whole: DurationHistogram
    }

    /// `/clips` answers: `[tier * statusClasses.count + class]`.
    let clips: [Pair]
    /// Other routes: `[route.rawValue * statusClasses.count + class]`.
    let routes: [Pair]

    init(registry: PrometheusCollectorRegistry) {
        func pair(_ family: String, _ what: String, _ labels: [(String, String)]) -> Pair {
            Pair(firstByte: registry.makeDurationHistogram(
                     descriptor: .init(metricName: "clipproxy_\(family)_first_byte", unitName: "seconds",
                                       helpText: "Time from a request's head to its response's head being written, \(what)."),
                     labels: labels, buckets: Self.buckets),
                 whole: registry.makeDurationHistogram(
                     descriptor: .init(metricName: "clipproxy_\(family)_response", unitName: "seconds",
                                       helpText: "Time from a request's head to its response's last byte reaching the socket, \(what)."),
                     labels: labels, buckets: Self.buckets))
        }
        clips = Self.tiers.flatMap { tier in
            Self.statusClasses.map { pair("clip", "for /clips answers by tier and status class", [("tier", tier), ("class", $0)]) }
        }
        routes = TimedRoute.allCases.filter { $0 != .clips }.flatMap { route in
            Self.statusClasses.map { pair("route", "for captions, peaks and the JSON API by route and status class",
                                          [("route", "\(route)"), ("class", $0)]) }
        }
    }

    /// The histograms for one answer; `tier` is the `X-Clip-Tier` value (nil: none).
    func pair(route: TimedRoute, status: Int, tier: String?) -> Pair {
        let statusClass = min(3, max(0, status / 100 - 2))
        guard route == .clips else { return routes[(route.rawValue - 1) * Self.statusClasses.count + statusClass] }
        return clips[Self.tierIndex(tier) * Self.statusClasses.count + statusClass]
    }

    /// Position of a tier name in `tiers` (the last, `none`, for anything else).
    static func tierIndex(_ tier: String?) -> Int {
        switch tier {
        case "l1_hit": 0
        case "l2_hit": 1
        case "fill": 2
        case "coalesced": 3
        case "part": 4
        default: 5
        }
    }
}

/// The routes whose answers are timed, told apart from the request target alone (cheaply: a few
/// byte comparisons). Health, readiness, `/metrics` and the dashboard page are not timed.
enum TimedRoute: Int, CaseIterable, CustomStringConvertible {
    case clips = 0, captions, peaks, audioClips, episodes, search

    var description: String {
        switch self {
        case .clips: "clips"
        case .captions: "captions"
        case .peaks: "peaks"
        case .audioClips: "audio_clips"
        case .episodes: "episodes"
        case .search: "search"
        }
    }

    /// The route of a request target (path and query), nil for untimed ones.
    init?(target: String) {
        var target = target
        let route: TimedRoute? = target.withUTF8 { bytes in
            var path = bytes
            if let query = bytes.firstIndex(of: UInt8(ascii: "?")) { path = UnsafeBufferPointer(rebasing: bytes[..<query]) }
            if Self.has(path, prefix: "/clips/") {
                if Self.has(path, suffix: ".vtt") { return .captions }
                if Self.has(path, suffix: ".json") { return .peaks }
                return .clips
            }
            if Self.has(path, prefix: "/api/v1/audio_clips/") { return .audioClips }
            if Self.equals(path, "/api/v1/episodes") { return .episodes }
            if Self.equals(path, "/api/v1/search") { return .search }
            return nil
        }
        guard let route else { return nil }
        self = route
    }

    private static func has(_ bytes: UnsafeBufferPointer<UInt8>, prefix: StaticString) -> Bool {
        bytes.count >= prefix.utf8CodeUnitCount && memcmp(bytes.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
    }

    private static func has(_ bytes: UnsafeBufferPointer<UInt8>, suffix: StaticString) -> Bool {
        let count = suffix.utf8CodeUnitCount
        return bytes.count >= count && memcmp(bytes.baseAddress! + (bytes.count - count), suffix.utf8Start, count) == 0
    }

    private static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ text: StaticString) -> Bool {
        bytes.count == text.utf8CodeUnitCount && has(bytes, prefix: text)
    }
}
