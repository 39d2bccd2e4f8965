import Foundation
import Testing
import TestSupport

/// conf/prometheus and conf/systemd are run, not just read: promtool checks and unit-tests the
/// alerting rules, every metric the rules name must exist in a live clipproxy's /metrics, a real
/// Prometheus configured from conf/prometheus/prometheus.yml scrapes a running clipproxy and
/// evaluates the rules, systemd-analyze verifies the unit, and clipproxy serves inside the unit's
/// seccomp filters (scripts/unit_sandbox.py builds them as systemd does). The tools come from Debian's
/// `prometheus` and `systemd` packages, which `make test` installs (scripts/ensure-deps.sh).
@Suite("conf/prometheus and conf/systemd: alert rules, a real Prometheus scraping clipproxy, the hardened unit", .serialized)
struct OperationsConfigTests {
    static let prometheusConf = RepoPaths.root.appendingPathComponent("conf/prometheus")
    static let rulesFile = prometheusConf.appendingPathComponent("clipproxy-rules.yml")
    static let rulesTestFile = prometheusConf.appendingPathComponent("clipproxy-rules.test.yml")
    static let prometheusConfig = prometheusConf.appendingPathComponent("prometheus.yml")
    static let unitFile = RepoPaths.root.appendingPathComponent("conf/systemd/clipproxy.service")
    static let sysusersFile = RepoPaths.root.appendingPathComponent("conf/systemd/clipproxy.sysusers")

    /// Metrics the rules may use that clipproxy does not export: Prometheus' own per-target `up`
    /// and the blackbox exporter's `probe_success` (the /readyz probe).
    static let metricsFromElsewhere: Set<String> = ["up", "probe_success"]

    /// The path of a tool, or an error saying that `make test` installs it (never a silent skip).
    static func tool(_ path: String, package: String) throws -> String {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSetupError("\(path) is missing: run `make test`, which installs Debian's `\(package)` package "
                                 + "(scripts/ensure-deps.sh test), or `apt-get install -y \(package)`")
        }
        return path
    }

    /// Runs a tool to completion: its exit status and everything it printed (stdout, then stderr).
    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let result = try FFmpegOracle.run(executable, arguments)
        return (result.status, String(decoding: result.stdout, as: UTF8.self) + result.stderr)
    }

    /// `text` with every `old` replaced; throws when `old` is not there, so a changed example file
    /// fails the test instead of being run unmodified.
    static func substitute(_ text: String, _ old: String, _ new: String, in file: String) throws -> String {
        guard text.contains(old) else { throw TestSetupError("\(file) no longer contains \(old); update OperationsConfigTests") }
        return text.replacingOccurrences(of: old, with: new)
    }

    // MARK: promtool

    @Test("promtool accepts the rules, their unit tests pass, and broken rules are rejected")
    func promtoolChecksAndUnitTests() throws {
        let promtool = try Self.tool("/usr/bin/promtool", package: "prometheus")
        let check = try Self.run(promtool, ["check", "rules", Self.rulesFile.path])
        #expect(check.status == 0 && check.output.contains("SUCCESS: 17 rules found"), "\(check.output)")
        let unit = try Self.run(promtool, ["test", "rules", Self.rulesTestFile.path])
        #expect(unit.status == 0 && unit.output.contains("SUCCESS"), "\(unit.output)")
        let config = try Self.run(promtool, ["check", "config", Self.prometheusConfig.path])
        #expect(config.status == 0, "conf/prometheus/prometheus.yml: \(config.output)")

        let work = try TemporaryDirectory("rules-broken")
        defer { work.remove() }
        let rules = try String(contentsOf: Self.rulesFile, encoding: .utf8)
        let testFile = work.url.appendingPathComponent("clipproxy-rules.test.yml")
        try FileManager.default.copyItem(at: Self.rulesTestFile, to: testFile)
        let copy = work.url.appendingPathComponent("clipproxy-rules.yml")

        // An unclosed parenthesis: promtool check rules must refuse the file and name the rule.
        let expression = "(rate(clipproxy_fills_refused_total[5m])) > 0"
        try Self.substitute(rules, expression, "(rate(clipproxy_fills_refused_total[5m]) > 0", in: "clipproxy-rules.yml")
            .write(to: copy, atomically: true, encoding: .utf8)
        let broken = try Self.run(promtool, ["check", "rules", copy.path])
        #expect(broken.status != 0 && broken.output.contains("ClipproxyFillsRefused") && broken.output.contains("parse error"),
                "a rule that does not parse was accepted: \(broken.output)")

        // A valid rule on a misspelt metric never fires: the unit tests must notice.
        try Self.substitute(rules, "clipproxy_fills_refused_total", "clipproxy_fill_refused_total", in: "clipproxy-rules.yml")
            .write(to: copy, atomically: true, encoding: .utf8)
        #expect(try Self.run(promtool, ["check", "rules", copy.path]).status == 0, "the renamed metric still parses")
        let silent = try Self.run(promtool, ["test", "rules", testFile.path])
        #expect(silent.status != 0 && silent.output.contains("ClipproxyFillsRefused"),
                "an alert that can no longer fire passed its unit tests: \(silent.output)")
    }

    // MARK: the rules against clipproxy's own /metrics

    /// The PromQL of every `expr:` in the rules file, inline or as a `|` block.
    static func expressions(inRules text: String) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var expressions: [String] = []
        var index = 0
        while index < lines.count {
            let line = lines[index]
            let trimmed = line.drop(while: { $0 == " " })
            index += 1
            guard trimmed.hasPrefix("expr:") else { continue }
            let inline = trimmed.dropFirst("expr:".count).trimmingCharacters(in: .whitespaces)
            guard inline == "|" || inline == "|-" || inline == ">" || inline == ">-" else {
                expressions.append(inline)
                continue
            }
            let indent = line.count - trimmed.count
            var block: [Substring] = []
            while index < lines.count {
                let next = lines[index]
                let nextIndent = next.prefix(while: { $0 == " " }).count
                if !next.trimmingCharacters(in: .whitespaces).isEmpty && nextIndent <= indent { break }
                block.append(next)
                index += 1
            }
            expressions.append(block.joined(separator: "\n"))
        }
        return expressions
    }

    /// Metric names in a PromQL expression: identifiers that are not functions, keywords, label
    /// names (inside `{}` or `by ()`), durations or strings.
    static func metricNames(in expression: String) -> Set<String> {
        var text = expression
        for pattern in [#""[^"]*""#, #"\{[^}]*\}"#, #"\[[^\]]*\]"#, #"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"#,
                        #"\boffset\s+[0-9smhdwy]+"#] {
            text = text.replacingOccurrences(of: pattern, with: " ", options: .regularExpression)
        }
        let keywords: Set<String> = ["and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"]
        var names: Set<String> = []
        for match in text.matches(of: /([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/) where match.2 == nil {
            let name = String(match.1)
            if !keywords.contains(name.lowercased()) { names.insert(name) }
        }
        return names
    }

    /// Series in Prometheus text format: name -> the label sets it has.
    static func exposedSeries(_ exposition: String) -> [String: [[String: String]]] {
        exposedSamples(exposition).mapValues { $0.map(\.labels) }
    }

    /// Samples in Prometheus text format: name -> (labels, value) of each of its series.
    static func exposedSamples(_ exposition: String) -> [String: [(labels: [String: String], value: Double)]] {
        var series: [String: [(labels: [String: String], value: Double)]] = [:]
        for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
            guard let match = line.firstMatch(of: /^([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/) else { continue }
            var labels: [String: String] = [:]
            if let body = match.3 {
                for pair in body.matches(of: /([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"/) { labels[String(pair.1)] = String(pair.2) }
            }
            series[String(match.1), default: []].append((labels, Double(match.4) ?? .nan))
        }
        return series
    }

    @Test("Every metric, label and label value the rules use exists in a live clipproxy's /metrics")
    func rulesUseExportedMetrics() throws {
        let rules = try String(contentsOf: Self.rulesFile, encoding: .utf8)
        let expressions = Self.expressions(inRules: rules)
        #expect(expressions.count == 17, "found \(expressions.count) expr: entries in clipproxy-rules.yml")

        let work = try TemporaryDirectory("rules-metrics")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let answer = try fetch("\(server.baseURL)/metrics")
        #expect(answer.status == 200)
        let exposed = Self.exposedSeries(String(decoding: answer.body, as: UTF8.self))
        #expect(exposed["clipproxy_clip_requests_total"]?.count == 5, "parsed /metrics: \(exposed.keys.sorted())")
        let exposedLabelNames = Set(exposed.values.joined().flatMap { $0.keys })

        var used: Set<String> = []
        // Series the rules record (`level:metric:operations`) are read by other rules, not exported.
        let recorded = Set(rules.matches(of: /record:\s*(\S+)/).map { String($0.1) })
        #expect(recorded.count == 5, "recording rules: \(recorded.sorted())")
        for expression in expressions {
            let names = Self.metricNames(in: expression)
            #expect(!names.isEmpty, "no metric found in: \(expression)")
            used.formUnion(names)
            for name in names where !Self.metricsFromElsewhere.contains(name) && !recorded.contains(name) {
                #expect(exposed[name] != nil, "the rule `\(expression)` uses \(name), which clipproxy's /metrics does not have")
            }
            // Label matchers must match an exported series: metric{label="value", ...}.
            for selector in expression.matches(of: /([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}/) {
                let name = String(selector.1)
                guard !Self.metricsFromElsewhere.contains(name), let sets = exposed[name] else { continue }
                for pair in selector.2.matches(of: /([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)"/) where pair.2 == "=" {
                    #expect(sets.contains { $0[String(pair.1)] == String(pair.3) },
                            "\(name) has no series with \(pair.1)=\"\(pair.3)\" (rule `\(expression)`)")
                }
            }
            // Grouping labels: clipproxy's own, or the target labels Prometheus adds.
            for grouping in expression.matches(of: /\b(?:by|without)\s*\(([^)]*)\)/) {
                for label in grouping.1.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                    #expect(["job", "instance"].contains(label) || exposedLabelNames.contains(label),
                            "the rule `\(expression)` groups by \(label), which no clipproxy series has")
                }
            }
        }
        // Metrics named in annotations (the first step of an alert) must exist too.
        for match in rules.matches(of: /clipproxy_[a-z0-9_]+/) {
            #expect(exposed[String(match.0)] != nil, "clipproxy-rules.yml mentions \(match.0), which /metrics does not have")
        }
        #expect(used.isSuperset(of: ["clipproxy_responses_total", "clipproxy_fills_refused_total", "clipproxy_cache_bypass_total",
                                     "clipproxy_catalog_stale_total", "clipproxy_responses_aborted_total",
                                     "clipproxy_fill_duration_seconds_bucket"]),
                "the rules cover docs/OPERATIONS.md's alert table; they use \(used.sorted())")
    }

    // MARK: a real Prometheus

    @Test("A real Prometheus configured from conf/prometheus scrapes clipproxy and evaluates the rules")
    func prometheusScrapesClipproxy() async throws {
        let executable = try Self.tool("/usr/bin/prometheus", package: "prometheus")
        let work = try TemporaryDirectory("clipproxy-prom")
        defer { work.remove() }
        let server = try EmbeddedServer(work: work).start()
        defer { server.stop() }
        let episode = ServerTests.episode
        let cold = try fetch("\(server.baseURL)/clips/\(episode)/12345")
        #expect(cold.status == 200 && cold.headers["x-clip-tier"] == "fill")
        #expect(server.waitForLog("fill finished"))
        let warm = try fetch("\(server.baseURL)/clips/\(episode)/12345.mp3")
        #expect(warm.status == 200 && warm.headers["x-clip-tier"] == "l1_hit")
        let clipproxyAddress = String(server.baseURL.dropFirst("http://".count))
        // What clipproxy itself says; /metrics requests are not counted, so these stay put.
        let own = Self.exposedSamples(String(decoding: try fetch("\(server.baseURL)/metrics").body, as: UTF8.self))
        var ownTiers: [String: Double] = [:]
        for sample in own["clipproxy_clip_requests_total"] ?? [] { if let tier = sample.labels["tier"] { ownTiers[tier] = sample.value } }
        #expect(ownTiers.keys.sorted() == ["coalesced", "fill", "l1_hit", "l2_hit", "part"] && ownTiers["fill"] == 1 && ownTiers["l1_hit"] == 1,
                "clipproxy's own /metrics: \(ownTiers)")

        let prometheus = try PrometheusProcess.start(work: work, executable: executable, clipproxy: clipproxyAddress)
        defer { prometheus.stop() }

        // The series arrive: one per tier, labelled with the clipproxy job and this node. Polled
        // on a thread of its own: under `make test` the cooperative pool is busy with other
        // suites' blocking work, and a loop there can sleep through the whole deadline.
        let (tiers, groupNames, ruleCount, unhealthy) = onThreads([{ @Sendable () -> ([String: Double], [String], Int, [String]) in
            let deadline = Date().addingTimeInterval(45)
            var tiers: [String: Double] = [:]
            while Date() < deadline {
                tiers = [:]
                if let body = try? prometheus.api("query?query=clipproxy_clip_requests_total"),
                   let data = body["data"] as? [String: Any], let result = data["result"] as? [[String: Any]] {
                    for series in result {
                        guard let metric = series["metric"] as? [String: String], metric["job"] == "clipproxy",
                              metric["instance"] == clipproxyAddress, let tier = metric["tier"],
                              let value = series["value"] as? [Any], value.count == 2, let text = value[1] as? String,
                              let number = Double(text) else { continue }
                        tiers[tier] = number
                    }
                }
                if tiers.count == 5 { break }
                usleep(250_000)
            }
            // The rules are loaded and every rule has been evaluated without an error.
            var groups: [[String: Any]] = []
            var unhealthy: [String] = ["not evaluated yet"]
            while Date() < deadline.addingTimeInterval(15) {
                if let body = try? prometheus.api("rules"), let data = body["data"] as? [String: Any],
                   let loaded = data["groups"] as? [[String: Any]] {
                    groups = loaded
                    unhealthy = loaded.flatMap { group in
                        (group["rules"] as? [[String: Any]] ?? []).compactMap { rule -> String? in
                            let health = rule["health"] as? String ?? "?"
                            return health == "ok" ? nil : "\(rule["name"] ?? "?"): \(health) \(rule["lastError"] ?? "")"
                        }
                    }
                    if !loaded.isEmpty && unhealthy.isEmpty { break }
                }
                usleep(250_000)
            }
            return (tiers, groups.compactMap { $0["name"] as? String }, groups.reduce(0) { $0 + ($1["rules"] as? [Any] ?? []).count }, unhealthy)
        }])[0]
        #expect(tiers.count == 5, "Prometheus had \(tiers) after 45 s; its log:\n\(prometheus.log.suffix(3000))")
        #expect(tiers == ownTiers, "Prometheus \(tiers), clipproxy's /metrics \(ownTiers)")
        #expect(tiers.values.reduce(0, +) == 2, "two /clips requests were made: \(tiers)")
        #expect(groupNames.sorted() == ["clipproxy", "clipproxy-availability", "clipproxy-recording"], "rule groups: \(groupNames)")
        #expect(ruleCount == 17)
        #expect(unhealthy.isEmpty, "rules not healthy: \(unhealthy)\n\(prometheus.log.suffix(3000))")
    }

    // MARK: systemd

    @Test("systemd-analyze verify has nothing to say about conf/systemd/clipproxy.service, and its exposure is low")
    func systemdUnitVerifies() throws {
        let analyze = try Self.tool("/usr/bin/systemd-analyze", package: "systemd")
        let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
        let work = try TemporaryDirectory("clipproxy-unit")
        defer { work.remove() }
        // verify checks that ExecStart's binary exists; point it at the one just built.
        let unit = try Self.substitute(try String(contentsOf: Self.unitFile, encoding: .utf8),
                                       "ExecStart=/usr/local/bin/clipproxy ", "ExecStart=\(binary.path) ", in: "clipproxy.service")
        let copy = work.url.appendingPathComponent("clipproxy.service")
        try unit.write(to: copy, atomically: true, encoding: .utf8)

        // `verify` exits 0 even for unknown keys and unparsable values (it only warns), so its
        // output is what counts. `--recursive-errors=no` keeps it to this unit, not the host's
        // units it orders against (network-online.target, multi-user.target), and `--man=no`
        // skips the man-page lookup. What it may still print about the host (another unit file it
        // loaded, named `<unit>:` or `/path/<unit>:`) is noise; a line naming this unit or its
        // path, or any other line, fails the test.
        func findings(_ path: URL) throws -> (status: Int32, aboutUnit: [String], other: [String]) {
            let result = try Self.run(analyze, ["verify", "--recursive-errors=no", "--man=no", path.path])
            var aboutUnit: [String] = [], other: [String] = []
            for line in result.output.split(separator: "\n").map(String.init) where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                let otherUnit = line.firstMatch(of: #/^(?:\S*/)?([A-Za-z0-9@._\\:-]+)\.(service|socket|target|mount|automount|swap|path|timer|slice|scope|device)(:\d+)?: /#)
                if line.contains(path.path) || line.hasPrefix("clipproxy.service") {
                    aboutUnit.append(line)
                } else if otherUnit == nil {
                    aboutUnit.append(line)
                } else {
                    other.append(line)
                }
            }
            return (result.status, aboutUnit, other)
        }
        let clean = try findings(copy)
        #expect(clean.status == 0 && clean.aboutUnit.isEmpty, "systemd-analyze verify: \(clean.aboutUnit.joined(separator: "\n"))")
        if !clean.other.isEmpty { print("systemd-analyze verify, about other units of this host (ignored):\n" + clean.other.joined(separator: "\n")) }

        // The check has teeth: a misspelt setting and a bad value are reported about the unit.
        let broken = work.url.appendingPathComponent("broken").appendingPathComponent("clipproxy.service")
        try FileManager.default.createDirectory(at: broken.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Self.substitute(unit, "ProtectSystem=strict", "ProtectSystem=strickt\nProtectKernelTunable=yes", in: "clipproxy.service")
            .write(to: broken, atomically: true, encoding: .utf8)
        let complaints = try findings(broken)
        #expect(complaints.aboutUnit.contains { $0.contains("ProtectKernelTunable") } && complaints.aboutUnit.contains { $0.contains("strickt") },
                "a broken unit passed: \(complaints)")

        // The hardening holds: systemd's own exposure score (0 to 10) stays at 2.0 or below.
        let security = try Self.run(analyze, ["security", "--offline=yes", "--threshold=20", "--no-pager", copy.path])
        #expect(security.status == 0, "systemd-analyze security: \(security.output.suffix(3000))")
        #expect(security.output.contains("Overall exposure level for clipproxy.service"), "\(security.output.suffix(500))")

        // The user the unit runs as: conf/systemd/clipproxy.sysusers creates it (in a scratch root).
        let sysusers = try Self.tool("/usr/bin/systemd-sysusers", package: "systemd")
        let root = work.url.appendingPathComponent("root")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("etc"), withIntermediateDirectories: true)
        let installed = root.appendingPathComponent("usr/lib/sysusers.d")
        try FileManager.default.createDirectory(at: installed, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.sysusersFile, to: installed.appendingPathComponent("clipproxy.conf"))
        let created = try Self.run(sysusers, ["--root", root.path])
        let passwd = (try? String(contentsOf: root.appendingPathComponent("etc/passwd"), encoding: .utf8)) ?? ""
        #expect(created.status == 0 && passwd.contains("clipproxy:x:") && passwd.contains(":/usr/sbin/nologin"),
                "systemd-sysusers: \(created.output)\n/etc/passwd: \(passwd)")
        #expect(unit.contains("User=clipproxy\n") && unit.contains("Group=clipproxy\n"))
    }

    @Test("clipproxy serves under the unit's MemoryDenyWriteExecute= and SystemCallFilter= (seccomp as systemd builds it)")
    func clipproxyRunsInsideTheUnitsSeccompFilters() throws {
        let unit = try String(contentsOf: Self.unitFile, encoding: .utf8)
        // What this test emulates is what the unit sets; change both together.
        for line in ["MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service", "SystemCallFilter=~@privileged"] {
            #expect(unit.contains("\n\(line)\n"), "clipproxy.service no longer has \(line)")
        }
        _ = try Self.tool("/usr/bin/systemd-analyze", package: "systemd")
        let python = try RepoPaths.require(RepoPaths.python, hint: "run `make test` (it creates the venv)")
        let binary = try RepoPaths.require(RepoPaths.clipproxyBinary, hint: "build it with `swift build`")
        let work = try TemporaryDirectory("clipproxy-seccomp")
        defer { work.remove() }
        let port = try freeLoopbackPort()
        let base = "http://127.0.0.1:\(port)"
        var environment = ProcessInfo.processInfo.environment
        for (name, value) in EmbeddedServer(work: work).environment { environment[name] = value }
        environment["CLIPPROXY_HTTP_PORT"] = String(port)
        let logFile = work.url.appendingPathComponent("clipproxy.log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let process = Process()
        process.executableURL = python
        // Stricter than the unit: a call outside the filter kills clipproxy instead of failing with EPERM.
        process.arguments = [RepoPaths.scripts.appendingPathComponent("unit_sandbox.py").path, "--memory-deny-write-execute",
                             "--syscall-filter", "@system-service", "--deny", "@privileged", "--", binary.path, "serve"]
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        let output = try FileHandle(forWritingTo: logFile)
        process.standardOutput = output
        process.standardError = output
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
        func log() -> String { ((try? String(contentsOf: logFile, encoding: .utf8)) ?? "").suffix(3000).description }

        let deadline = Date().addingTimeInterval(60)
        var healthy = false
        while process.isRunning && Date() < deadline && !healthy {
            healthy = (try? fetch(base + "/healthz"))?.status == 200
            if !healthy { usleep(50_000) }
        }
        let state = process.isRunning ? "still running" : "reason \(process.terminationReason.rawValue), status \(process.terminationStatus)"
        try #require(healthy, "clipproxy did not start inside the filters (\(state)):\n\(log())")

        let episode = ServerTests.episode
        let cold = try fetch("\(base)/clips/\(episode)/12345")
        #expect(cold.status == 200 && cold.headers["x-clip-tier"] == "fill" && cold.body.count > 100_000, "\(cold.status) \(cold.headers)")
        let fillDeadline = Date().addingTimeInterval(10)
        while !log().contains("fill finished") && Date() < fillDeadline { usleep(20_000) }
        let warm = try fetch("\(base)/clips/\(episode)/12345")
        #expect(warm.status == 200 && warm.headers["x-clip-tier"] == "l1_hit" && sameBytes(warm.body, cold.body))
        let part = try fetch("\(base)/clips/\(episode)/50000", headers: [("Range", "bytes=100-2000")])
        #expect(part.status == 206 && part.body.count == 1901)
        #expect(try fetch(base + "/readyz").status == 200)
        #expect(try fetch(base + "/metrics").status == 200)
        #expect(try fetch("\(base)/api/v1/audio_clips/\(episode)?start_time_ms=1000").status == 200)

        // Graceful shutdown works inside the filters too; a forbidden call would show as SIGSYS (31).
        process.terminate()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0,
                "clipproxy ended with reason \(process.terminationReason.rawValue), status \(process.terminationStatus):\n\(log())")
        #expect(!log().contains("Bad system call"))
    }
}

/// Debian's /usr/bin/prometheus on a free loopback port, configured from conf/prometheus/prometheus.yml
/// with this test's addresses filled in; storage, config and rules in the test's directory.
final class PrometheusProcess: @unchecked Sendable {
    let port: Int
    let directory: URL
    private let process: Process
    private let logFile: URL

    private init(port: Int, directory: URL, process: Process, logFile: URL) {
        self.port = port
        self.directory = directory
        self.process = process
        self.logFile = logFile
    }

    /// Writes the configuration: clipproxy's targets become `clipproxy` (host:port), intervals
    /// become 1 s, and the Alertmanager and blackbox addresses free ports where nothing listens (so
    /// nothing on this host receives test traffic). Waits until Prometheus answers /-/ready;
    /// a port taken between choosing and binding is retried with another.
    static func start(work: TemporaryDirectory, executable: String, clipproxy: String, timeout: TimeInterval = 30) throws -> PrometheusProcess {
        let file = "conf/prometheus/prometheus.yml"
        var config = try String(contentsOf: OperationsConfigTests.prometheusConfig, encoding: .utf8)
        let sub = OperationsConfigTests.substitute
        config = try sub(config, "scrape_interval: 15s", "scrape_interval: 1s", file)
        config = try sub(config, "evaluation_interval: 15s", "evaluation_interval: 1s", file)
        config = try sub(config, #"["10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080"]"#, "[\"\(clipproxy)\"]", file)
        config = try sub(config, #"["http://10.0.0.11:8080/readyz", "http://10.0.0.12:8080/readyz", "http://10.0.0.13:8080/readyz"]"#,
                         "[\"http://\(clipproxy)/readyz\"]", file)
        config = try sub(config, "127.0.0.1:9093", "127.0.0.1:\(try freeLoopbackPort())", file)
        config = try sub(config, "127.0.0.1:9115", "127.0.0.1:\(try freeLoopbackPort())", file)

        var lastLog = ""
        for attempt in 0..<3 {
            let directory = work.url.appendingPathComponent("prometheus-\(attempt)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try config.write(to: directory.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)
            try FileManager.default.copyItem(at: OperationsConfigTests.rulesFile, to: directory.appendingPathComponent("clipproxy-rules.yml"))
            let port = try freeLoopbackPort()
            let logFile = directory.appendingPathComponent("prometheus.log")
            _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
            let output = try FileHandle(forWritingTo: logFile)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["--config.file=\(directory.path)/prometheus.yml", "--storage.tsdb.path=\(directory.path)/data",
                                 "--web.listen-address=127.0.0.1:\(port)", "--log.level=info"]
            process.currentDirectoryURL = directory
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let prometheus = PrometheusProcess(port: port, directory: directory, process: process, logFile: logFile)
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline {
                if let ready = try? fetch("http://127.0.0.1:\(port)/-/ready"), ready.status == 200 { return prometheus }
                usleep(100_000)
            }
            lastLog = prometheus.log
            prometheus.stop()
            if !lastLog.contains("address already in use") { break }
        }
        throw TestSetupError("prometheus did not become ready within \(Int(timeout)) s:\n\(lastLog.suffix(4000))")
    }

    /// GET /api/v1/<path>, decoded; throws unless Prometheus answers `"status": "success"`.
    func api(_ path: String) throws -> [String: Any] {
        let answer = try fetch("http://127.0.0.1:\(port)/api/v1/\(path)")
        guard answer.status == 200, let object = try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any],
              object["status"] as? String == "success" else {
            throw TestSetupError("/api/v1/\(path): \(answer.status) \(String(decoding: answer.body, as: UTF8.self).prefix(500))")
        }
        return object
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL after 5 s: a process started from a Swift Concurrency thread may
    /// inherit a mask that blocks SIGTERM (see NginxProcess). Its storage goes with the test's directory.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }
}
