import Foundation

/// The container credentials endpoint (ECS task roles, EKS Pod Identity): a GET answered with the
/// role's credentials as JSON, authorized by a token the platform puts in the environment or a
/// file (re-read on every fetch: EKS rotates it).
struct ContainerCredentialsEndpoint: Sendable {
    let url: String
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, read at each fetch; wins over `token`.
    let tokenFile: String?
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    let token: String?
    var timeouts = TransferTimeouts(connect: .seconds(2), lowSpeedBytes: 1, lowSpeedWindow: .seconds(5), total: .seconds(5))

    /// ECS's fixed address for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
    static let ecsBase = "http://169.254.170.2"

    /// The SDKs' rule for a full URI: https anywhere, plain http only to this host (loopback) or
    /// the link-local addresses ECS and EKS Pod Identity use, so a token is never sent in clear
    /// over a network.
    static func allows(_ url: URL) -> Bool {
        guard let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased() else { return false }
        if scheme == "https" { return true }
        guard scheme == "http" else { return false }
        let trimmed = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return trimmed == "localhost" || trimmed.hasPrefix("127.") || trimmed == "::1"
            || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"].contains(trimmed)
    }

    func fetch() throws -> AWSCredentials {
        var headers: [(name: String, value: String)] = []
        if let tokenFile {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                throw CredentialSourceFailure("cannot read the authorization token file \(tokenFile)")
            }
            headers.append(("Authorization", String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        } else if let token {
            headers.append(("Authorization", token))
        }
        let (status, body) = try CredentialHTTP.send(HTTPRequest(method: "GET", url: url, headers: headers), timeouts: timeouts)
        guard status == 200 else { throw CredentialSourceFailure("GET \(url): HTTP \(status)") }
        return try CredentialDocument.parse(body, what: "the answer of \(url)")
    }
}

/// The EC2 instance metadata service, IMDSv2: a session token from `PUT /latest/api/token`, then
/// the role name and its credentials with that token. IMDSv1 (the same GETs without a token) only
/// when allowed and only when the token request is refused as an old IMDS would (403, 404, 405).
struct InstanceMetadataService: Sendable {
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, default `http://169.254.169.254`
    /// (`http://[fd00:ec2::254]` with `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`).
    let endpoint: String
    /// `AWS_EC2_METADATA_V1_DISABLED=false` (set explicitly) allows the IMDSv1 fallback; by default never.
    let allowV1: Bool
    /// `AWS_METADATA_SERVICE_TIMEOUT` (seconds, default 1) and `AWS_METADATA_SERVICE_NUM_ATTEMPTS` (default 1), as botocore.
    let timeout: Duration
    let attempts: Int

    static let tokenTTLSeconds = 21_600
    private static let credentialsPath = "/latest/meta-data/iam/security-credentials/"

    func fetch() throws -> AWSCredentials {
        var failure: any Error = CredentialSourceFailure("no attempt")
        for _ in 0..<max(1, attempts) {
            do { return try fetchOnce() } catch { failure = error }
        }
        throw failure
    }

    private var timeouts: TransferTimeouts {
        TransferTimeouts(connect: timeout, lowSpeedBytes: 1, lowSpeedWindow: .seconds(2), total: timeout + .seconds(1))
    }

    private func fetchOnce() throws -> AWSCredentials {
        var headers: [(name: String, value: String)] = []
        let (status, body) = try CredentialHTTP.send(HTTPRequest(method: "PUT", url: endpoint + "/latest/api/token",
                                                                 headers: [("X-aws-ec2-metadata-token-ttl-seconds", String(Self.tokenTTLSeconds))]),
                                                     timeouts: timeouts, limit: 4096)
        switch status {
        case 200 where !body.isEmpty:
            headers.append(("X-aws-ec2-metadata-token", String(decoding: body, as: UTF8.self)))
        case 403 where allowV1, 404 where allowV1, 405 where allowV1:
            break  // an IMDS without sessions: IMDSv1, as configured
        default:
            throw CredentialSourceFailure("PUT \(endpoint)/latest/api/token (IMDSv2 session token): HTTP \(status)"
                                          + (allowV1 ? "" : "; IMDSv1 is not used unless AWS_EC2_METADATA_V1_DISABLED=false"))
        }
        let (roleStatus, roleBody) = try CredentialHTTP.send(HTTPRequest(method: "GET", url: endpoint + Self.credentialsPath, headers: headers),
                                                             timeouts: timeouts, limit: 4096)
        let role = String(decoding: roleBody, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        guard roleStatus == 200, !role.isEmpty else {
            throw CredentialSourceFailure("GET \(endpoint)\(Self.credentialsPath): HTTP \(roleStatus)"
                                          + (roleStatus == 404 ? " (no instance profile role attached)" : ""))
        }
        let url = endpoint + Self.credentialsPath + S3URI.encode(role, keepSlash: false)
        let (credentialsStatus, credentialsBody) = try CredentialHTTP.send(HTTPRequest(method: "GET", url: url, headers: headers), timeouts: timeouts)
        guard credentialsStatus == 200 else { throw CredentialSourceFailure("GET \(url): HTTP \(credentialsStatus)") }
        return try CredentialDocument.parse(credentialsBody, what: "the answer of \(url)")
    }
}

/// `credential_process` from a profile: a command whose standard output is the JSON credentials
/// document (`Version: 1`). Run with `/bin/sh -c`, as the AWS CLI documents it, with the server's
/// environment; its standard error is not kept (it might print secrets). Killed after `timeout`.
struct CredentialProcess: Sendable {
    let command: String
    var timeout: Duration = .seconds(60)

    func fetch() throws -> AWSCredentials {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw CredentialSourceFailure("credential_process could not start: \(error)")
        }
        let pid = process.processIdentifier
        let killer = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(timeout.components.seconds) * 1000), execute: killer)
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        killer.cancel()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw CredentialSourceFailure("credential_process \(process.terminationReason == .exit ? "exited with status \(process.terminationStatus)" : "was killed (signal \(process.terminationStatus))")")
        }
        let document = try? JSONDecoder().decode(CredentialDocument.self, from: stdout)
        guard document?.Version == 1 else {
            throw CredentialSourceFailure("credential_process output is not a Version 1 credentials document")
        }
        return try CredentialDocument.parse(Array(stdout), what: "credential_process output")
    }
}
