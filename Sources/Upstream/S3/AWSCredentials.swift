import Foundation

/// AWS credentials. Neither `description` nor the reflection mirror (`dump`, `debugPrint`) shows
/// the secret or the token.
public struct AWSCredentials: Sendable, CustomStringConvertible, CustomReflectable {
    public var accessKeyId: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String { "AWSCredentials(\(accessKeyId), secret: <redacted>\(sessionToken == nil ? "" : ", token: <redacted>"))" }

    public var customMirror: Mirror {
        Mirror(self, children: ["accessKeyId": accessKeyId, "secretAccessKey": "<redacted>",
                                "sessionToken": sessionToken == nil ? "nil" : "<redacted>"])
    }
}

/// No usable credentials. The message names every source tried (variable names, file path,
/// profile) and why it gave nothing; it never contains a secret or a token.
public struct AWSCredentialsError: Error, CustomStringConvertible, Sendable {
    /// One line per source tried, e.g. `environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): not set`.
    public let tried: [String]
    public let description: String

    init(_ summary: String, tried: [String]) {
        self.tried = tried
        description = "\(summary); tried: " + tried.enumerated().map { "\($0.offset + 1)) \($0.element)" }.joined(separator: "; ")
    }
}

/// Finds credentials where the AWS SDKs look, in their order:
/// 1. the environment: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
///    one of the pair without the other is an error, as in botocore;
/// 2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`),
///    INI format, section named by `AWS_PROFILE` (default `default`), keys `aws_access_key_id`,
///    `aws_secret_access_key`, `aws_session_token` (or the older `aws_security_token`).
public struct AWSCredentialsProvider: Sendable {
    public var environment: [String: String]
    /// Where `~` points; defaults to `$HOME`, then the account's home directory.
    public var homeDirectory: String

    public init(environment: [String: String] = ProcessInfo.processInfo.environment, homeDirectory: String? = nil) {
        self.environment = environment
        self.homeDirectory = homeDirectory ?? environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
    }

    /// The shared credentials file that `resolve()` reads.
    public var sharedCredentialsFile: String {
        if let path = value("AWS_SHARED_CREDENTIALS_FILE") {
            return path.hasPrefix("~/") ? homeDirectory + path.dropFirst() : path
        }
        return homeDirectory + "/.aws/credentials"
    }

    /// The profile (section) that `resolve()` reads from the shared credentials file.
    public var profile: String { value("AWS_PROFILE") ?? "default" }

    public func resolve() throws(AWSCredentialsError) -> AWSCredentials {
        var tried: [String] = []

        let envSource = "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)"
        switch (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY")) {
        case let (id?, secret?):
            return AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN"))
        case (_?, nil):
            throw AWSCredentialsError("incomplete AWS credentials", tried: [envSource + ": AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"])
        case (nil, _?):
            throw AWSCredentialsError("incomplete AWS credentials", tried: [envSource + ": AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"])
        case (nil, nil):
            tried.append(envSource + ": not set")
        }

        let path = sharedCredentialsFile
        let fileSource = "shared credentials file \(path) (AWS_SHARED_CREDENTIALS_FILE\(value("AWS_SHARED_CREDENTIALS_FILE") == nil ? " not set" : "")), "
            + "profile \"\(profile)\" (AWS_PROFILE\(value("AWS_PROFILE") == nil ? " not set" : ""))"
        guard FileManager.default.fileExists(atPath: path) else {
            tried.append(fileSource + ": file not found")
            throw AWSCredentialsError("no AWS credentials found", tried: tried)
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            tried.append(fileSource + ": file not readable")
            throw AWSCredentialsError("no AWS credentials found", tried: tried)
        }
        let sections = Self.parseINI(String(decoding: data, as: UTF8.self))
        guard let section = sections[profile] else {
            let known = sections.keys.sorted().map { "[\($0)]" }.joined(separator: ", ")
            tried.append(fileSource + ": no [\(profile)] section" + (known.isEmpty ? "" : " (the file has \(known))"))
            throw AWSCredentialsError("no AWS credentials found", tried: tried)
        }
        let id = section["aws_access_key_id"].flatMap { $0.isEmpty ? nil : $0 }
        let secret = section["aws_secret_access_key"].flatMap { $0.isEmpty ? nil : $0 }
        guard let id, let secret else {
            let missing = [id == nil ? "aws_access_key_id" : nil, secret == nil ? "aws_secret_access_key" : nil].compactMap { $0 }
            tried.append(fileSource + ": [\(profile)] has no " + missing.joined(separator: " and "))
            throw AWSCredentialsError(missing.count == 2 ? "no AWS credentials found" : "incomplete AWS credentials", tried: tried)
        }
        let token = (section["aws_session_token"] ?? section["aws_security_token"]).flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: token)
    }

    private func value(_ name: String) -> String? {
        guard let v = environment[name], !v.isEmpty else { return nil }
        return v
    }

    /// INI as the AWS CLI writes it: `[section]` headers, `key = value` lines (split at the first
    /// `=`, both sides trimmed, keys lowercased), whole-line comments starting with `#` or `;`.
    /// Indented lines continue a nested value (`s3 =` blocks in config files) and are skipped.
    /// Values are taken literally: no inline comments, since a secret may contain `#` or `;`.
    static func parseINI(_ text: String) -> [String: [String: String]] {
        var sections: [String: [String: String]] = [:]
        var current: String?
        for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: \.isNewline) {
            if rawLine.first == " " || rawLine.first == "\t" { continue }
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                current = name
                if sections[name] == nil { sections[name] = [:] }
                continue
            }
            guard let section = current, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            sections[section, default: [:]][key] = value
        }
        return sections
    }
}
