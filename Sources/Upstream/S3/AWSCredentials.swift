import Foundation

/// AWS credentials. Neither `description` nor the reflection mirror (`dump`, `debugPrint`) shows
/// the secret or the token.
public struct AWSCredentials: Sendable, CustomStringConvertible, CustomReflectable {
    public var accessKeyId: String
    public var secretAccessKey: String
    public var sessionToken: String?
    /// When temporary credentials stop working (STS, the container endpoint, instance metadata,
    /// a credential process that says so); nil for long-lived keys.
    public var expiration: Date?

    public init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Date? = nil) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    public var description: String {
        "AWSCredentials(\(accessKeyId), secret: <redacted>\(sessionToken == nil ? "" : ", token: <redacted>")"
            + "\(expiration.map { ", expires \($0)" } ?? ""))"
    }

    public var customMirror: Mirror {
        Mirror(self, children: ["accessKeyId": accessKeyId, "secretAccessKey": "<redacted>",
                                "sessionToken": sessionToken == nil ? "nil" : "<redacted>",
                                "expiration": expiration.map { "\($0)" } ?? "nil"])
    }
}

/// No usable credentials. The message names every source tried (variable names, file path,
/// profile) and why it gave nothing; it never contains a secret or a token.
public struct AWSCredentialsError: Error, CustomStringConvertible, Sendable {
    /// One line per source tried, e.g. `environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): not set`.
    public let tried: [String]
    public let description: String

    public init(_ summary: String, tried: [String]) {
        self.tried = tried
        description = "\(summary); tried: " + tried.enumerated().map { "\($0.offset + 1)) \($0.element)" }.joined(separator: "; ")
    }
}
