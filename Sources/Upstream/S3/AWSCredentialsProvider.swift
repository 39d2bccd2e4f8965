import Foundation

/// Finds credentials where the AWS SDKs look, in their order, reading the variables they read:
/// 1. the environment: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
///    one of the pair without the other is an error, as in botocore;
/// 2. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`),
///    exchanged with STS `AssumeRoleWithWebIdentity` (EKS IRSA);
/// 3. the profile `AWS_PROFILE` (default `default`) of the shared credentials file
///    (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) and the config file
///    (`AWS_CONFIG_FILE`, default `~/.aws/config`, sections `[profile name]`): `role_arn` with
///    `source_profile`, `credential_source` or `web_identity_token_file` (STS `AssumeRole`);
///    else static keys (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`);
///    else `credential_process`;
/// 4. the container endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS) or `_FULL_URI`,
///    with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
/// 5. instance metadata (IMDSv2), unless `AWS_EC2_METADATA_DISABLED=true`.
/// The first source that is configured is used; if it fails, the error names every source
/// looked at and why each gave nothing. STS is reached at `AWS_ENDPOINT_URL_STS`, else the
/// regional endpoint of `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, or `region`.
public struct AWSCredentialsProvider: Sendable {
    public var environment: [String: String]
    /// Where `~` points; defaults to `$HOME`, then the account's home directory.
    public var homeDirectory: String
    /// The region for STS when neither the environment nor the profile names one (the S3 region).
    public var region: String

    public init(environment: [String: String] = ProcessInfo.processInfo.environment, homeDirectory: String? = nil,
                region: String = "us-east-1") {
        self.environment = environment
        self.homeDirectory = homeDirectory ?? environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        self.region = region
    }

    /// The shared credentials file that `resolve()` reads.
    public var sharedCredentialsFile: String { path(value("AWS_SHARED_CREDENTIALS_FILE") ?? "~/.aws/credentials") }

    /// The config file that `resolve()` reads.
    public var configFile: String { path(value("AWS_CONFIG_FILE") ?? "~/.aws/config") }

    /// The profile `resolve()` reads from both files.
    public var profile: String { value("AWS_PROFILE") ?? value("AWS_DEFAULT_PROFILE") ?? "default" }

    /// The credentials of the first configured source.
    public func resolve() throws(AWSCredentialsError) -> AWSCredentials { try resolveSource().credentials }

    /// The first configured source and what it gave: refreshes ask the same source again.
    public func resolveSource() throws(AWSCredentialsError) -> (source: AWSCredentialSource, credentials: AWSCredentials) {
        var tried: [String] = []
        let chain: [() throws(AWSCredentialsError) -> Found] = [environmentSource, webIdentitySource, profileSource, containerSource, instanceMetadataSource]
        for step in chain {
            switch try step() {
            case .skipped(let why):
                tried.append(why)
            case .source(let source, let fallsThrough):
                do {
                    return (source, try source.fetch())
                } catch {
                    guard fallsThrough else {
                        throw AWSCredentialsError("could not get AWS credentials from \(source.name)", tried: tried + error.tried)
                    }
                    tried += error.tried
                }
            }
        }
        throw AWSCredentialsError("no AWS credentials found", tried: tried)
    }

    /// What one step of the chain found.
    private enum Found {
        /// Not configured here: why, for the error.
        case skipped(String)
        /// Configured: use it. `fallsThrough`: a failure moves on (instance metadata, which
        /// is probed rather than configured) instead of ending the search.
        case source(AWSCredentialSource, fallsThrough: Bool)
    }

    // MARK: - The steps

    private func environmentSource() throws(AWSCredentialsError) -> Found {
        let detail = "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)"
        switch (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY")) {
        case let (id?, secret?):
            let credentials = AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN"))
            return .source(.fixed(credentials, name: "environment", detail: detail), fallsThrough: false)
        case (_?, nil):
            throw AWSCredentialsError("incomplete AWS credentials", tried: [detail + ": AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"])
        case (nil, _?):
            throw AWSCredentialsError("incomplete AWS credentials", tried: [detail + ": AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"])
        case (nil, nil):
            return .skipped(detail + ": not set")
        }
    }

    private func webIdentitySource() -> Found {
        let detail = "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)"
        switch (value("AWS_WEB_IDENTITY_TOKEN_FILE"), value("AWS_ROLE_ARN")) {
        case let (file?, role?):
            return .source(webIdentity(tokenFile: file, roleArn: role, sessionName: value("AWS_ROLE_SESSION_NAME"), region: stsRegion(profile: nil)),
                           fallsThrough: false)
        case (_?, nil): return .skipped(detail + ": AWS_ROLE_ARN not set")
        case (nil, _?): return .skipped(detail + ": AWS_WEB_IDENTITY_TOKEN_FILE not set")
        case (nil, nil): return .skipped(detail + ": not set")
        }
    }

    private func profileSource() throws(AWSCredentialsError) -> Found {
        let files = "shared credentials file \(sharedCredentialsFile) (AWS_SHARED_CREDENTIALS_FILE\(value("AWS_SHARED_CREDENTIALS_FILE") == nil ? " not set" : "")) "
            + "and config file \(configFile) (AWS_CONFIG_FILE\(value("AWS_CONFIG_FILE") == nil ? " not set" : "")), "
            + "profile \"\(profile)\" (AWS_PROFILE\(value("AWS_PROFILE") == nil ? " not set" : ""))"
        let profiles = AWSProfiles(credentialsFile: sharedCredentialsFile, configFile: configFile)
        guard profiles.credentialsFileFound || profiles.configFileFound else { return .skipped(files + ": file not found") }
        guard profiles.sections[profile] != nil else {
            let known = profiles.sections.keys.sorted().map { "[\($0)]" }.joined(separator: ", ")
            let why = files + ": no [\(profile)] section" + (known.isEmpty ? "" : " (the files have \(known))")
            // A profile asked for by name must exist; the default one may be absent.
            if value("AWS_PROFILE") != nil || value("AWS_DEFAULT_PROFILE") != nil {
                throw AWSCredentialsError("AWS profile not found", tried: [why])
            }
            return .skipped(why)
        }
        do {
            guard let source = try profileSource(profile, profiles: profiles, visited: []) else {
                return .skipped(files + ": [\(profile)] has no aws_access_key_id and aws_secret_access_key, role_arn or credential_process")
            }
            return .source(source, fallsThrough: false)
        } catch {
            throw AWSCredentialsError(error.description.hasPrefix("incomplete") ? "incomplete AWS credentials" : "unusable AWS profile",
                                      tried: [files + ": " + error.description])
        }
    }

    private func containerSource() throws(AWSCredentialsError) -> Found {
        let detail = "container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, AWS_CONTAINER_CREDENTIALS_FULL_URI)"
        let url: String
        if let relative = value("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            url = ContainerCredentialsEndpoint.ecsBase + (relative.hasPrefix("/") ? "" : "/") + relative
        } else if let full = value("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            guard let parsed = URL(string: full), ContainerCredentialsEndpoint.allows(parsed) else {
                throw AWSCredentialsError("unusable container credentials endpoint", tried: [
                    detail + ": \(full) is neither https nor a loopback or ECS/EKS link-local http address",
                ])
            }
            url = full
        } else {
            return .skipped(detail + ": not set")
        }
        let endpoint = ContainerCredentialsEndpoint(url: url, tokenFile: value("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                                                    token: value("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
        return .source(AWSCredentialSource(name: "container", detail: "container endpoint \(url)", fetch: endpoint.fetch), fallsThrough: false)
    }

    private func instanceMetadataSource() -> Found {
        if value("AWS_EC2_METADATA_DISABLED")?.lowercased() == "true" {
            return .skipped("instance metadata: AWS_EC2_METADATA_DISABLED=true")
        }
        return .source(instanceMetadata(), fallsThrough: true)
    }

    // MARK: - Sources

    private func webIdentity(tokenFile: String, roleArn: String, sessionName: String?, region: String) -> AWSCredentialSource {
        let sts = AWSSecurityTokenService(environment: environment, region: region)
        let session = sessionName ?? Self.sessionName()
        return AWSCredentialSource(name: "web_identity", detail: "web identity token \(tokenFile), role \(roleArn), STS \(sts.endpoint)") {
            guard let data = FileManager.default.contents(atPath: tokenFile) else {
                throw CredentialSourceFailure("cannot read the web identity token file \(tokenFile)")
            }
            let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return try sts.assumeRoleWithWebIdentity(roleArn: roleArn, sessionName: session, token: token)
        }
    }

    private func instanceMetadata() -> AWSCredentialSource {
        let endpoint = value("AWS_EC2_METADATA_SERVICE_ENDPOINT").map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
            ?? (value("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")?.lowercased() == "ipv6" ? "http://[fd00:ec2::254]" : "http://169.254.169.254")
        let seconds = value("AWS_METADATA_SERVICE_TIMEOUT").flatMap(Double.init) ?? 1
        let service = InstanceMetadataService(endpoint: endpoint, allowV1: value("AWS_EC2_METADATA_V1_DISABLED")?.lowercased() == "false",
                                              timeout: .milliseconds(Int(max(0.1, seconds) * 1000)),
                                              attempts: value("AWS_METADATA_SERVICE_NUM_ATTEMPTS").flatMap(Int.init) ?? 1)
        return AWSCredentialSource(name: "instance_metadata", detail: "instance metadata \(endpoint) (AWS_EC2_METADATA_SERVICE_ENDPOINT)",
                                   fetch: service.fetch)
    }

    /// The source a profile describes, nil when it describes none. Follows `source_profile` chains
    /// (`visited` stops cycles).
    private func profileSource(_ name: String, profiles: AWSProfiles, visited: [String]) throws(CredentialSourceFailure) -> AWSCredentialSource? {
        guard let section = profiles.sections[name] else { throw CredentialSourceFailure("source_profile \(name) does not exist") }
        func setting(_ key: String) -> String? { section[key].flatMap { $0.isEmpty ? nil : $0 } }
        let region = stsRegion(profile: setting("region"))

        if let roleArn = setting("role_arn"), !visited.contains(name) || setting("aws_access_key_id") == nil {
            guard !visited.contains(name) else { throw CredentialSourceFailure("source_profile cycle: \((visited + [name]).joined(separator: " -> "))") }
            if setting("mfa_serial") != nil { throw CredentialSourceFailure("[\(name)] needs an MFA code (mfa_serial), which a server cannot type") }
            let session = setting("role_session_name") ?? Self.sessionName()
            if let tokenFile = setting("web_identity_token_file") {
                return webIdentity(tokenFile: tokenFile, roleArn: roleArn, sessionName: session, region: region)
            }
            let base: AWSCredentialSource
            if let sourceProfile = setting("source_profile") {
                guard let found = try profileSource(sourceProfile, profiles: profiles, visited: visited + [name]) else {
                    throw CredentialSourceFailure("source_profile \(sourceProfile) of [\(name)] has no credentials")
                }
                base = found
            } else if let credentialSource = setting("credential_source") {
                switch credentialSource {
                case "Environment":
                    guard let id = value("AWS_ACCESS_KEY_ID"), let secret = value("AWS_SECRET_ACCESS_KEY") else {
                        throw CredentialSourceFailure("[\(name)] has credential_source Environment but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set")
                    }
                    base = .fixed(AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: value("AWS_SESSION_TOKEN")),
                                  name: "environment", detail: "environment")
                case "Ec2InstanceMetadata":
                    base = instanceMetadata()
                case "EcsContainer":
                    guard case .source(let container, _) = try? containerSource() else {
                        throw CredentialSourceFailure("[\(name)] has credential_source EcsContainer but no usable AWS_CONTAINER_CREDENTIALS_* variable")
                    }
                    base = container
                default:
                    throw CredentialSourceFailure("[\(name)] has an unknown credential_source \(credentialSource)")
                }
            } else {
                throw CredentialSourceFailure("[\(name)] has role_arn but neither source_profile, credential_source nor web_identity_token_file")
            }
            let sts = AWSSecurityTokenService(environment: environment, region: region)
            let externalId = setting("external_id")
            let duration = setting("duration_seconds").flatMap(Int.init)
            return AWSCredentialSource(name: "assume_role", detail: "profile [\(name)], role \(roleArn) from \(base.name), STS \(sts.endpoint)") {
                let sourceCredentials = try base.fetch()
                return try sts.assumeRole(with: sourceCredentials, roleArn: roleArn, sessionName: session, externalId: externalId,
                                          durationSeconds: duration)
            }
        }

        let id = setting("aws_access_key_id")
        let secret = setting("aws_secret_access_key")
        switch (id, secret) {
        case let (id?, secret?):
            let token = setting("aws_session_token") ?? setting("aws_security_token")
            return .fixed(AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: token),
                          name: "profile", detail: "profile [\(name)] keys")
        case (_?, nil), (nil, _?):
            throw CredentialSourceFailure("incomplete: [\(name)] has no \(id == nil ? "aws_access_key_id" : "aws_secret_access_key")")
        case (nil, nil):
            break
        }
        if let command = setting("credential_process") {
            let process = CredentialProcess(command: command)
            return AWSCredentialSource(name: "credential_process", detail: "credential_process of profile [\(name)]", fetch: process.fetch)
        }
        return nil
    }

    // MARK: - Helpers

    private func stsRegion(profile: String?) -> String {
        value("AWS_REGION") ?? value("AWS_DEFAULT_REGION") ?? profile ?? region
    }

    private func value(_ name: String) -> String? {
        guard let v = environment[name], !v.isEmpty else { return nil }
        return v
    }

    private func path(_ path: String) -> String {
        path.hasPrefix("~/") ? homeDirectory + path.dropFirst() : path
    }

    /// `clipproxy-<unix seconds>`, like botocore's `botocore-session-<seconds>`.
    private static func sessionName() -> String { "clipproxy-\(Int(Date().timeIntervalSince1970))" }
}

/// The profiles of the shared credentials file and the config file, merged: keys of the
/// credentials file win. Config sections are `[profile name]` (and `[default]`).
struct AWSProfiles {
    var sections: [String: [String: String]] = [:]
    var credentialsFileFound = false
    var configFileFound = false

    init(credentialsFile: String, configFile: String) {
        if let data = FileManager.default.contents(atPath: configFile) {
            configFileFound = true
            for (name, keys) in Self.parseINI(String(decoding: data, as: UTF8.self)) {
                let trimmed = name.hasPrefix("profile ") ? String(name.dropFirst(8)).trimmingCharacters(in: .whitespaces) : name
                guard name.hasPrefix("profile ") || name == "default" else { continue }  // sso-session, services, …
                sections[trimmed, default: [:]].merge(keys) { _, new in new }
            }
        }
        if let data = FileManager.default.contents(atPath: credentialsFile) {
            credentialsFileFound = true
            for (name, keys) in Self.parseINI(String(decoding: data, as: UTF8.self)) {
                sections[name, default: [:]].merge(keys) { _, new in new }
            }
        }
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
