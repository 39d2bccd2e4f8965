import Foundation

/// moto checking every signature as AWS would (`s3_test_server.py --authenticate`): an IAM user
/// allowed `s3:*` and `sts:AssumeRole`, a role allowed `s3:*`; session credentials refused once
/// expired (`--expire-sessions`); web identity accepted unsigned for `webIdentityToken` only.
public struct AuthenticatingS3: Sendable {
    public let server: TestServer
    /// The IAM user's long-lived key (what a `source_profile` holds, what seeds buckets).
    public let userKeyId: String
    public let userSecret: String
    public let roleArn: String

    public static let webIdentityToken = "eyJhbGciOiJSUzI1NiJ9.test-web-identity.signature"
    public static let containerToken = "container-authorization-token-for-tests"

    public var endpoint: String { server.endpoint }

    public static func start() throws -> AuthenticatingS3 {
        let directory = try TemporaryDirectory("moto-auth")
        defer { directory.remove() }
        let file = directory.url.appendingPathComponent("auth.json")
        let server = try TestServer.start(name: "moto-authenticating", executable: RepoPaths.python, arguments: [
            RepoPaths.scripts.appendingPathComponent("s3_test_server.py").path,
            "--expire-sessions", "--web-identity-token", webIdentityToken, "--authenticate", file.path,
        ])
        guard let auth = try? JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: String],
              let id = auth["access_key_id"], let secret = auth["secret_access_key"], let role = auth["role_arn"] else {
            server.stop()
            throw TestSetupError("s3_test_server.py --authenticate wrote no key")
        }
        return AuthenticatingS3(server: server, userKeyId: id, userSecret: secret, roleArn: role)
    }

    /// The platform endpoints (`aws_credentials_server.py`: IMDSv2 and the container endpoint)
    /// handing out this role's credentials for `duration` seconds, claiming `claimedExtra` more.
    /// With `imdsV1Only` it plays an IMDS without sessions (the token PUT answers 404).
    public func credentialsServer(duration: Int, claimedExtra: Int = 0, port: Int = 0, imdsV1Only: Bool = false) throws -> TestServer {
        try TestServer.start(name: "aws-credentials", executable: RepoPaths.python, arguments: [
            RepoPaths.scripts.appendingPathComponent("aws_credentials_server.py").path,
            "--sts", endpoint, "--role-arn", roleArn, "--key-id", userKeyId, "--secret", userSecret,
            "--duration", String(duration), "--claimed-extra", String(claimedExtra),
            "--container-token", Self.containerToken, "--port", String(port),
        ] + (imdsV1Only ? ["--imds-v1-only"] : []))
    }
}
