import Foundation
import Testing
import TestSupport
@testable import Upstream

/// Our pre-signed URLs against botocore's (scripts/botocore_presign.py, boto3 from the repo's
/// venv) for the same inputs and a frozen clock.
@Suite("S3 pre-signed URLs match botocore")
struct S3PresignTests {
    static let keys = [
        "plain.mp3", "with space.mp3", "a+b.mp3", "a=b", "a&b", "100%.mp3", "a%20b", "time:12:30",
        "(parens)", "tilde~key", "bang!", "star*", "quote's", "café/é.mp3", "日本/語.mp3", "double//slash",
        "trailing/", "/leading", "a/./b/../c", "semi;colon,comma", "hash#frag?query=1", "emoji 🎧.mp3",
        "brackets[]{}|\\^`\"<>", "@$", "feed-slug/0e983347-1234/audio/20240101_0e983347_audio.mp3",
    ]

    struct Case: Encodable {
        let bucket: String
        let key: String
        let endpoint: String
        let addressingStyle: String
        let region: String
        let expires: Int
        let now: Int
        let accessKey: String
        let secretKey: String
        let sessionToken: String?

        enum CodingKeys: String, CodingKey {
            case bucket, key, endpoint, region, expires, now
            case addressingStyle = "addressing_style"
            case accessKey = "access_key"
            case secretKey = "secret_key"
            case sessionToken = "session_token"
        }
    }

    static func cases() -> [Case] {
        let endpoints: [(endpoint: String, style: String, region: String)] = [
            ("https://s3.eu-west-2.amazonaws.com", "virtual", "eu-west-2"),
            ("https://s3.eu-west-2.amazonaws.com", "path", "eu-west-2"),
            ("http://127.0.0.1:9000", "path", "us-east-1"),
            ("http://localhost:4566", "virtual", "eu-west-2"),
        ]
        let clocks = [1_700_000_000, 1_369_353_600, 1_735_689_599]
        let expiries = [1, 3600, 86_400, 604_800]
        var cases: [Case] = []
        for (i, key) in keys.enumerated() {
            for (j, endpoint) in endpoints.enumerated() {
                for token in [nil, "FwoGZXIvYXdzE+token/with=odd&chars"] as [String?] {
                    cases.append(Case(bucket: "pod-insights-clips", key: key, endpoint: endpoint.endpoint,
                                      addressingStyle: endpoint.style, region: endpoint.region,
                                      expires: expiries[(i + j) % expiries.count], now: clocks[(i + j) % clocks.count],
                                      accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                      sessionToken: token))
                }
            }
        }
        return cases
    }

    /// A URL taken apart for comparison: query parameters as a set of raw `name=value` strings.
    struct Parts: Equatable, CustomStringConvertible {
        let origin: String
        let path: String
        let query: Set<String>
        let signature: String?

        init(_ url: String) {
            let (beforeQuery, query) = url.firstIndex(of: "?").map { (String(url[..<$0]), String(url[url.index(after: $0)...])) } ?? (url, "")
            let afterScheme = beforeQuery.range(of: "://").map { beforeQuery[$0.upperBound...] } ?? Substring(beforeQuery)
            let slash = afterScheme.firstIndex(of: "/") ?? afterScheme.endIndex
            origin = String(beforeQuery[..<slash])
            path = String(afterScheme[slash...])
            self.query = Set(query.split(separator: "&").map(String.init))
            signature = self.query.first { $0.hasPrefix("X-Amz-Signature=") }.map { String($0.dropFirst(16)) }
        }

        var description: String { "\(origin) \(path) \(query.sorted())" }
    }

    @Test("25 awkward keys x 4 endpoints and addressing styles x with and without a session token: same URL and signature")
    func matchesBotocore() throws {
        let cases = Self.cases()
        #expect(cases.count == Self.keys.count * 8)
        let directory = try TemporaryDirectory("presign")
        defer { directory.remove() }
        let input = directory.url.appendingPathComponent("cases.json")
        try JSONEncoder().encode(cases).write(to: input)
        let result = try FFmpegOracle.run(RepoPaths.python.path, [RepoPaths.scripts.appendingPathComponent("botocore_presign.py").path, input.path])
        try #require(result.status == 0, "botocore_presign.py failed: \(result.stderr)")
        let expected = try JSONDecoder().decode([String].self, from: result.stdout)
        try #require(expected.count == cases.count)

        var signaturesCompared = 0
        for (c, botocoreURL) in zip(cases, expected) {
            let configuration = S3Configuration(endpoint: URL(string: c.endpoint)!, region: c.region, pathStyle: c.addressingStyle == "path")
            let client = try S3Client(configuration: configuration, credentials: AWSCredentials(
                accessKeyId: c.accessKey, secretAccessKey: c.secretKey, sessionToken: c.sessionToken))
            let ours = try client.presignedGetURL(bucket: c.bucket, key: c.key, expires: c.expires,
                                                  now: Date(timeIntervalSince1970: TimeInterval(c.now)))
            let a = Parts(ours), b = Parts(botocoreURL)
            let label = "\(c.key) \(c.addressingStyle) \(c.endpoint) token=\(c.sessionToken != nil)"
            #expect(a.origin == b.origin, "\(label)")
            #expect(a.path == b.path, "\(label)")
            #expect(a.query == b.query, "\(label)\nours:     \(a)\nbotocore: \(b)")
            #expect(a.signature != nil && a.signature == b.signature, "\(label)")
            if a.signature != nil && a.signature == b.signature { signaturesCompared += 1 }
        }
        #expect(signaturesCompared == cases.count)
    }
}
