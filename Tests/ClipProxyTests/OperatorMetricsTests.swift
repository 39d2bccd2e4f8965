import Foundation
import Testing
import TestSupport

/// What an operator sees (issue 27): a node against moto, the MongoDB wire server and the fault
/// proxy is driven through hits, misses, a part, a coalesced burst with fills queued, a cache
/// too small for its clips (evictions) and S3 faults; its /metrics must move exactly as the
/// answers did. Then a real Prometheus scrapes it with conf/prometheus's rules, and every query
/// of the recording rules and of conf/grafana/clipproxy.json must return data.
@Suite("Operator metrics: latency by tier, cache, fills, upstreams; rules and dashboard against a real Prometheus", .serialized)
struct OperatorMetricsTests {
    static let episode = ServerTests.episode
    static let dashboardFile = RepoPaths.root.appendingPathComponent("conf/grafana/clipproxy.json")
    /// Room for about three 5 s clips: the burst's fills must evict.
    static let budget = 300_000
    static let environment = [
        "CLIPPROXY_LIMITS_MAX_FILLS": "1", "CLIPPROXY_LIMITS_FILL_QUEUE": "32", "CLIPPROXY_LIMITS_FILL_QUEUE_WAIT_MS": "60000",
        "CLIPPROXY_CACHE_MAX_BYTES": String(budget),
    ]

    static func clipURL(_ server: ClipProxyProcess, _ startMs: Int) -> String {
        "\(server.baseURL)/clips/\(episode)/\(startMs)?duration_ms=5000"
    }

    /// The sum of a metric's samples whose labels include `labels` (0 when absent).
    static func value(_ text: String, _ name: String, _ labels: [String: String] = [:]) -> Double {
        prometheusValue(text, name, labels: labels) ?? 0
    }

    @Test("TTFB and whole-response counts per tier equal the answers per tier; cache bytes stay under the budget; fills queue in a burst; S3 errors by cause")
    func metricsFollowTheAnswers() async throws {
        let prometheusBinary = try OperationsConfigTests.tool("/usr/bin/prometheus", package: "prometheus")
        try await withProxiedStack("operator-metrics", environment: Self.environment) { server, proxy, _, work in
            var answered: [String: Int] = [:]  // X-Clip-Tier ("none" for errors) → answers seen
            func get(_ url: String, headers: [(name: String, value: String)] = []) throws -> Int {
                let response = try fetch(url, headers: headers)
                answered[response.headers["x-clip-tier"] ?? "none", default: 0] += 1
                return response.status
            }
            // A miss, then hits (the first through the router or the fast path, both timed), and a cold part.
            #expect(try get(Self.clipURL(server, 0)) == 200)
            #expect(server.waitForLog("fill finished"))
            for _ in 0..<3 { #expect(try get(Self.clipURL(server, 0)) == 200) }
            #expect(try get(Self.clipURL(server, 20_000), headers: [("Range", "bytes=100-999")]) == 206)
            #expect(answered["fill"] == 1 && answered["l1_hit"] == 3 && answered["part"] == 1, "\(answered)")

            // A burst while the source is slow: 20 requests for one cold clip (one fill, the rest
            // join it) and 5 other cold clips, with one fill slot: the others queue. The windows
            // share no source bytes with each other or with the clips above, so every fill waits
            // on the slow source (about a second each) and the queue lasts for seconds.
            try setProxyPlan(proxy, #"{"plan": [], "default": "slow:80000"}"#)
            var arguments = ["--silent", "--parallel", "--parallel-immediate", "--parallel-max", "40",
                             "--write-out", "%{http_code} %header{x-clip-tier}\\n"]
            for _ in 0..<20 { arguments += ["-o", "/dev/null", Self.clipURL(server, 30_000)] }
            for start in [37_000, 44_000, 51_000, 58_000, 65_000] { arguments += ["-o", "/dev/null", Self.clipURL(server, start)] }
            let output = work.url.appendingPathComponent("burst.txt")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = arguments
            curl.standardOutput = try FileHandle(forWritingTo: output)
            curl.standardError = FileHandle.nullDevice
            try curl.run()
            // Sampled on a thread of its own: under `make test` the cooperative pool is busy with
            // other suites' blocking work, and a loop there saw one scrape in the whole burst.
            nonisolated(unsafe) let burst = curl  // only `isRunning` is read there, which Process guards
            let (mostQueued, mostRunning, mostCached, scrapes) = onThreads([{ @Sendable () -> (Double, Double, Double, Int) in
                var most = (queued: 0.0, running: 0.0, cached: 0.0, scrapes: 0)
                while burst.isRunning {
                    if let text = try? metricsText(server) {
                        most.scrapes += 1
                        most.queued = max(most.queued, Self.value(text, "clipproxy_fills_queued"))
                        most.running = max(most.running, Self.value(text, "clipproxy_fills_running"))
                        most.cached = max(most.cached, Self.value(text, "clipproxy_cache_bytes"))
                    }
                    usleep(20_000)
                }
                return (most.queued, most.running, most.cached, most.scrapes)
            }])[0]
            curl.waitUntilExit()
            let lines = try String(contentsOf: output, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 25 && lines.allSatisfy { $0.hasPrefix("200 ") }, "burst answers: \(lines)")
            for line in lines { answered[String(line.split(separator: " ").last ?? "none"), default: 0] += 1 }
            #expect((answered["coalesced"] ?? 0) >= 1, "the burst for one clip joined its fill: \(answered)")
            #expect(mostQueued > 0 && mostRunning == 1, "fills queued at most \(mostQueued), running at most \(mostRunning) in \(scrapes) scrapes")
            #expect(mostCached <= Double(Self.budget), "cache bytes reached \(mostCached) of a \(Self.budget)-byte budget")

            // S3 faults before any byte: every attempt of a source GET fails with a 5xx, then with SlowDown.
            // (After the uploads to the clip bucket, so no fault meets them.)
            #expect(server.waitForLog("fill finished", count: 7, timeout: 30))
            #expect(server.waitForLog("second tier copy finished", count: 7, timeout: 30))
            for (mode, start) in [("500", 7_000), ("slowdown", 8_000)] {
                try setProxyPlan(proxy, #"{"plan": [], "default": "\#(mode)"}"#)
                let status = try get(Self.clipURL(server, start))
                #expect((500..<600).contains(status), "\(mode): answered \(status)")
            }
            try setProxyPlan(proxy, #"{"plan": [], "default": "pass"}"#)

            let text = try metricsText(server)
            for tier in ResponseTiers.all {
                let seen = Double(answered[tier] ?? 0)
                #expect(Self.value(text, "clipproxy_clip_first_byte_seconds_count", ["tier": tier]) == seen, "first-byte count of \(tier), \(seen) answered")
                #expect(Self.value(text, "clipproxy_clip_response_seconds_count", ["tier": tier]) == seen, "whole-response count of \(tier), \(seen) answered")
                if tier != "none" { #expect(Self.value(text, "clipproxy_clip_requests_total", ["tier": tier]) == seen, "requests of \(tier)") }
            }
            #expect(Self.value(text, "clipproxy_clip_first_byte_seconds_count", ["tier": "none", "class": "5xx"]) == 2, "the two faults are 5xx without a tier")
            #expect(Self.value(text, "clipproxy_cache_bytes") <= Double(Self.budget))
            #expect(Self.value(text, "clipproxy_cache_budget_bytes") == Double(Self.budget))
            #expect(Self.value(text, "clipproxy_cache_evictions_total") > 0 && Self.value(text, "clipproxy_cache_evicted_bytes_total") > 0,
                    "7 clips of about 80 kB in a 300 kB budget evict")
            #expect(Self.value(text, "clipproxy_fill_slots") == 1 && Self.value(text, "clipproxy_fills_queued") == 0)
            // Four attempts each (three retries), every one counted by its cause.
            #expect(Self.value(text, "clipproxy_s3_errors_total", ["cause": "5xx"]) == 4, "5xx errors")
            #expect(Self.value(text, "clipproxy_s3_errors_total", ["cause": "throttled"]) == 4, "throttled errors")
            #expect(Self.value(text, "clipproxy_s3_retries_total") == 6)
            #expect(Self.value(text, "clipproxy_s3_errors_total", ["cause": "timeout"]) == 0)
            for operation in ["get_source", "list", "put"] {
                #expect(Self.value(text, "clipproxy_s3_request_duration_seconds_count", ["operation": operation]) > 0, "S3 \(operation) timed")
            }
            #expect(Self.value(text, "clipproxy_catalog_query_duration_seconds_count", ["query": "resolve"]) >= 1)
            #expect(prometheusValue(text, "clipproxy_aws_credentials_expires_in_seconds")?.isInfinite == true, "static keys never expire")
            #expect(Self.value(text, "clipproxy_open_connections") >= 1, "the scrape's own connection")

            // A real Prometheus scrapes the node (under a trickle of hits) with the shipped rules.
            let address = String(server.baseURL.dropFirst("http://".count))
            let prometheus = try PrometheusProcess.start(work: work, executable: prometheusBinary, clipproxy: address)
            defer { prometheus.stop() }
            let rules = try String(contentsOf: OperationsConfigTests.rulesFile, encoding: .utf8)
            let recorded = rules.matches(of: /record:\s*(\S+)/).map { String($0.1) }
            let queries = recorded + (try Self.dashboardQueries())
            // Polled on a thread of its own, like the burst above.
            let empty = onThreads([{ @Sendable () -> Set<String> in
                var empty = Set(queries)
                let deadline = Date().addingTimeInterval(120)
                while !empty.isEmpty && Date() < deadline {
                    _ = try? fetch(Self.clipURL(server, 0))
                    for query in empty where !((try? Self.series(prometheus, query)) ?? []).isEmpty { empty.remove(query) }
                    usleep(500_000)
                }
                return empty
            }])[0]
            #expect(recorded.count == 5)
            #expect(empty.isEmpty, "no data after 120 s for:\n\(empty.sorted().joined(separator: "\n"))\n\(prometheus.log.suffix(2000))")
        }
    }

    @Test("conf/grafana/clipproxy.json is a dashboard Grafana imports: schema version, a Prometheus datasource variable, a row per concern, panels with queries")
    func dashboardModel() throws {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.dashboardFile)) as? [String: Any]
        let dashboard = try #require(object)
        #expect((dashboard["schemaVersion"] as? Int ?? 0) >= 36, "schemaVersion \(dashboard["schemaVersion"] ?? "missing")")
        #expect(dashboard["title"] as? String == "clipproxy" && dashboard["uid"] as? String == "clipproxy")
        let variables = ((dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]]) ?? []
        #expect(variables.contains { $0["type"] as? String == "datasource" && $0["query"] as? String == "prometheus" && $0["name"] as? String == "datasource" },
                "datasource variable: \(variables)")
        let panels = dashboard["panels"] as? [[String: Any]] ?? []
        let rows = panels.filter { $0["type"] as? String == "row" }.compactMap { $0["title"] as? String }
        #expect(rows == ["Plays", "Cache", "Fills", "Upstreams", "Errors"], "rows: \(rows)")
        let graphs = panels.filter { $0["type"] as? String != "row" }
        #expect(graphs.count >= 20)
        var ids: Set<Int> = []
        for panel in graphs {
            let title = panel["title"] as? String ?? "?"
            #expect(ids.insert(panel["id"] as? Int ?? -1).inserted, "\(title): id missing or repeated")
            #expect((panel["datasource"] as? [String: Any])?["uid"] as? String == "${datasource}", "\(title) uses the datasource variable")
            let grid = panel["gridPos"] as? [String: Int] ?? [:]
            #expect(["h", "w", "x", "y"].allSatisfy { grid[$0] != nil } && (grid["x"] ?? 0) + (grid["w"] ?? 0) <= 24, "\(title): gridPos \(grid)")
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty && targets.allSatisfy { !($0["expr"] as? String ?? "").isEmpty && $0["refId"] is String },
                    "\(title) has queries")
            #expect(!(panel["description"] as? String ?? "").isEmpty, "\(title) says what it shows")
        }
    }

    /// Every query of the dashboard, with its variables as Prometheus would get them from Grafana
    /// (every node; a rate window of a minute).
    static func dashboardQueries() throws -> [String] {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: dashboardFile)) as? [String: Any] ?? [:]
        let panels = object["panels"] as? [[String: Any]] ?? []
        return panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
            .map { $0.replacingOccurrences(of: "$instance", with: ".+").replacingOccurrences(of: "$__rate_interval", with: "1m") }
    }

    /// The series an instant query returns now (throws when Prometheus rejects the query).
    static func series(_ prometheus: PrometheusProcess, _ query: String) throws -> [[String: Any]] {
        let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        let body = try prometheus.api("query?query=\(encoded)")
        return ((body["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
    }
}

/// The `tier` label values of the `/clips` latency histograms.
enum ResponseTiers {
    static let all = ["l1_hit", "l2_hit", "fill", "coalesced", "part", "none"]
}
