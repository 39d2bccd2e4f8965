import Foundation
import Support
import Testing
import TestSupport
@testable import Upstream

/// moto checking every signature (`AuthenticatingS3`), with a bucket holding `object`.
struct AuthenticatingMoto {
    let moto: AuthenticatingS3

    var server: TestServer { moto.server }
    var endpoint: String { moto.endpoint }
    var roleArn: String { moto.roleArn }
    /// The IAM user's long-lived key: what a profile's `source_profile` holds.
    var user: AWSCredentials { AWSCredentials(accessKeyId: moto.userKeyId, secretAccessKey: moto.userSecret) }

    static let webIdentityToken = AuthenticatingS3.webIdentityToken
    static let containerToken = AuthenticatingS3.containerToken
    static let bucket = "credentials-chain"
    static let objectKey = "sources/episode.mp3"
    static let object = S3Test.payload(300_000, seed: 97)

    static func start() throws -> AuthenticatingMoto {
        let started = AuthenticatingMoto(moto: try AuthenticatingS3.start())
        let seeding = try started.client(RefreshingAWSCredentials(fixed: started.user))
        try seeding.createBucket(bucket)
        try seeding.putObject(bucket: bucket, key: objectKey, body: object)
        return started
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

    func credentialsServer(duration: Int, claimedExtra: Int = 0, port: Int = 0) throws -> TestServer {
        try moto.credentialsServer(duration: duration, claimedExtra: claimedExtra, port: port)
    }

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
