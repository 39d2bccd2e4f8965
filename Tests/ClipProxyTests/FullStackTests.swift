import Foundation
import Testing
import Support
import TestSupport
@testable import Upstream

/// clipproxy against the real protocols: MongoDB (wire server) for the catalog, S3 (moto) for the
/// source bucket. Secrets are recognisable so the logs can be searched for them.
@Suite("Full stack: MongoDB catalog + S3 source bucket")
struct FullStackTests {
    static let secret = "SECRETdoNotLog0123456789abcdef"
    static let token = "TOKENdoNotLog9876543210"
    static let sourceBucket = "pod-insights-sources"

    struct Episode: Decodable { let _id: String; let guid: String; let feed_slug: String; let source_key: String? }

    /// Uploads every fixture episode's source object into moto's source bucket.
    static func seedBucket(_ s3: TestServer) throws -> [Episode] {
        let client = try S3Client(configuration: S3Configuration(endpoint: URL(string: s3.endpoint)!, region: "eu-west-2", pathStyle: true),
                                  credentials: AWSCredentials(accessKeyId: "AKIDTEST", secretAccessKey: secret, sessionToken: token))
        _ = try client.createBucket(sourceBucket)
        let episodes = try JSONDecoder().decode([Episode].self, from: Data(contentsOf: Fixtures.directory.appendingPathComponent("episodes.json")))
        for episode in episodes {
            guard let key = episode.source_key else { continue }
            _ = try client.putObject(bucket: sourceBucket, key: key, fileAt: Fixtures.directory.appendingPathComponent("source/\(key)").path,
                                     contentType: "audio/mpeg")
            // A decoy next to it that must never be chosen.
            _ = try client.putObject(bucket: sourceBucket, key: (key as NSString).deletingLastPathComponent + "/notes_audio.txt", body: [1, 2, 3])
        }
        return episodes
    }

    static func environment(s3: TestServer, mongo: TestServer, work: TemporaryDirectory) -> [String: String] {
        [
            "CLIPPROXY_CATALOG_KIND": "mongo", "CLIPPROXY_MONGO_URI": "mongodb://127.0.0.1:\(mongo.port)/?retryReads=false",
            "CLIPPROXY_MONGO_DATABASE": "podcast_insights",
            "CLIPPROXY_SOURCE_KIND": "s3", "CLIPPROXY_S3_ENDPOINT": s3.endpoint, "CLIPPROXY_S3_PATH_STYLE": "true",
            "CLIPPROXY_S3_SOURCE_BUCKET": sourceBucket,
            "CLIPPROXY_CACHE_DIR": work.path + "/cache", "CLIPPROXY_CLIPSTORE_DIR": work.path + "/l2",
            "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        ]
    }

    @Test("resolve finds every episode's source object in S3 through the MongoDB catalog; serve cuts it; no secret is logged")
    func resolveAndServe() async throws {
        let work = try TemporaryDirectory("fullstack")
        defer { work.remove() }
        try await withTestServer(try TestServer.s3()) { s3 in
            try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
                let episodes = try Self.seedBucket(s3)
                let environment = ProcessInfo.processInfo.environment.merging(Self.environment(s3: s3, mongo: mongo, work: work)) { $1 }
                var logs = ""
                for episode in episodes {
                    for id in [episode._id, episode.guid] {
                        let result = try runClipProxy(["resolve", id], environment: environment)
                        logs += result.stdout + result.stderr
                        if let key = episode.source_key {
                            #expect(result.status == 0, "\(id): \(result.stderr)")
                            let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
                            #expect(json?["source_key"] as? String == key)
                            #expect(json?["guid"] as? String == episode.guid && json?["feed_slug"] as? String == episode.feed_slug)
                            let bytes = try Data(contentsOf: Fixtures.directory.appendingPathComponent("source/\(key)"))
                            #expect(json?["etag"] as? String == Digest.md5Hex([UInt8](bytes)), "the S3 ETag is recorded")
                        } else {
                            #expect(result.status != 0 && result.stderr.contains("no source audio"), "\(id): \(result.stderr)")
                        }
                    }
                }

                let server = try ClipProxyProcess(environment: Self.environment(s3: s3, mongo: mongo, work: work))
                let expected = try trimmed(ServerTests.sourceKey, startMs: 31_000)
                let url = "\(server.baseURL)/clips/\(ServerTests.episode)/31000"
                let cold = try fetch(url)
                #expect(cold.status == 200 && cold.headers["x-clip-tier"] == "fill")
                #expect(cold.headers["content-length"] == String(expected.count))
                #expect(sameBytes(cold.body, expected), "a clip cut from S3 equals clipproxy trim on the file")
                let warm = try fetch(url)
                #expect(warm.headers["x-clip-tier"] == "l1_hit" && sameBytes(warm.body, expected))
                let missing = try fetch("\(server.baseURL)/clips/685ba776e4f9ec2f07562680/0")
                #expect(missing.status == 404)
                server.stop()
                logs += server.log
                #expect(logs.contains("fill started"), "the server's log was captured")
                #expect(!logs.contains(Self.secret), "the secret key appears in the logs")
                #expect(!logs.contains(Self.token), "the session token appears in the logs")
            }
        }
    }

    @Test("s3 presign reproduces the S3 documentation's example")
    func presignExample() throws {
        var environment = ProcessInfo.processInfo.environment
        environment["AWS_ACCESS_KEY_ID"] = "AKIAIOSFODNN7EXAMPLE"
        environment["AWS_SECRET_ACCESS_KEY"] = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        environment["AWS_SESSION_TOKEN"] = nil
        environment["CLIPPROXY_S3_ENDPOINT"] = "https://s3.amazonaws.com"
        environment["CLIPPROXY_S3_REGION"] = "us-east-1"
        let result = try runClipProxy(["s3", "presign", "s3://examplebucket/test.txt", "--expires", "86400", "--now", "2013-05-24T00:00:00Z"],
                                      environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("https://examplebucket.s3.amazonaws.com/test.txt?"))
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            .hasSuffix("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"))
        let tooLong = try runClipProxy(["s3", "presign", "s3://examplebucket/test.txt", "--expires", "604801"], environment: environment)
        #expect(tooLong.status != 0)
        let noCredentials = try runClipProxy(["s3", "presign", "s3://b/k"], environment: ["HOME": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"])
        #expect(noCredentials.status != 0 && noCredentials.stderr.contains("AWS_ACCESS_KEY_ID"), "\(noCredentials.stderr)")
    }
}
