import Foundation
import Testing
import TestSupport
@testable import ClipProxy

@Suite("Configuration: file, environment, and clear errors")
struct ConfigurationTests {
    func write(_ text: String, _ name: String = "c.yaml") throws -> (TemporaryDirectory, String) {
        let dir = try TemporaryDirectory("config")
        let path = dir.url.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return (dir, path)
    }

    @Test("Defaults follow docs/CONFIGURATION.md")
    func defaults() throws {
        let c = try Configuration.load(file: nil, environment: [:])
        #expect(c.httpHost == "127.0.0.1" && c.httpPort == 8080)
        #expect(c.s3Region == "eu-west-2" && c.s3ClipBucket == "pod-insights-clips")
        #expect(c.s3ClipKeyTemplate == "{feed_slug}/{guid}/{start_ms}-{end_ms}.mp3")
        #expect(c.clipsDefaultDurationMs == 30_000 && c.clipsMaxDurationMs == 60_000 && c.presignExpiresS == 86_400)
        #expect(c.signingKey.isEmpty)
    }

    @Test("The file sets keys (YAML and JSON); the environment overrides the file")
    func fileThenEnvironment() throws {
        let (dir, path) = try write("http:\n  port: 9000\ncache:\n  max_bytes: 500MB\ns3:\n  path_style: true\n")
        defer { dir.remove() }
        var c = try Configuration.load(file: path, environment: [:])
        #expect(c.httpPort == 9000 && c.cacheMaxBytes == 500 << 20 && c.s3PathStyle)
        c = try Configuration.load(file: path, environment: ["CLIPPROXY_HTTP_PORT": "9100", "CLIPPROXY_CACHE_MAX_BYTES": "1GiB"])
        #expect(c.httpPort == 9100 && c.cacheMaxBytes == 1 << 30)
        let (jdir, json) = try write(#"{"catalog": {"kind": "mongo"}, "mongo": {"database": "x"}}"#, "c.json")
        defer { jdir.remove() }
        c = try Configuration.load(file: json, environment: [:])
        #expect(c.catalogKind == "mongo" && c.mongoDatabase == "x")
    }

    @Test("clipstore.dir (renamed second_tier.dir) still works, with a warning; the new name wins")
    func renamedKey() throws {
        let (dir, file) = try write("clipstore:\n  dir: /srv/old-l2\n")
        defer { dir.remove() }
        let fromFile = try Configuration.load(file: file, environment: [:])
        #expect(fromFile.secondTierDir == "/srv/old-l2")
        #expect(fromFile.warnings == ["\(file): clipstore.dir is deprecated; rename it to second_tier.dir"])
        let (both, bothFile) = try write("clipstore:\n  dir: /srv/old\nsecond_tier:\n  dir: /srv/new\n")
        defer { both.remove() }
        let bothGiven = try Configuration.load(file: bothFile, environment: [:])
        #expect(bothGiven.secondTierDir == "/srv/new")
        #expect(bothGiven.warnings == ["\(bothFile): clipstore.dir is ignored: second_tier.dir is set too; remove clipstore.dir"])

        let fromEnvironment = try Configuration.load(file: nil, environment: ["CLIPPROXY_CLIPSTORE_DIR": "/srv/env-old"])
        #expect(fromEnvironment.secondTierDir == "/srv/env-old")
        #expect(fromEnvironment.warnings == ["CLIPPROXY_CLIPSTORE_DIR is deprecated; use CLIPPROXY_SECOND_TIER_DIR"])
        let newWins = try Configuration.load(file: nil, environment: ["CLIPPROXY_CLIPSTORE_DIR": "/a", "CLIPPROXY_SECOND_TIER_DIR": "/b"])
        #expect(newWins.secondTierDir == "/b")
        #expect(newWins.warnings == ["CLIPPROXY_CLIPSTORE_DIR is ignored: CLIPPROXY_SECOND_TIER_DIR is set too; unset it"])
        #expect(try Configuration.load(file: nil, environment: [:]).warnings.isEmpty)
    }

    @Test("http.fast_path_wire (removed) is accepted from the file or the environment with a warning, and changes nothing")
    func removedKey() throws {
        let (dir, file) = try write("http:\n  fast_path_wire: false\n  port: 9000\n")
        defer { dir.remove() }
        let fromFile = try Configuration.load(file: file, environment: [:])
        #expect(fromFile.httpPort == 9000 && fromFile.httpFastPath)
        #expect(fromFile.warnings == ["\(file): http.fast_path_wire does nothing any more (every request goes through the HTTP/1 parser); remove it"])
        let fromEnvironment = try Configuration.load(file: nil, environment: ["CLIPPROXY_HTTP_FAST_PATH_WIRE": "true"])
        #expect(fromEnvironment.warnings == ["CLIPPROXY_HTTP_FAST_PATH_WIRE does nothing any more (every request goes through the HTTP/1 parser); unset it"])
        #expect(fromEnvironment == (try Configuration.load(file: nil, environment: [:])).with(warnings: fromEnvironment.warnings))
    }

    @Test("Mistakes name the key and what is wrong", arguments: [
        ("cache:\n  max_byte: 5\n", "did you mean cache.max_bytes"),
        ("http:\n  port: 70000\n", "http.port must be an integer"),
        ("catalog:\n  kind: postgres\n", "catalog.kind must be one of file, mongo"),
        ("s3:\n  path_style: maybe\n", "s3.path_style must be true or false"),
        ("clips:\n  default_duration_ms: 90000\n", "exceeds clips.max_duration_ms"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("http: [unclosed\n", "not valid YAML"),
    ])
    func errors(_ text: String, _ message: String) throws {
        let (dir, path) = try write(text)
        defer { dir.remove() }
        let error = #expect(throws: ConfigurationError.self) { try Configuration.load(file: path, environment: [:]) }
        #expect(error?.description.contains(message) == true, "\(error?.description ?? "no error")")
    }

    @Test("conf/clipproxy.yaml loads and documents every key with its environment variable")
    func exampleDocumentsEveryKey() throws {
        let path = RepoPaths.root.appendingPathComponent("conf/clipproxy.yaml").path
        let c = try Configuration.load(file: path, environment: [:])
        #expect(c == (try Configuration.load(file: nil, environment: [:])), "the example shows the defaults")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let documented = try Configuration.flatten(text, file: path)
        for key in Configuration.keys {
            #expect(documented[key.name] != nil, "\(key.name) is not in conf/clipproxy.yaml")
            #expect(text.contains(key.environmentVariable), "\(key.environmentVariable) is not mentioned")
        }
    }
}

extension Configuration {
    func with(warnings: [String]) -> Configuration {
        var copy = self
        copy.warnings = warnings
        return copy
    }
}
