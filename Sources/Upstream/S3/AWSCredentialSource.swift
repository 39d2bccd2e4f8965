import Foundation

/// One place credentials come from, as the chain (`AWSCredentialsProvider`) found it: asking it
/// again (`fetch`) is how temporary credentials are renewed. Nothing here holds a secret except
/// what `fetch` returns; `name` and `detail` are safe to log.
public struct AWSCredentialSource: Sendable, CustomStringConvertible {
    /// A short fixed name for logs and metrics: `environment`, `web_identity`, `profile`,
    /// `assume_role`, `credential_process`, `container`, `instance_metadata`, or `static`.
    public let name: String
    /// Where exactly, for people: variable names, file paths, URLs, role ARNs. No secret.
    public let detail: String
    /// Gives the same credentials every time: there is nothing to renew.
    public let isFixed: Bool
    private let fetcher: @Sendable () throws -> AWSCredentials

    init(name: String, detail: String, isFixed: Bool = false, fetch: @escaping @Sendable () throws -> AWSCredentials) {
        self.name = name
        self.detail = detail
        self.isFixed = isFixed
        fetcher = fetch
    }

    /// Credentials that never change (given in code, the environment or a file).
    static func fixed(_ credentials: AWSCredentials, name: String, detail: String) -> AWSCredentialSource {
        AWSCredentialSource(name: name, detail: detail, isFixed: true) { credentials }
    }

    /// Asks the source (blocking: files, processes, HTTP). Errors are `AWSCredentialsError`
    /// naming this source and what went wrong.
    public func fetch() throws(AWSCredentialsError) -> AWSCredentials {
        do {
            return try fetcher()
        } catch let error as AWSCredentialsError {
            throw error
        } catch {
            throw AWSCredentialsError("could not get AWS credentials from \(name)", tried: ["\(detail): \(error)"])
        }
    }

    public var description: String { "\(name) (\(detail))" }
}

/// Why one source gave no credentials, in words safe to log.
struct CredentialSourceFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The small HTTP exchanges of credential sources (STS, the container endpoint, instance
/// metadata) over the same libcurl transfer the S3 client uses. Blocking.
enum CredentialHTTP {
    /// Sends `request` and collects a body of at most `limit` bytes. Transport failures come out
    /// as `CredentialSourceFailure` naming the URL (never the headers, which carry tokens).
    static func send(_ request: HTTPRequest, timeouts: TransferTimeouts, limit: Int = 1 << 20) throws -> (status: Int, body: [UInt8]) {
        var body: [UInt8] = []
        do {
            let head = try CurlTransfer().perform(request, timeouts: timeouts) { chunk in
                guard body.count + chunk.count <= limit else { return false }
                body.append(contentsOf: chunk)
                return true
            }
            return (head.status, body)
        } catch let error as TransferError {
            throw CredentialSourceFailure("\(request.method) \(request.url): \(error)")
        }
    }

    /// Form encoding (`application/x-www-form-urlencoded`) as the AWS query APIs take it.
    static func form(_ parameters: [(String, String)]) -> [UInt8] {
        Array(parameters.map { S3URI.encode($0.0, keepSlash: false) + "=" + S3URI.encode($0.1, keepSlash: false) }
            .joined(separator: "&").utf8)
    }
}

/// The JSON document the container endpoint, instance metadata and credential processes answer
/// with. The token is `Token` (container, IMDS) or `SessionToken` (credential_process).
struct CredentialDocument: Decodable {
    var AccessKeyId: String?
    var SecretAccessKey: String?
    var Token: String?
    var SessionToken: String?
    var Expiration: String?
    /// IMDS: `Success` when the role's credentials are ready.
    var Code: String?
    /// credential_process: must be 1.
    var Version: Int?

    /// Credentials from `bytes`, or a failure that says what was missing (never a value).
    static func parse(_ bytes: [UInt8], what: String) throws -> AWSCredentials {
        let document: CredentialDocument
        do {
            document = try JSONDecoder().decode(CredentialDocument.self, from: Data(bytes))
        } catch {
            throw CredentialSourceFailure("\(what) is not the JSON credentials document (\(bytes.count) bytes)")
        }
        if let code = document.Code, code != "Success" { throw CredentialSourceFailure("\(what) says Code \(code)") }
        guard let id = document.AccessKeyId, !id.isEmpty, let secret = document.SecretAccessKey, !secret.isEmpty else {
            throw CredentialSourceFailure("\(what) has no AccessKeyId or SecretAccessKey")
        }
        var expiration: Date?
        if let text = document.Expiration {
            guard let date = S3Date.parseISO8601(text) ?? parseOffsetDate(text) else {
                throw CredentialSourceFailure("\(what) has an unreadable Expiration \(text)")
            }
            expiration = date
        }
        let token = (document.Token ?? document.SessionToken).flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: token, expiration: expiration)
    }

    /// RFC 3339 with a numeric offset (`2026-12-07T19:24:09+00:00`), which credential processes
    /// written in Python tend to print.
    private static func parseOffsetDate(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}
