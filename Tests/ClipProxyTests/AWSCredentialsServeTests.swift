import Foundation
import Testing
import TestSupport
@testable import Upstream

/// `clipproxy serve` deployed as on EC2: no keys anywhere, credentials from instance metadata
/// (IMDSv2) that expire quickly, S3 (moto) checking every signature and refusing expired sessions.
@Suite("Serving with instance-role credentials that expire", .serialized)
struct AWSCredentialsServeTests {
    @Test("Starts without keys, serves and uploads a cold clip; IMDS down while valid: served; past expiry: 503 source_unavailable; IMDS back: served")
    func instanceRoleLifecycle() async throws {
        let work = try TemporaryDirectory("instance-role")
        defer { work.remove() }
        let moto = try AuthenticatingS3.start()
        defer { moto.server.stop() }
        let seeding = try Self.seed(moto)
        let lifetime = 24
        var imds = try moto.credentialsServer(duration: lifetime)
        let imdsPort = imds.port

        try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
            let environment = Self.environment(moto: moto, mongo: mongo, work: work, imds: imds)
            let server = try ClipProxyProcess(environment: environment)
            defer { server.stop() }
            #expect(!server.log.contains("aws credentials resolved"), "nothing resolved before the first request")

            // A cold clip: resolved (S3 listing), cut from S3, uploaded to the clip bucket.
            let expected = try trimmed(ServerTests.sourceKey, startMs: 7_000)
            let cold = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/7000")
            #expect(cold.status == 200 && cold.headers["x-clip-tier"] == "fill" && sameBytes(cold.body, expected))
            var uploaded: S3ObjectHead?
            for _ in 0..<50 where uploaded == nil {
                uploaded = try? seeding.headObject(bucket: ClipBucketTests.clipBucket,
                                                   key: "the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/7000-37000.mp3")
                if uploaded == nil { usleep(100_000) }
            }
            #expect(uploaded?.size == Int64(expected.count), "the clip was uploaded with the instance role's credentials")
            #expect(server.waitForLog("aws credentials resolved"))
            #expect(server.log.contains("instance_metadata"))
            let issuedAt = Date()
            #expect(try imdsStats(imds)["v1_attempts"] == 0)

            // IMDS down while the credentials are valid (they stop being used a quarter of their
            // lifetime, at most 10 s, before they end).
            imds.stop()
            let stillValid = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/40000")
            #expect(stillValid.status == 200, "served while the credentials are valid: \(String(decoding: stillValid.body, as: UTF8.self))")

            // Past expiry: a clear 503 and the cause in the log.
            let unusableAt = issuedAt.addingTimeInterval(Double(lifetime) * 3 / 4 + 1)
            try await Task.sleep(for: .milliseconds(Int(max(0, unusableAt.timeIntervalSinceNow) * 1000)))
            let refused = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/70000")
            let problem = try JSONSerialization.jsonObject(with: Data(refused.body)) as? [String: Any]
            #expect(refused.status == 503, "\(String(decoding: refused.body, as: UTF8.self))")
            #expect(problem?["error"] as? String == "source_unavailable")
            #expect(refused.headers["retry-after"] != nil)
            #expect(server.log.contains("aws credentials refresh failed"))
            #expect(server.log.contains("instance metadata \(imds.endpoint)"), "the log names the source that failed")
            let metrics = String(decoding: try fetch("\(server.baseURL)/metrics").body, as: UTF8.self)
            let failures = metrics.split(separator: "\n").first { $0.hasPrefix("clipproxy_aws_credentials_failures_total ") }
            #expect(failures.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 1 } == true, "\(metrics)")
            let expiry = metrics.split(separator: "\n").first { $0.hasPrefix("clipproxy_aws_credentials_expiry_timestamp_seconds ") }
            let expirySeconds = expiry.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            #expect(abs(expirySeconds - issuedAt.timeIntervalSince1970 - Double(lifetime)) < 5, "the gauge holds the expiry: \(String(describing: expiry))")

            // IMDS back: served again by the same process.
            imds = try moto.credentialsServer(duration: lifetime, port: imdsPort)
            defer { imds.stop() }
            var recovered: Int?
            for _ in 0..<20 where recovered != 200 {
                recovered = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/70000").status
                if recovered != 200 { try await Task.sleep(for: .milliseconds(500)) }
            }
            #expect(recovered == 200, "recovered without a restart")
            #expect(!server.log.contains(moto.userSecret))
        }
    }

    /// The platform sources besides the instance role, each through a whole `clipproxy serve`.
    enum Source: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case webIdentity, container, assumedRoleProfile, credentialProcess
        var testDescription: String { rawValue }
    }

    @Test("Each platform source (web identity, container endpoint, a profile's assumed role, credential_process) serves a cold clip and uploads it, moto checking every signature",
          arguments: Source.allCases)
    func eachSourceServes(_ source: Source) async throws {
        let work = try TemporaryDirectory("source-\(source.rawValue)")
        defer { work.remove() }
        let moto = try AuthenticatingS3.start()
        defer { moto.server.stop() }
        let seeding = try Self.seed(moto)
        let endpoint = try moto.credentialsServer(duration: 900)
        defer { endpoint.stop() }
        try await withTestServer(try TestServer.mongo(dataDirectory: Fixtures.directory.appendingPathComponent("catalog"))) { mongo in
            var environment = Self.environment(moto: moto, mongo: mongo, work: work, imds: endpoint)
            environment["AWS_EC2_METADATA_DISABLED"] = "true"  // only the source under test can answer
            environment["AWS_ENDPOINT_URL_STS"] = moto.endpoint
            switch source {
            case .webIdentity:
                let token = work.path + "/token"
                try AuthenticatingS3.webIdentityToken.write(toFile: token, atomically: true, encoding: .utf8)
                environment["AWS_WEB_IDENTITY_TOKEN_FILE"] = token
                environment["AWS_ROLE_ARN"] = moto.roleArn
            case .container:
                environment["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = endpoint.endpoint + "/v2/credentials/task-1"
                environment["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = AuthenticatingS3.containerToken
            case .assumedRoleProfile:
                try "[deployer]\naws_access_key_id = \(moto.userKeyId)\naws_secret_access_key = \(moto.userSecret)\n"
                    .write(toFile: work.path + "/credentials", atomically: true, encoding: .utf8)
                try "[profile clips]\nrole_arn = \(moto.roleArn)\nsource_profile = deployer\n"
                    .write(toFile: work.path + "/config", atomically: true, encoding: .utf8)
                environment["AWS_SHARED_CREDENTIALS_FILE"] = work.path + "/credentials"
                environment["AWS_CONFIG_FILE"] = work.path + "/config"
                environment["AWS_PROFILE"] = "clips"
            case .credentialProcess:
                let document = #"{"Version": 1, "AccessKeyId": "\#(moto.userKeyId)", "SecretAccessKey": "\#(moto.userSecret)"}"#
                try "#!/bin/sh\ncat <<'EOF'\n\(document)\nEOF\n".write(toFile: work.path + "/helper.sh", atomically: true, encoding: .utf8)
                chmod(work.path + "/helper.sh", 0o755)
                try "[profile helper]\ncredential_process = \(work.path)/helper.sh\n".write(toFile: work.path + "/config", atomically: true, encoding: .utf8)
                environment["AWS_CONFIG_FILE"] = work.path + "/config"
                environment["AWS_PROFILE"] = "helper"
            }
            let server = try ClipProxyProcess(environment: environment)
            defer { server.stop() }
            let expected = try trimmed(ServerTests.sourceKey, startMs: 7_000)
            let cold = try fetch("\(server.baseURL)/clips/\(ServerTests.episode)/7000")
            #expect(cold.status == 200 && cold.headers["x-clip-tier"] == "fill" && sameBytes(cold.body, expected),
                    "\(source): \(cold.status) \(cold.body.count < 1000 ? String(decoding: cold.body, as: UTF8.self) : "")\n\(server.log.suffix(2000))")
            #expect(server.waitForLog("second tier copy finished", timeout: 30), "\(source): no upload\n\(server.log.suffix(2000))")
            let uploaded = try? seeding.headObject(bucket: ClipBucketTests.clipBucket,
                                                   key: "the-daily-tones/0e983347-7815-4b33-8a7e-2b1c9f0e1a11/7000-37000.mp3")
            #expect(uploaded?.size == Int64(expected.count), "\(source): the clip is not in the clip bucket")
            #expect(server.log.contains("aws credentials resolved"), "\(source)")
            #expect(!server.log.contains(moto.userSecret), "\(source): a secret in the log")
        }
    }

    /// The source bucket with the test episode and an empty clip bucket, made with the IAM
    /// user's key; the returned client reads the clip bucket.
    static func seed(_ moto: AuthenticatingS3) throws -> S3Client {
        let seeding = try S3Client(configuration: S3Configuration(endpoint: URL(string: moto.endpoint)!, region: "eu-west-2", pathStyle: true),
                                   credentials: AWSCredentials(accessKeyId: moto.userKeyId, secretAccessKey: moto.userSecret))
        try seeding.createBucket(FullStackTests.sourceBucket)
        try seeding.createBucket(ClipBucketTests.clipBucket)
        try seeding.putObject(bucket: FullStackTests.sourceBucket, key: ServerTests.sourceKey,
                              fileAt: Fixtures.directory.appendingPathComponent("source/\(ServerTests.sourceKey)").path, contentType: "audio/mpeg")
        return seeding
    }

    /// `serve` with S3 at moto and no credentials but the instance role's.
    static func environment(moto: AuthenticatingS3, mongo: TestServer, work: TemporaryDirectory, imds: TestServer) -> [String: String] {
        var environment = FullStackTests.environment(s3: moto.server, mongo: mongo, work: work)
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                     "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] {
            environment[name] = ""  // empty counts as unset, and hides the test runner's own
        }
        environment["AWS_CONFIG_FILE"] = "/nonexistent"
        environment["AWS_EC2_METADATA_DISABLED"] = "false"
        environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.endpoint
        return environment
    }

    private func imdsStats(_ server: TestServer) throws -> [String: Int] {
        let answer = try fetch(server.endpoint + "/__control/stats")
        return (try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Int]) ?? [:]
    }
}
