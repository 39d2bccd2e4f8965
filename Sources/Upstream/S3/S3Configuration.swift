import Foundation

/// Where an S3 client sends requests and how hard it tries.
public struct S3Configuration: Sendable {
    /// Scheme and authority of the service, e.g. `https://s3.eu-west-2.amazonaws.com` or
    /// `http://127.0.0.1:9000` (any S3-compatible store). A path prefix, if any, is kept.
    public var endpoint: URL
    /// The region requests are signed for.
    public var region: String
    /// `true`: `http://host:port/bucket/key`. `false`: virtual-hosted, `https://bucket.host/key`
    /// (path style all the same for an endpoint that is an IP address, and for buckets whose names
    /// cannot be a DNS label, or contain dots over https).
    public var pathStyle: Bool
    /// Connect and low-speed (stall) bounds for every attempt.
    public var timeouts: TransferTimeouts
    public var retry: S3RetryPolicy
    /// curl handles (and with them live connections) kept for reuse between requests.
    public var maxIdleConnections: Int

    public init(endpoint: URL, region: String = "eu-west-2", pathStyle: Bool = false,
                timeouts: TransferTimeouts = TransferTimeouts(), retry: S3RetryPolicy = S3RetryPolicy(),
                maxIdleConnections: Int = 8) {
        self.endpoint = endpoint
        self.region = region
        self.pathStyle = pathStyle
        self.timeouts = timeouts
        self.retry = retry
        self.maxIdleConnections = maxIdleConnections
    }

    /// AWS's own regional endpoint, `https://s3.<region>.amazonaws.com`, virtual-hosted.
    public static func aws(region: String = "eu-west-2") -> S3Configuration {
        S3Configuration(endpoint: URL(string: "https://s3.\(region).amazonaws.com")!, region: region)
    }
}

/// Retries with exponential backoff and jitter for transient failures of idempotent requests.
public struct S3RetryPolicy: Sendable {
    /// Attempts in total, the first included (1 = never retry).
    public var maxAttempts: Int
    /// The backoff before retry n is drawn from [d/2, d] with d = min(maxDelay, baseDelay · 2^(n−1))
    /// ("equal jitter": never zero, so a throttled service always gets some air).
    public var baseDelay: Duration
    public var maxDelay: Duration

    public init(maxAttempts: Int = 4, baseDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(5)) {
        self.maxAttempts = max(1, maxAttempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    public static let never = S3RetryPolicy(maxAttempts: 1)

    /// How long to wait after failed attempt `attempt` (1-based) before the next one.
    public func delay(afterAttempt attempt: Int) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let ceiling = min(maxDelay, baseDelay * (1 << exponent))
        let seconds = Double(ceiling.components.seconds) + Double(ceiling.components.attoseconds) / 1e18
        return .seconds(Double.random(in: (seconds / 2)...max(seconds / 2, seconds)))
    }
}

/// The endpoint taken apart once: what goes in URLs and in the signed `Host` header.
struct S3Endpoint: Sendable {
    let scheme: String
    /// Host as it appears in a URL (IPv6 in brackets).
    let host: String
    /// Present only when it is not the scheme's default, so `Host` matches what curl would send.
    let port: Int?
    /// Path prefix without a trailing slash ("" for none).
    let basePath: String
    /// An IPv4 or IPv6 literal, which cannot take a bucket name in front.
    let isIPAddress: Bool

    init(_ url: URL) throws(S3Error) {
        guard let components = URLComponents(url: url, resolvingAgainstBaseURL: false),
              let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = components.host, !host.isEmpty
        else {
            throw S3Error(kind: .invalidRequest, code: "InvalidEndpoint",
                          message: "S3 endpoint must be an http or https URL with a host, got \(url.absoluteString)")
        }
        self.scheme = scheme
        self.host = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        isIPAddress = host.contains(":") || (labels.count == 4 && labels.allSatisfy { UInt8($0) != nil })
        let defaultPort = scheme == "https" ? 443 : 80
        port = components.port.flatMap { $0 == defaultPort ? nil : $0 }
        var path = components.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        basePath = path
    }

    /// `host[:port]`, with `bucket.` in front for virtual-hosted requests.
    func authority(bucketPrefix: String? = nil) -> String {
        let base = port.map { "\(host):\($0)" } ?? host
        return bucketPrefix.map { "\($0).\(base)" } ?? base
    }
}
