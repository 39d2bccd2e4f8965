import Foundation
import Support

/// The two STS calls the credential chain needs: `AssumeRole` (signed with SigV4 for service
/// `sts` by the source credentials) and `AssumeRoleWithWebIdentity` (unsigned: the token is the
/// proof). Query API over POST, XML answers. Blocking.
struct AWSSecurityTokenService: Sendable {
    /// `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the regional `https://sts.<region>.amazonaws.com`.
    let endpoint: String
    /// The region requests are signed for.
    let region: String
    var timeouts = TransferTimeouts(connect: .seconds(3), lowSpeedBytes: 1, lowSpeedWindow: .seconds(5), total: .seconds(10))

    init(environment: [String: String], region: String) {
        let configured = [environment["AWS_ENDPOINT_URL_STS"], environment["AWS_ENDPOINT_URL"]].compactMap { $0 }.first { !$0.isEmpty }
        var endpoint = configured ?? "https://sts.\(region).amazonaws.com"
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        self.endpoint = endpoint
        self.region = region
    }

    func assumeRole(with source: AWSCredentials, roleArn: String, sessionName: String, externalId: String? = nil,
                    durationSeconds: Int? = nil) throws -> AWSCredentials {
        var parameters = [("Action", "AssumeRole"), ("Version", "2011-06-15"), ("RoleArn", roleArn), ("RoleSessionName", sessionName)]
        if let externalId { parameters.append(("ExternalId", externalId)) }
        if let durationSeconds { parameters.append(("DurationSeconds", String(durationSeconds))) }
        return try call("AssumeRole", parameters, signedWith: source)
    }

    func assumeRoleWithWebIdentity(roleArn: String, sessionName: String, token: String,
                                   durationSeconds: Int? = nil) throws -> AWSCredentials {
        var parameters = [("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"), ("RoleArn", roleArn),
                          ("RoleSessionName", sessionName), ("WebIdentityToken", token)]
        if let durationSeconds { parameters.append(("DurationSeconds", String(durationSeconds))) }
        return try call("AssumeRoleWithWebIdentity", parameters, signedWith: nil)
    }

    private func call(_ action: String, _ parameters: [(String, String)], signedWith credentials: AWSCredentials?) throws -> AWSCredentials {
        guard let url = URL(string: endpoint), let host = url.host else {
            throw CredentialSourceFailure("STS endpoint \(endpoint) is not a URL")
        }
        let body = CredentialHTTP.form(parameters)
        let authority = url.port.map { "\(host):\($0)" } ?? host
        let path = url.path.isEmpty ? "/" : url.path
        var headers: [(name: String, value: String)] = [("Host", authority), ("Content-Type", "application/x-www-form-urlencoded")]
        if let credentials {
            headers += SigV4Signer(credentials: credentials, region: region, service: "sts")
                .signedHeaders(method: "POST", path: path, headers: headers, payloadHash: Digest.sha256(body).hexString, date: Date())
        }
        let (status, answer) = try CredentialHTTP.send(HTTPRequest(method: "POST", url: endpoint + (url.path.isEmpty ? "/" : ""), headers: headers, body: body),
                                                       timeouts: timeouts)
        guard let root = S3XML.parse(answer) else {
            throw CredentialSourceFailure("STS \(action) at \(endpoint): HTTP \(status), not an XML answer")
        }
        guard status == 200 else {
            let error = root.child("Error") ?? root
            throw CredentialSourceFailure("STS \(action) at \(endpoint): HTTP \(status) \(error.childText("Code") ?? "")"
                                          + (error.childText("Message").map { ": \($0)" } ?? ""))
        }
        guard let found = root.child("\(action)Result")?.child("Credentials"),
              let id = found.childText("AccessKeyId"), let secret = found.childText("SecretAccessKey"),
              let token = found.childText("SessionToken"),
              let expiration = found.childText("Expiration").flatMap(S3Date.parseISO8601) else {
            throw CredentialSourceFailure("STS \(action) at \(endpoint): the answer has no complete Credentials element")
        }
        return AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: token, expiration: expiration)
    }
}
