import Foundation
import Yams

/// clipproxy's configuration: a YAML or JSON file (conf/clipproxy.yaml documents every key), each
/// key overridable by its environment variable (`cache.max_bytes` → `CLIPPROXY_CACHE_MAX_BYTES`).
/// Unknown keys and malformed values are errors that name the key, so a typo never silently
/// falls back to a default.
struct Configuration: Sendable, Equatable {
    var httpHost = "127.0.0.1"
    var httpPort = 8080
    /// Origins allowed to read clips from scripts: `*` (any), or a list of exact origins.
    var httpCorsOrigins = ["*"]
    /// The proxy's address as clients see it (`https://clips.example.com`), for URLs in JSON
    /// answers; empty: taken from the request's Host header.
    var httpPublicURL = ""
    /// Seconds a keep-alive connection may sit idle (and a client may take to send its request).
    var httpIdleTimeoutS = 60
    /// Longest request target (path and query) accepted; longer → 414.
    var httpMaxURIBytes = 4096
    /// Largest total size of request header fields accepted; larger → 431.
    var httpMaxHeaderBytes = 16_384
    /// Stored clips answered on the event loop, below the router (`StoredClipFastPath`).
    var httpFastPath = true
    /// `/metrics` on the public port as well as on the admin listener (Prometheus scrapes TCP only).
    var httpMetrics = true
    /// Per-request latency histograms (`ResponseTimings`); off only to measure what they cost.
    var httpRequestMetrics = true
    /// The admin listener; nil: `admin.sock` in `cache.dir` (`AdminAddress.defaultSocket`).
    var adminListen: AdminAddress?
    var cacheDir = "./.cache/clipproxy"
    var cacheMaxBytes: Int64 = 10 << 30
    var catalogKind = "file"
    var catalogDir = "./demo/catalog"
    /// Seconds a resolution (episode → source object) is trusted before the catalog is asked
    /// again; past it, a catalog that cannot answer leaves the last resolution in use.
    var catalogTTLs = 600
    var mongoURI = "mongodb://127.0.0.1:27017"
    var mongoDatabase = "podinsight"
    var sourceKind = "dir"
    var sourceDir = "./demo/source"
    /// The second tier when there is no S3 clip bucket: a directory of clips (shared storage for several nodes).
    var secondTierDir = "./.cache/clipproxy/l2"
    var s3Endpoint = ""
    var s3Region = "eu-west-2"
    var s3PathStyle = false
    var s3SourceBucket = "pod-insights-raw"
    var s3ClipBucket = "pod-insights-clips"
    var s3ClipKeyTemplate = "{feed_slug}/{guid}/{start_ms}-{end_ms}.mp3"
    var clipsDefaultDurationMs: Int64 = 30_000
    var clipsMaxDurationMs: Int64 = 60_000
    var presignExpiresS = 86_400
    var signingKey = ""
    /// The key being rotated out: URLs it signed are still accepted; new URLs use `signingKey`.
    var signingPreviousKey = ""
    var limitsMaxFills = 8
    /// Cold clips that may wait for a fill slot; beyond that, 503 with Retry-After.
    var limitsFillQueue = 64
    /// How long a cold clip waits for a fill slot before answering 503.
    var limitsFillQueueWaitMs: Int64 = 5_000

    /// Where the admin endpoints listen.
    var adminAddress: AdminAddress { adminListen ?? .defaultSocket(cacheDir: cacheDir) }

    /// What the file or environment said that still works but should change (old key names).
    var warnings: [String] = []

    /// Old key names still accepted, with the key that replaced each.
    static let renamedKeys = ["clipstore.dir": "second_tier.dir"]
    /// Keys that no longer do anything, with why: accepted with a warning, so an old file keeps working.
    static let removedKeys = ["http.fast_path_wire": "every request goes through the HTTP/1 parser"]

    /// Every key, its environment variable, and how to apply a textual value.
    struct Key: Sendable {
        let name: String
        let apply: @Sendable (inout Configuration, String) throws -> Void
        var environmentVariable: String { Self.environmentVariable(for: name) }
        static func environmentVariable(for name: String) -> String { "CLIPPROXY_" + name.uppercased().replacingOccurrences(of: ".", with: "_") }
    }

    static let keys: [Key] = [
        Key(name: "http.host") { $0.httpHost = try nonEmpty($1, "http.host") },
        Key(name: "http.port") { $0.httpPort = Int(try integer($1, "http.port", in: 0...65535)) },
        Key(name: "http.cors_origins") { $0.httpCorsOrigins = try origins($1) },
        Key(name: "http.public_url") { $0.httpPublicURL = try publicURL($1) },
        Key(name: "http.idle_timeout_s") { $0.httpIdleTimeoutS = Int(try integer($1, "http.idle_timeout_s", in: 1...86_400)) },
        Key(name: "http.max_uri_bytes") { $0.httpMaxURIBytes = Int(try integer($1, "http.max_uri_bytes", in: 256...1 << 20)) },
        Key(name: "http.max_header_bytes") { $0.httpMaxHeaderBytes = Int(try integer($1, "http.max_header_bytes", in: 1024...1 << 20)) },
        Key(name: "http.fast_path") { $0.httpFastPath = try boolean($1, "http.fast_path") },
        Key(name: "http.metrics") { $0.httpMetrics = try boolean($1, "http.metrics") },
        Key(name: "http.request_metrics") { $0.httpRequestMetrics = try boolean($1, "http.request_metrics") },
        Key(name: "admin.listen") { $0.adminListen = $1.trimmingCharacters(in: .whitespaces).isEmpty ? nil : try AdminAddress.parse($1) },
        Key(name: "cache.dir") { $0.cacheDir = try nonEmpty($1, "cache.dir") },
        Key(name: "cache.max_bytes") { $0.cacheMaxBytes = try byteSize($1, "cache.max_bytes") },
        Key(name: "catalog.kind") { $0.catalogKind = try oneOf($1, "catalog.kind", ["file", "mongo"]) },
        Key(name: "catalog.dir") { $0.catalogDir = try nonEmpty($1, "catalog.dir") },
        Key(name: "catalog.ttl_s") { $0.catalogTTLs = Int(try integer($1, "catalog.ttl_s", in: 0...604_800)) },
        Key(name: "mongo.uri") { $0.mongoURI = try nonEmpty($1, "mongo.uri") },
        Key(name: "mongo.database") { $0.mongoDatabase = try nonEmpty($1, "mongo.database") },
        Key(name: "source.kind") { $0.sourceKind = try oneOf($1, "source.kind", ["dir", "s3"]) },
        Key(name: "source.dir") { $0.sourceDir = try nonEmpty($1, "source.dir") },
        Key(name: "second_tier.dir") { $0.secondTierDir = try nonEmpty($1, "second_tier.dir") },
        Key(name: "s3.endpoint") { $0.s3Endpoint = $1 },
        Key(name: "s3.region") { $0.s3Region = try nonEmpty($1, "s3.region") },
        Key(name: "s3.path_style") { $0.s3PathStyle = try boolean($1, "s3.path_style") },
        Key(name: "s3.source_bucket") { $0.s3SourceBucket = try nonEmpty($1, "s3.source_bucket") },
        Key(name: "s3.clip_bucket") { $0.s3ClipBucket = try nonEmpty($1, "s3.clip_bucket") },
        Key(name: "s3.clip_key_template") { $0.s3ClipKeyTemplate = try nonEmpty($1, "s3.clip_key_template") },
        Key(name: "clips.default_duration_ms") { $0.clipsDefaultDurationMs = try integer($1, "clips.default_duration_ms", in: 1...3_600_000) },
        Key(name: "clips.max_duration_ms") { $0.clipsMaxDurationMs = try integer($1, "clips.max_duration_ms", in: 1...3_600_000) },
        Key(name: "presign.expires_s") { $0.presignExpiresS = Int(try integer($1, "presign.expires_s", in: 1...604_800)) },
        Key(name: "signing.key") { $0.signingKey = try signingKey($1, "signing.key") },
        Key(name: "signing.previous_key") { $0.signingPreviousKey = try signingKey($1, "signing.previous_key") },
        Key(name: "limits.max_fills") { $0.limitsMaxFills = Int(try integer($1, "limits.max_fills", in: 1...10_000)) },
        Key(name: "limits.fill_queue") { $0.limitsFillQueue = Int(try integer($1, "limits.fill_queue", in: 0...100_000)) },
        Key(name: "limits.fill_queue_wait_ms") { $0.limitsFillQueueWaitMs = try integer($1, "limits.fill_queue_wait_ms", in: 0...600_000) },
    ]

    /// Defaults, then the file (if any), then the environment.
    static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Configuration {
        var configuration = Configuration()
        if let file {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw ConfigurationError("cannot read configuration file \(file): \(error.localizedDescription)")
            }
            let values = try flatten(text, file: file)
            for (given, value) in values.sorted(by: { $0.key < $1.key }) {
                if let why = removedKeys[given] {
                    configuration.warnings.append("\(file): \(given) does nothing any more (\(why)); remove it")
                    continue
                }
                var name = given
                if let renamed = renamedKeys[given] {
                    if values[renamed] != nil {  // the new name wins
                        configuration.warnings.append("\(file): \(given) is ignored: \(renamed) is set too; remove \(given)")
                        continue
                    }
                    configuration.warnings.append("\(file): \(given) is deprecated; rename it to \(renamed)")
                    name = renamed
                }
                guard let key = keys.first(where: { $0.name == name }) else {
                    let hint = keys.map(\.name).min { editDistance($0, name) < editDistance($1, name) }.map { " (did you mean \($0)?)" } ?? ""
                    throw ConfigurationError("\(file): unknown key \(name)\(hint)")
                }
                try key.apply(&configuration, value)
            }
        }
        for (old, renamed) in renamedKeys.sorted(by: { $0.key < $1.key }) {
            guard let key = keys.first(where: { $0.name == renamed }), let value = environment[Key.environmentVariable(for: old)] else { continue }
            guard environment[key.environmentVariable] == nil else {
                configuration.warnings.append("\(Key.environmentVariable(for: old)) is ignored: \(key.environmentVariable) is set too; unset it")
                continue
            }
            configuration.warnings.append("\(Key.environmentVariable(for: old)) is deprecated; use \(key.environmentVariable)")
            try key.apply(&configuration, value)
        }
        for (removed, why) in removedKeys.sorted(by: { $0.key < $1.key }) where environment[Key.environmentVariable(for: removed)] != nil {
            configuration.warnings.append("\(Key.environmentVariable(for: removed)) does nothing any more (\(why)); unset it")
        }
        for key in keys {
            if let value = environment[key.environmentVariable] { try key.apply(&configuration, value) }
        }
        guard configuration.clipsDefaultDurationMs <= configuration.clipsMaxDurationMs else {
            throw ConfigurationError("clips.default_duration_ms (\(configuration.clipsDefaultDurationMs)) exceeds clips.max_duration_ms (\(configuration.clipsMaxDurationMs))")
        }
        if configuration.signingKey.isEmpty && !configuration.signingPreviousKey.isEmpty {
            throw ConfigurationError("signing.previous_key is set but signing.key is empty: set signing.key to the new key")
        }
        return configuration
    }

    /// Nested YAML/JSON mappings to dotted keys with scalar values as text.
    static func flatten(_ text: String, file: String) throws -> [String: String] {
        let document: Any?
        do { document = try Yams.load(yaml: text) } catch {
            throw ConfigurationError("\(file) is not valid YAML or JSON: \(error)")
        }
        guard let document else { return [:] }
        guard let root = document as? [String: Any] else { throw ConfigurationError("\(file): the top level must be a mapping of keys") }
        var out: [String: String] = [:]
        func walk(_ node: [String: Any], _ prefix: String) throws {
            for (k, v) in node {
                let name = prefix.isEmpty ? k : "\(prefix).\(k)"
                switch v {
                case let nested as [String: Any]: try walk(nested, name)
                case let s as String: out[name] = s
                case let b as Bool: out[name] = b ? "true" : "false"
                case let i as Int: out[name] = String(i)
                case let d as Double: out[name] = String(d)
                case is NSNull: continue
                default: throw ConfigurationError("\(file): \(name) must be a single value")
                }
            }
        }
        try walk(root, "")
        return out
    }

    // MARK: - Value parsing

    static func nonEmpty(_ v: String, _ key: String) throws -> String {
        guard !v.trimmingCharacters(in: .whitespaces).isEmpty else { throw ConfigurationError("\(key) must not be empty") }
        return v
    }

    static func integer(_ v: String, _ key: String, in range: ClosedRange<Int64>) throws -> Int64 {
        guard let n = Int64(v.trimmingCharacters(in: .whitespaces)), range.contains(n) else {
            throw ConfigurationError("\(key) must be an integer in \(range.lowerBound)...\(range.upperBound), got \(v)")
        }
        return n
    }

    /// `*` or a comma-separated list of origins such as `https://dashboard.example.com`.
    static func origins(_ v: String) throws -> [String] {
        let list = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if list == ["*"] { return list }
        for origin in list where !(origin.hasPrefix("http://") || origin.hasPrefix("https://")) || origin.hasSuffix("/") {
            throw ConfigurationError("http.cors_origins must be * or origins like https://dashboard.example.com, got \(origin)")
        }
        return list
    }

    /// Empty (signing off) or at least 16 characters: a short key makes signatures guessable.
    static func signingKey(_ v: String, _ key: String) throws -> String {
        guard v.isEmpty || v.utf8.count >= 16 else { throw ConfigurationError("\(key) must be empty or at least 16 characters") }
        return v
    }

    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    static func publicURL(_ v: String) throws -> String {
        guard !v.isEmpty else { return v }
        guard let url = URL(string: v), url.scheme == "http" || url.scheme == "https", url.host != nil, url.query == nil, !v.hasSuffix("/") else {
            throw ConfigurationError("http.public_url must look like https://clips.example.com (no trailing slash), got \(v)")
        }
        return v
    }

    static func boolean(_ v: String, _ key: String) throws -> Bool {
        switch v.lowercased() {
        case "true", "yes", "1", "on": return true
        case "false", "no", "0", "off": return false
        default: throw ConfigurationError("\(key) must be true or false, got \(v)")
        }
    }

    static func oneOf(_ v: String, _ key: String, _ allowed: [String]) throws -> String {
        guard allowed.contains(v) else { throw ConfigurationError("\(key) must be one of \(allowed.joined(separator: ", ")), got \(v)") }
        return v
    }

    /// Bytes as an integer or with a unit: 500MB, 10GiB, 2G (powers of 1024 for every unit).
    static func byteSize(_ v: String, _ key: String) throws -> Int64 {
        let text = v.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Int64)] = [("TIB", 1 << 40), ("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10),
                                        ("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10),
                                        ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let n = Int64(text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n >= 0, n <= Int64.max / factor { return n * factor }
            throw ConfigurationError("\(key) must be a byte size like 500MB or 10GiB, got \(v)")
        }
        guard let n = Int64(text), n >= 0 else { throw ConfigurationError("\(key) must be a byte size like 500MB or 10GiB, got \(v)") }
        return n
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }
}

struct ConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = "configuration: " + description }
}
