import Foundation
import Testing
import TestSupport

/// Checks the routes of a clip's documents (`.vtt` captions, `.json` peaks) share with the clip.

/// The clip's own problems, asked of the document with `suffix`: unknown episodes, a window past
/// the end, a bad start or duration.
func clipDocumentProblems(_ suffix: String) -> [(path: String, status: Int, error: String)] {
    [
        ("/clips/ffffffffffffffffffffffff/0\(suffix)", 404, "not_found"),
        ("/clips/no-such-guid/0\(suffix)", 404, "not_found"),
        ("/clips/685ba776e4f9ec2f0756267a/900000\(suffix)", 422, "window_outside_episode"),
        ("/clips/685ba776e4f9ec2f0756267a/abc\(suffix)", 400, "invalid_start_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/5.mp3\(suffix)", 400, "invalid_start_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/\(suffix)", 400, "invalid_start_ms"),
        ("/clips/685ba776e4f9ec2f0756267a/0\(suffix)?duration_ms=0", 400, "invalid_duration_ms"),
    ]
}

/// Each path gets its JSON problem (status and error code) with `Cache-Control: no-store` and CORS.
func expectClipProblems(_ baseURL: String, _ errors: [(path: String, status: Int, error: String)]) throws {
    for (path, status, error) in errors {
        let response = try fetch(baseURL + path)
        #expect(response.status == status, "\(path): \(String(decoding: response.body, as: UTF8.self))")
        #expect(response.headers["content-type"] == "application/json" && response.headers["cache-control"] == "no-store", "\(path)")
        #expect(response.headers["access-control-allow-origin"] == "*", "\(path)")
        let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: String]
        #expect(json?["error"] == error, "\(path)")
    }
}

/// A CORS preflight of `url` answers as the clip's does.
func expectClipPreflight(_ url: String) throws {
    let preflight = try fetch(url, method: "OPTIONS", headers: [("Origin", "https://dash.example.com"), ("Access-Control-Request-Method", "GET")])
    #expect(preflight.status == 204 && preflight.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS")
}

/// `clipproxy sign PATH --expires-in 600` under `environment` (which holds the signing key).
func signedPath(_ path: String, environment: [String: String]) throws -> String {
    let run = try runClipProxy(["sign", path, "--expires-in", "600"], environment: environment)
    #expect(run.status == 0, "\(run.stderr)")
    return run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// `count` GETs of `url` at the same time (curl's own parallel mode), their bodies in order.
func parallelGets(_ url: String, count: Int, in directory: String) throws -> [[UInt8]] {
    var arguments = ["--silent", "--parallel", "--parallel-immediate", "--parallel-max", String(count)]
    for i in 0..<count { arguments += ["-o", "\(directory)/parallel\(i).out", url] }
    let result = try FFmpegOracle.run("/usr/bin/curl", arguments)
    #expect(result.status == 0, "\(result.stderr)")
    return try (0..<count).map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(directory)/parallel\($0).out"))) }
}

/// A document's strong ETag at work: If-None-Match gives 304 (with the clip's Cache-Control),
/// another tag 200, If-Match a mismatch 412 and the tag 200. Returns the tag.
func expectEntityTagConditionals(_ url: String) throws -> String {
    let first = try fetch(url)
    let etag = try #require(first.headers["etag"])
    let notModified = try fetch(url, headers: [("If-None-Match", etag)])
    #expect(notModified.status == 304 && notModified.body.isEmpty && notModified.headers["etag"] == etag)
    #expect(notModified.headers["cache-control"] == "public, max-age=31536000, immutable")
    let other = try fetch(url, headers: [("If-None-Match", "\"0123456789abcdef-0123456789abcdef\"")])
    #expect(other.status == 200 && other.body == first.body)
    #expect(try fetch(url, headers: [("If-Match", "\"nope\"")]).status == 412)
    #expect(try fetch(url, headers: [("If-Match", etag)]).status == 200)
    return etag
}
