/// An S3 operation that did not succeed: S3's own error (parsed from its XML body, or from the
/// status alone when there is no body, as for HEAD), a transport failure, or a local check.
/// Messages never contain request headers, signatures, credentials or pre-signed query strings.
public struct S3Error: Error, CustomStringConvertible, Sendable {
    /// What the caller can do about it; the HTTP server maps these to its own statuses.
    public enum Kind: Sendable, Equatable {
        /// NoSuchKey, NoSuchBucket, or a 404 without a body.
        case notFound
        /// AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId, ExpiredToken, other 403s.
        case denied
        /// SlowDown, 429: the service asks for fewer requests.
        case throttled
        /// 5xx, InternalError, RequestTimeout, or a response this client cannot make sense of.
        case serverError
        /// No (complete) response: connection refused, reset, timed out or stalled.
        case transport
        /// Any other 4xx, and requests rejected before sending (bad key, bad expiry, bad endpoint).
        case invalidRequest
        /// The object changed between the attempts of one read (its ETag differs, or If-Match failed).
        case objectChanged
        /// No valid AWS credentials to sign with: none configured, or their source (STS, the
        /// container endpoint, instance metadata …) failed and the last ones expired. The
        /// message names each source tried and why it failed.
        case credentialsUnavailable
    }

    public let kind: Kind
    /// S3's error code (`NoSuchKey`, `SignatureDoesNotMatch`, `SlowDown` …); for a response without
    /// a body `NotFound`, `Forbidden`, `PreconditionFailed` or `HTTP<status>`; for transport
    /// failures `Transport`; for local checks a descriptive code such as `InvalidExpires`.
    public let code: String
    /// HTTP status of the failed response, nil when there was none.
    public let status: Int?
    public internal(set) var message: String
    /// `x-amz-request-id` (or the XML `RequestId`), for AWS support.
    public let requestId: String?
    /// `GetObject`, `HeadObject`, `ListObjectsV2`, `PutObject`, `CreateBucket`, `PresignGetObject`.
    public internal(set) var operation: String
    public internal(set) var bucket: String?
    public internal(set) var key: String?
    /// How many attempts were made before giving up.
    public internal(set) var attempts: Int
    /// For `.transport`: what libcurl reported.
    public let transferKind: TransferError.Kind?

    init(kind: Kind, code: String, status: Int? = nil, message: String, requestId: String? = nil,
         operation: String = "", bucket: String? = nil, key: String? = nil, attempts: Int = 0,
         transferKind: TransferError.Kind? = nil) {
        self.kind = kind
        self.code = code
        self.status = status
        self.message = message
        self.requestId = requestId
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.attempts = attempts
        self.transferKind = transferKind
    }

    public var description: String {
        var target = ""
        if let bucket { target = " s3://\(bucket)" + (key.map { "/\($0)" } ?? "") }
        var text = "S3 \(operation.isEmpty ? "request" : operation)\(target) failed: \(code)"
        if let status { text += " (HTTP \(status))" }
        if !message.isEmpty { text += ": \(message)" }
        if let requestId { text += " [request id \(requestId)]" }
        if attempts > 1 { text += " after \(attempts) attempts" }
        return text
    }

    /// Worth another attempt of an idempotent request: throttling, 5xx, RequestTimeout, and
    /// connections that failed, reset or stalled. Never another 4xx.
    public var isRetryable: Bool {
        switch kind {
        case .throttled: true
        case .serverError: status != nil
        case .transport: transferKind == .connect || transferKind == .timeout || transferKind == .reset
        case .notFound, .denied, .invalidRequest, .objectChanged, .credentialsUnavailable: false
        }
    }

    /// S3 refused the request because the credentials it was signed with expired: `ExpiredToken`
    /// (or its relatives), or a bodiless 400 to a HEAD signed with temporary credentials (HEAD
    /// answers carry no error code; S3 answers an expired token with 400, a denial with 403).
    func suggestsExpiredCredentials(_ signedWith: AWSCredentials) -> Bool {
        switch code {
        case "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired": return true
        case "HTTP400": return signedWith.sessionToken != nil && operation.hasPrefix("Head")
        default: return false
        }
    }

    /// No credentials to sign with.
    static func credentialsUnavailable(_ error: AWSCredentialsError) -> S3Error {
        S3Error(kind: .credentialsUnavailable, code: "CredentialsUnavailable", message: error.description)
    }

    /// The kind for an S3 error code, falling back on the HTTP status for codes not listed.
    static func kind(code: String, status: Int) -> Kind {
        switch code {
        case "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NoSuchUpload", "NotFound":
            return .notFound
        case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken", "InvalidToken",
             "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "RequestTimeTooSkewed", "Forbidden":
            return .denied
        case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests":
            return .throttled
        case "InternalError", "ServiceUnavailable", "RequestTimeout":
            return .serverError
        case "PreconditionFailed":
            return .objectChanged
        default:
            switch status {
            case 404: return .notFound
            case 401, 403: return .denied
            case 412: return .objectChanged
            case 429: return .throttled
            case 500...: return .serverError
            default: return .invalidRequest
            }
        }
    }

    /// An error response. `body` is S3's XML error document, or empty (HEAD, some proxies).
    static func response(status: Int, head: HTTPResponseHead, body: [UInt8]) -> S3Error {
        let document = body.isEmpty ? nil : S3XML.parse(body)
        let error = document.flatMap { $0.name == "Error" ? $0 : nil }
        let code = error?.childText("Code").flatMap { $0.isEmpty ? nil : $0 } ?? Self.codeForBodilessStatus(status)
        let message = error?.childText("Message") ?? ""
        let requestId = head.header("x-amz-request-id") ?? error?.childText("RequestId")
        return S3Error(kind: kind(code: code, status: status), code: code, status: status, message: message,
                       requestId: requestId)
    }

    static func transport(_ error: TransferError) -> S3Error {
        if error.kind == .upload {
            return S3Error(kind: .invalidRequest, code: "UploadSourceUnreadable", message: error.detail)
        }
        return S3Error(kind: .transport, code: "Transport", message: error.description, transferKind: error.kind)
    }

    private static func codeForBodilessStatus(_ status: Int) -> String {
        switch status {
        case 404: "NotFound"
        case 403: "Forbidden"
        case 412: "PreconditionFailed"
        case 416: "InvalidRange"
        default: "HTTP\(status)"
        }
    }
}
