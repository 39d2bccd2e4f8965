import Foundation
import Support
import Testing
import TestSupport
@testable import Upstream

/// moto enforcing signatures. What works with moto 5.2.5 here: start it normally (no auth), create
/// an IAM user with an S3 policy and an access key through moto's IAM API, then
/// `POST /moto-api/reset-auth` with body `0`: from then on every request must be signed with that
/// key. (moto would crash on pre-signed URLs in this mode, so none are tested here.)
@Suite("S3 client against moto with authentication enforced")
struct S3AuthTests {
    /// An IAM query-API call to moto, signed for service `iam` (moto routes by the credential scope).
    static func iam(_ moto: TestServer, _ parameters: [(String, String)]) throws -> S3XMLElement {
        let body = Array((parameters + [("Version", "2010-05-08")])
            .map { "\(S3URI.encode($0.0, keepSlash: false))=\(S3URI.encode($0.1, keepSlash: false))" }
            .joined(separator: "&").utf8)
        let signer = SigV4Signer(credentials: S3Test.credentials, region: "us-east-1", service: "iam")
        var headers: [(name: String, value: String)] = [("Host", "127.0.0.1:\(moto.port)"),
                                                        ("Content-Type", "application/x-www-form-urlencoded")]
        headers += signer.signedHeaders(method: "POST", path: "/", headers: headers,
                                        payloadHash: Digest.sha256(body).hexString, date: Date())
        var response: [UInt8] = []
        let head = try CurlTransfer().perform(HTTPRequest(method: "POST", url: moto.endpoint + "/", headers: headers, body: body)) { chunk in
            response.append(contentsOf: chunk)
            return true
        }
        guard head.status == 200, let root = S3XML.parse(response) else {
            throw TestSetupError("IAM \(parameters.first?.1 ?? ""): HTTP \(head.status) \(String(decoding: response, as: UTF8.self))")
        }
        return root
    }

    /// Creates a user allowed `s3:*` and returns a fresh access key for it, then turns
    /// authentication on.
    static func enforceAuth(_ moto: TestServer) throws -> AWSCredentials {
        _ = try iam(moto, [("Action", "CreateUser"), ("UserName", "clipproxy")])
        let policy = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#
        _ = try iam(moto, [("Action", "PutUserPolicy"), ("UserName", "clipproxy"), ("PolicyName", "s3-all"),
                           ("PolicyDocument", policy)])
        let created = try iam(moto, [("Action", "CreateAccessKey"), ("UserName", "clipproxy")])
        guard let key = created.child("CreateAccessKeyResult")?.child("AccessKey"),
              let id = key.childText("AccessKeyId"), let secret = key.childText("SecretAccessKey") else {
            throw TestSetupError("CreateAccessKey: no key in the response")
        }
        let head = try CurlTransfer().perform(HTTPRequest(method: "POST", url: moto.endpoint + "/moto-api/reset-auth",
                                                          body: Array("0".utf8))) { _ in true }
        guard head.status == 200 else { throw TestSetupError("reset-auth: HTTP \(head.status)") }
        return AWSCredentials(accessKeyId: id, secretAccessKey: secret)
    }

    @Test("Right secret: every operation accepted. Wrong secret: typed SignatureDoesNotMatch (403), never retried")
    func signaturesEnforced() async throws {
        try await withTestServer(try TestServer.s3()) { moto in
            let good = try Self.enforceAuth(moto)
            let log = LogCapture()

            // Accepted: the full set of operations, in both addressing styles.
            let client = try S3Test.client(moto, credentials: good, log: log)
            #expect(try client.createBucket("secured"))
            let object = S3Test.payload(200_000, seed: 61)
            try client.putObject(bucket: "secured", key: "a b/é+x.mp3", body: object, contentType: "audio/mpeg")
            let directory = try TemporaryDirectory("s3-auth")
            defer { directory.remove() }
            let path = directory.url.appendingPathComponent("f").path
            #expect(FileManager.default.createFile(atPath: path, contents: Data(object.prefix(1000))))
            try client.putObject(bucket: "secured", key: "file", fileAt: path)
            var read = S3Test.Read()
            try S3Test.read(client, "secured", "a b/é+x.mp3", range: S3ByteRange(100...100_099), into: &read)
            #expect(sameBytes(read.bytes, object[100...100_099]))
            #expect(try client.headObject(bucket: "secured", key: "a b/é+x.mp3").size == 200_000)
            #expect(try client.listObjectsV2(bucket: "secured", prefix: "a b/").map(\.key) == ["a b/é+x.mp3"])
            let virtual = try S3Test.client(endpoint: "http://localhost:\(moto.port)", pathStyle: false, credentials: good)
            #expect(try virtual.headObject(bucket: "secured", key: "file").size == 1000)
            #expect(log.count("s3 request failed") == 0)

            // Still enforcing: NoSuchKey for a signed request to a missing key (not a signature error).
            let missing = #expect(throws: S3Error.self) { try client.getObject(bucket: "secured", key: "nope") { _ in } }
            #expect(missing?.code == "NoSuchKey")

            // Rejected: same key id, wrong secret.
            let wrong = AWSCredentials(accessKeyId: good.accessKeyId, secretAccessKey: "not-the-secret-" + good.secretAccessKey.prefix(8))
            let bad = try S3Test.client(moto, credentials: wrong)
            let get = #expect(throws: S3Error.self) { try bad.getObject(bucket: "secured", key: "a b/é+x.mp3") { _ in Issue.record("no body") } }
            #expect(get?.kind == .denied)
            #expect(get?.code == "SignatureDoesNotMatch")
            #expect(get?.status == 403)
            #expect(get?.attempts == 1, "403 is never retried")
            let put = #expect(throws: S3Error.self) { try bad.putObject(bucket: "secured", key: "x", body: [1]) }
            #expect(put?.kind == .denied && put?.code == "SignatureDoesNotMatch")
            let list = #expect(throws: S3Error.self) { try bad.listObjectsV2(bucket: "secured") }
            #expect(list?.kind == .denied && list?.code == "SignatureDoesNotMatch")
            // HEAD: 403 without a body, so the code comes from the status.
            let head = #expect(throws: S3Error.self) { try bad.headObject(bucket: "secured", key: "file") }
            #expect(head?.kind == .denied && head?.code == "Forbidden" && head?.status == 403)

            // An access key moto never issued.
            let unknown = try S3Test.client(moto, credentials: AWSCredentials(accessKeyId: "AKIANOTAREALKEY00000", secretAccessKey: "x"))
            let unknownError = #expect(throws: S3Error.self) { try unknown.listObjectsV2(bucket: "secured") }
            #expect(unknownError?.kind == .denied && unknownError?.code == "InvalidAccessKeyId", "\(String(describing: unknownError))")

            for error in [get, put, list, head, unknownError].compactMap({ $0 }) {
                #expect(!"\(error)".contains(good.secretAccessKey) && !"\(error)".contains(wrong.secretAccessKey))
            }
        }
    }
}
