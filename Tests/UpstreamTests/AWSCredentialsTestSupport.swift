import Foundation
import Support
import Testing
import TestSupport
@testable import Upstream

/// moto checking every signature as AWS would, including the expiry of STS session credentials
/// (`s3_test_server.py --expire-sessions`) and web identity tokens (`--web-identity-token`).
/// Before authentication is switched on, it gets an IAM user that may assume `roleArn`, the
/// role (allowed `s3:*`), and a bucket holding `object`.
struct AuthenticatingMoto {
    let server: TestServer
    /// The IAM user's long-lived key: what a profile's `source_profile` holds.
    let user: AWSCredentials
    let roleArn: String

    static let webIdentityToken = "eyJhbGciOiJSUzI1NiJ9.test-web-identity.signature"
    static let bucket = "credentials-chain"
    static let objectKey = "sources/episode.mp3"
    static let object = S3Test.payload(300_000, seed: 97)

    var endpoint: String { server.endpoint }

    static func start() throws -> AuthenticatingMoto {
        let server = try TestServer.start(name: "moto-authenticating", executable: RepoPaths.python, arguments: [
            RepoPaths.scripts.appendingPathComponent("s3_test_server.py").path,
            "--expire-sessions", "--web-identity-token", webIdentityToken,
        ])
        let allowUser = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","sts:AssumeRole"],"Resource":"*"}]}"#
        let trust = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":["sts:AssumeRole","sts:AssumeRoleWithWebIdentity"]}]}"#
        let allowRole = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#
        _ = try S3AuthTests.iam(server, [("Action", "CreateUser"), ("UserName", "deployer")])
        _ = try S3AuthTests.iam(server, [("Action", "PutUserPolicy"), ("UserName", "deployer"), ("PolicyName", "assume"),
                                         ("PolicyDocument", allowUser)])
        let created = try S3AuthTests.iam(server, [("Action", "CreateAccessKey"), ("UserName", "deployer")])
        guard let key = created.child("CreateAccessKeyResult")?.child("AccessKey"),
              let id = key.childText("AccessKeyId"), let secret = key.childText("SecretAccessKey") else {
            throw TestSetupError("CreateAccessKey: no key in the answer")
        }
        let role = try S3AuthTests.iam(server, [("Action", "CreateRole"), ("RoleName", "clipproxy-role"),
                                                ("AssumeRolePolicyDocument", trust)])
        guard let roleArn = role.child("CreateRoleResult")?.child("Role")?.childText("Arn") else {
            throw TestSetupError("CreateRole: no ARN in the answer")
        }
        _ = try S3AuthTests.iam(server, [("Action", "PutRolePolicy"), ("RoleName", "clipproxy-role"), ("PolicyName", "s3"),
                                         ("PolicyDocument", allowRole)])
        let setup = try S3Test.client(server)
        try setup.createBucket(bucket)
        try setup.putObject(bucket: bucket, key: objectKey, body: object)
        let head = try CurlTransfer().perform(HTTPRequest(method: "POST", url: server.endpoint + "/moto-api/reset-auth",
                                                          headers: [("Content-Type", "text/plain")], body: Array("0".utf8))) { _ in true }
        guard head.status == 200 else { throw TestSetupError("reset-auth: HTTP \(head.status)") }
        return AuthenticatingMoto(server: server, user: AWSCredentials(accessKeyId: id, secretAccessKey: secret), roleArn: roleArn)
    }

    /// An environment with nothing of the machine's own: no home files, no instance metadata,
    /// STS at moto. `extra` adds the variables of the source under test.
    func environment(_ extra: [String: String], home: String = "/nonexistent-home") -> [String: String] {
        ["HOME": home, "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_STS": endpoint, "PATH": "/usr/bin:/bin"]
            .merging(extra) { _, new in new }
    }

    func client(_ credentials: RefreshingAWSCredentials, log: LogCapture? = nil) throws -> S3Client {
        let configuration = S3Configuration(endpoint: URL(string: endpoint)!, region: "eu-west-2", pathStyle: true,
                                            timeouts: TransferTimeouts(connect: .seconds(2), lowSpeedBytes: 1, lowSpeedWindow: .seconds(5)),
                                            retry: S3Test.fastRetry)
        return try S3Client(configuration: configuration, credentials: credentials, log: log?.record)
    }

    /// The platform endpoints (IMDSv2 and container) handing out AssumeRole credentials of
    /// `duration` seconds, claiming `claimedExtra` more.
    func credentialsServer(duration: Int, claimedExtra: Int = 0, containerToken: String = AuthenticatingMoto.containerToken,
                           port: Int = 0) throws -> TestServer {
        try TestServer.start(name: "aws-credentials", executable: RepoPaths.python, arguments: [
            RepoPaths.scripts.appendingPathComponent("aws_credentials_server.py").path,
            "--sts", endpoint, "--role-arn", roleArn, "--key-id", user.accessKeyId, "--secret", user.secretAccessKey,
            "--duration", String(duration), "--claimed-extra", String(claimedExtra), "--container-token", containerToken,
            "--port", String(port),
        ])
    }

    static let containerToken = "container-authorization-token-for-tests"

    /// What a cold clip does upstream: a ranged read of the source, then an upload. Checks the
    /// bytes that come back.
    static func readAndUpload(_ client: S3Client, key: String, seed: UInt32 = 1) throws {
        var read = S3Test.Read()
        let first = Int64(seed % 1000) * 100
        try S3Test.read(client, bucket, objectKey, range: S3ByteRange(first...(first + 49_999)), into: &read)
        guard sameBytes(read.bytes, object[Int(first)...Int(first + 49_999)]) else {
            throw TestSetupError("the source range came back different")
        }
        let clip = S3Test.payload(20_000, seed: seed)
        let put = try client.putObject(bucket: bucket, key: key, body: clip, contentType: "audio/mpeg")
        guard put.etag == S3Test.quotedMD5(clip) else { throw TestSetupError("upload answered ETag \(put.etag)") }
    }

    /// `GET /__control/stats` of the credentials server.
    static func stats(_ server: TestServer) throws -> [String: Int] {
        var body: [UInt8] = []
        let head = try CurlTransfer().perform(HTTPRequest(method: "GET", url: server.endpoint + "/__control/stats")) { chunk in
            body.append(contentsOf: chunk)
            return true
        }
        guard head.status == 200, let stats = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Int] else {
            throw TestSetupError("credentials server stats: HTTP \(head.status)")
        }
        return stats
    }
}

/// A file in a fresh temporary directory.
func writeTemporaryFile(_ directory: TemporaryDirectory, _ name: String, _ text: String, executable: Bool = false) throws -> String {
    let path = directory.url.appendingPathComponent(name).path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    if executable { try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path) }
    return path
}
