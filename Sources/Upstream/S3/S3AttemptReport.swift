/// One S3 request (one attempt of an operation) as it ended, for whoever counts them: the server
/// turns these into latency histograms and error counters. Upstream itself keeps no metrics.
public struct S3AttemptReport: Sendable {
    /// `GetObject`, `HeadObject`, `ListObjectsV2`, `PutObject`, `DeleteObject`, `HeadBucket`, `CreateBucket`.
    public let operation: String
    public let bucket: String
    /// From signing the request to its last byte (or its failure).
    public let duration: Duration
    /// Why the attempt failed; nil when it succeeded, or when S3 answered "no such object"
    /// (an everyday answer to a cache probe, not a fault).
    public let failure: S3FailureCause?
    /// Another attempt follows (a retry, or a retry with renewed credentials).
    public let retrying: Bool
}

/// Why an S3 request failed, in a few fixed classes (metric label values).
public enum S3FailureCause: String, Sendable, CaseIterable {
    case timeout
    /// The connection dropped mid-transfer.
    case reset
    /// The peer could not be reached.
    case connect
    case serverError = "5xx"
    /// SlowDown, 429: S3 asks for fewer requests.
    case throttled
    /// Denied, precondition failed, or another 4xx (not "no such object").
    case clientError = "4xx"
}

extension S3Error {
    /// The class of this failure; nil for "no such object", and when no request was sent
    /// because no credentials were valid (counted by the credentials' own metrics).
    public var cause: S3FailureCause? {
        switch kind {
        case .notFound, .credentialsUnavailable: nil
        case .throttled: .throttled
        case .serverError: .serverError
        case .denied, .invalidRequest, .objectChanged: .clientError
        case .transport:
            switch transferKind {
            case .timeout: .timeout
            case .connect: .connect
            default: .reset
            }
        }
    }
}
