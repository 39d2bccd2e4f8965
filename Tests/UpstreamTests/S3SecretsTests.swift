import Foundation
import Testing
import TestSupport
@testable import Upstream

/// No secret in any log line or error: a full sequence of operations, with retries, resumed reads
/// and failures of every kind, and everything the client said collected and searched.
@Suite("S3 client: secrets never leak into logs or errors")
struct S3SecretsTests {
    static let secret = "SeCrEt/Key+ThatMustNeverLeak0123456789abcd"
    static let token = "ToKeN//that+must=never&leak-0123456789=="

    /// Every way the secret or token could appear: raw, URL-encoded, and a long piece of each.
    static var needles: [String] {
        [secret, token, S3URI.encode(secret, keepSlash: false), S3URI.encode(token, keepSlash: false),
         String(secret.prefix(16)), String(token.prefix(16))]
    }

    @Test("Logs, error descriptions, dumps and descriptions of a full session contain neither secret nor token")
    func noSecretsAnywhere() async throws {
        let credentials = AWSCredentials(accessKeyId: "AKIDSECRETSTEST", secretAccessKey: Self.secret, sessionToken: Self.token)
        let object = S3Test.payload(400_000, seed: 71)
        try await withTestServer(try TestServer.s3()) { moto in
            try await withTestServer(try TestServer.faultProxy(target: moto)) { proxy in
                let log = LogCapture()
                let retry = S3RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20))
                let client = try S3Test.client(proxy, credentials: credentials, retry: retry,
                                               timeouts: TransferTimeouts(connect: .seconds(2), lowSpeedBytes: 1, lowSpeedWindow: .seconds(1)),
                                               log: log)
                var texts: [String] = ["\(client)", String(reflecting: client), "\(credentials)", String(reflecting: credentials)]
                var dumped = ""
                dump(credentials, to: &dumped)
                dump(try client.signer(), to: &dumped)
                dump(client.credentials, to: &dumped)
                texts.append(dumped)
                func capture(_ body: () throws -> Void) {
                    do { try body() } catch {
                        texts.append("\(error)")
                        texts.append(String(reflecting: error))
                        var out = ""
                        dump(error, to: &out)
                        texts.append(out)
                    }
                }

                // Successes, some after retries and resumed reads.
                try S3FaultTests.setPlan(proxy, ["503", "pass", "slowdown", "pass", "reset:100000", "stall:50000", "pass"])
                try client.createBucket("secrets")
                try client.putObject(bucket: "secrets", key: "episode.mp3", body: object)
                var read = S3Test.Read()
                try S3Test.read(client, "secrets", "episode.mp3", into: &read)
                #expect(sameBytes(read.bytes, object))
                #expect(try client.listObjectsV2(bucket: "secrets").count == 1)

                // Failures of every kind.
                capture { _ = try client.headObject(bucket: "secrets", key: "missing") }
                capture { try client.getObject(bucket: "secrets", key: "missing") { _ in } }
                capture { _ = try client.listObjectsV2(bucket: "no-such-bucket") }
                capture { _ = try client.presignedGetURL(bucket: "secrets", key: "k", expires: 0) }
                capture { try client.putObject(bucket: "secrets", key: "k", fileAt: "/nonexistent/file") }
                try S3FaultTests.setPlan(proxy, [], defaultMode: "500")
                capture { _ = try client.headObject(bucket: "secrets", key: "episode.mp3") }
                try S3FaultTests.setPlan(proxy, [], defaultMode: "reset:1000")
                capture { try client.getObject(bucket: "secrets", key: "episode.mp3") { _ in } }
                try S3FaultTests.setPlan(proxy, [], defaultMode: "close")
                capture { try client.putObject(bucket: "secrets", key: "k", body: [1, 2, 3]) }
                let closed = try S3Test.client(endpoint: "http://127.0.0.1:\(try freeLoopbackPort())", credentials: credentials, retry: retry, log: log)
                capture { _ = try closed.headObject(bucket: "secrets", key: "k") }
                capture { _ = try AWSCredentialsProvider(environment: ["AWS_SECRET_ACCESS_KEY": Self.secret, "AWS_SESSION_TOKEN": Self.token]).resolve() }
                capture { _ = try AWSCredentialsProvider(environment: ["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds",
                                                                       "AWS_CONTAINER_AUTHORIZATION_TOKEN": Self.token]).resolve() }

                // The pre-signed URL must carry the token (that is how it works); it is never logged.
                let presigned = try client.presignedGetURL(bucket: "secrets", key: "episode.mp3", expires: 60)
                #expect(presigned.contains("X-Amz-Security-Token=" + S3URI.encode(Self.token, keepSlash: false)))

                let records = log.all
                texts += records.map(\.description)
                #expect(records.contains { $0.message == "s3 request retrying" }, "the sequence did exercise retries")
                #expect(records.contains { $0.message == "s3 get resuming" }, "and resumed reads")
                #expect(records.contains { $0.message == "s3 request failed" })
                #expect(texts.count > 40)
                for text in texts {
                    for needle in Self.needles {
                        #expect(!text.contains(needle), "leak of a secret in: \(text.prefix(300))")
                    }
                    for marker in ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Authorization", "Signature="] {
                        #expect(!text.contains(marker), "\(marker) in: \(text.prefix(300))")
                    }
                }
            }
        }
    }

    @Test("S3's own error messages are scrubbed of the secret and token before they reach an error or a log")
    func scrubbing() throws {
        let credentials = AWSCredentials(accessKeyId: "AKID", secretAccessKey: Self.secret, sessionToken: Self.token)
        let client = try S3Client(configuration: S3Configuration(endpoint: URL(string: "http://127.0.0.1:9")!), credentials: credentials)
        let echoed = "StringToSign had \(Self.token) and key \(Self.secret)"
        let clean = client.scrub(echoed)
        #expect(!clean.contains(Self.secret) && !clean.contains(Self.token))
        #expect(clean == "StringToSign had <redacted> and key <redacted>")
    }
}
