import Foundation
import Support

/// An S3 client over libcurl with AWS Signature V4: streaming ranged GET that resumes after a
/// dropped connection, HEAD, ListObjectsV2, PutObject (bytes or a file), CreateBucket and
/// pre-signed GET URLs. Path-style and virtual-hosted addressing, any S3-compatible endpoint.
///
/// Every operation is blocking and runs entirely on the calling thread (backoff sleeps included).
/// The server calls them from a thread pool, never from an event loop. Any number of threads may
/// use one client at once: each call borrows its own curl handle from a small pool, so
/// connections are reused between calls when the peer keeps them open.
///
/// Transient failures (5xx, throttling, RequestTimeout, connection refused/reset/stalled) are
/// retried with jittered exponential backoff up to `configuration.retry.maxAttempts` attempts in
/// total; other 4xx never are. Every operation here is idempotent (CreateBucket counts
/// BucketAlreadyOwnedByYou as success), so each may be retried.
///
/// Nothing this client logs or throws contains credentials, signatures, request headers or
/// pre-signed query strings; S3's messages are additionally scrubbed of the secret and token.
public final class S3Client: Sendable, CustomStringConvertible {
    public let configuration: S3Configuration
    let endpoint: S3Endpoint
    /// What requests are signed with, asked for every attempt (temporary credentials renew).
    public let credentials: RefreshingAWSCredentials
    let pool: CurlHandlePool
    let log: (@Sendable (S3LogRecord) -> Void)?
    let observe: (@Sendable (S3AttemptReport) -> Void)?

    /// - Parameter log: receives what the client has to say (retries and failures at `.warning`,
    ///   resumed reads at `.info`, completed requests and not-found answers at `.debug`); the
    ///   server bridges it to swift-log.
    /// - Parameter observe: receives every attempt as it ends (the server's metrics); called on
    ///   the requesting thread, so it must be quick.
    public init(configuration: S3Configuration, credentials: RefreshingAWSCredentials,
                log: (@Sendable (S3LogRecord) -> Void)? = nil,
                observe: (@Sendable (S3AttemptReport) -> Void)? = nil) throws(S3Error) {
        self.configuration = configuration
        endpoint = try S3Endpoint(configuration.endpoint)
        self.credentials = credentials
        pool = CurlHandlePool(maxIdle: configuration.maxIdleConnections)
        self.log = log
        self.observe = observe
    }

    /// Signs every request with these credentials.
    public convenience init(configuration: S3Configuration, credentials: AWSCredentials,
                            log: (@Sendable (S3LogRecord) -> Void)? = nil) throws(S3Error) {
        try self.init(configuration: configuration, credentials: RefreshingAWSCredentials(fixed: credentials), log: log)
    }

    /// Credentials from the provider's chain (see `AWSCredentialsProvider`), found on the first
    /// request and renewed before they expire. Without any, each request fails with
    /// `S3Error.Kind.credentialsUnavailable`; construction never does.
    public convenience init(configuration: S3Configuration, credentialsFrom provider: AWSCredentialsProvider,
                            log: (@Sendable (S3LogRecord) -> Void)? = nil) throws(S3Error) {
        try self.init(configuration: configuration, credentials: RefreshingAWSCredentials(provider: provider, log: log), log: log)
    }

    public var description: String {
        "S3Client(\(endpoint.scheme)://\(endpoint.authority())\(endpoint.basePath), region \(configuration.region), "
            + "\(configuration.pathStyle ? "path-style" : "virtual-hosted"), \(credentials))"
    }

    /// A signer with valid credentials, or `.credentialsUnavailable`.
    func signer() throws(S3Error) -> SigV4Signer {
        do {
            return SigV4Signer(credentials: try credentials.current(), region: configuration.region)
        } catch {
            throw S3Error.credentialsUnavailable(error)
        }
    }

    // MARK: - Addressing

    /// Which operation on which object, for errors and log metadata.
    struct Call {
        let operation: String
        let bucket: String
        let key: String?
    }

    /// Scheme+authority, the `Host` header value, and the S3-encoded path (key encoded exactly once).
    func address(bucket: String, key: String?) -> (base: String, host: String, path: String) {
        let encodedKey = key.map { S3URI.encode($0, keepSlash: true) }
        if !configuration.pathStyle && !endpoint.isIPAddress && Self.isVirtualHostable(bucket, https: endpoint.scheme == "https") {
            let host = endpoint.authority(bucketPrefix: bucket)
            return ("\(endpoint.scheme)://\(host)", host, endpoint.basePath + "/" + (encodedKey ?? ""))
        }
        let host = endpoint.authority()
        let path = endpoint.basePath + "/" + S3URI.encode(bucket, keepSlash: false) + (encodedKey.map { "/" + $0 } ?? "")
        return ("\(endpoint.scheme)://\(host)", host, path)
    }

    /// A bucket name that can be a DNS label prefix: 3–63 of `a-z 0-9 - .`, letters or digits at
    /// both ends, no `..`, not an IPv4 address; over https no dots (the wildcard certificate
    /// covers one label only). Other names use path style even when virtual hosting is asked for.
    static func isVirtualHostable(_ bucket: String, https: Bool) -> Bool {
        let bytes = Array(bucket.utf8)
        guard (3...63).contains(bytes.count) else { return false }
        func isAlnum(_ b: UInt8) -> Bool { (0x61...0x7A).contains(b) || (0x30...0x39).contains(b) }
        guard isAlnum(bytes.first!), isAlnum(bytes.last!),
              bytes.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }),
              !bucket.contains("..") else { return false }
        if bucket.contains(".") {
            if https { return false }
            if bucket.split(separator: ".").count == 4 && bucket.split(separator: ".").allSatisfy({ Int($0) != nil }) { return false }
        }
        return true
    }

    func validate(_ call: Call) throws(S3Error) {
        guard !call.bucket.isEmpty, !call.bucket.contains("/") else {
            throw failure(call, .invalidRequest, "InvalidBucketName", "bucket name must be non-empty and contain no '/'")
        }
        if let key = call.key, key.isEmpty {
            throw failure(call, .invalidRequest, "InvalidKey", "object key must be non-empty")
        }
    }

    func failure(_ call: Call, _ kind: S3Error.Kind, _ code: String, _ message: String) -> S3Error {
        S3Error(kind: kind, code: code, message: message, operation: call.operation, bucket: call.bucket, key: call.key)
    }

    // MARK: - One attempt

    /// Signs and performs one request with a pooled handle. Transport failures come out as
    /// `S3Error` (kind `.transport`); errors thrown by the callbacks come out unchanged.
    func perform(_ call: Call, method: String, query: [(String, String)] = [],
                 headers: [(name: String, value: String)] = [], body: HTTPRequestBody? = nil,
                 payloadHash: String = SigV4Signer.emptyPayloadHash,
                 onHead: (HTTPResponseHead) throws -> Void = { _ in },
                 onBody: (UnsafeRawBufferPointer) throws -> Void) throws -> HTTPResponseHead {
        let (base, host, path) = address(bucket: call.bucket, key: call.key)
        var all: [(name: String, value: String)] = [("Host", host)] + headers
        all += try signer().signedHeaders(method: method, path: path, query: query, headers: all,
                                    payloadHash: payloadHash, date: Date())
        let url = base + path + (query.isEmpty ? "" : "?" + SigV4Signer.canonicalQuery(query))
        let request = HTTPRequest(method: method, url: url, headers: all, upload: body)
        do {
            return try pool.withHandle { curl in
                try curl.perform(request, timeouts: configuration.timeouts, onHead: onHead) { chunk in
                    try onBody(chunk)
                    return true
                }
            }
        } catch let error as TransferError {
            throw S3Error.transport(error)
        }
    }

    /// One request whose response body is small (errors, LIST pages, PUT and HEAD replies) and
    /// is collected whole, up to `limit` bytes. Throws S3's error for a non-2xx status.
    func collect(_ call: Call, method: String, query: [(String, String)] = [],
                 headers: [(name: String, value: String)] = [], body: HTTPRequestBody? = nil,
                 payloadHash: String = SigV4Signer.emptyPayloadHash,
                 limit: Int = 16 << 20) throws -> (head: HTTPResponseHead, body: [UInt8]) {
        var data: [UInt8] = []
        let head = try perform(call, method: method, query: query, headers: headers, body: body,
                               payloadHash: payloadHash) { chunk in
            guard data.count + chunk.count <= limit else {
                throw S3Error(kind: .serverError, code: "UnexpectedResponse", message: "response body exceeds \(limit) bytes")
            }
            data.append(contentsOf: chunk)
        }
        guard (200..<300).contains(head.status) else {
            throw S3Error.response(status: head.status, head: head, body: data)
        }
        return (head, data)
    }

    // MARK: - Retries

    /// An error thrown by the caller's own callback: passed through untouched, never retried.
    struct ConsumerFailure: Error {
        let error: any Error
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out. Errors leave
    /// with the operation, bucket, key and attempt count filled in.
    func withRetries<T>(_ call: Call, _ attempt: (_ number: Int) throws -> T) throws -> T {
        let policy = configuration.retry
        var number = 1
        var renewed = false
        while true {
            let started = ContinuousClock.now
            let signedWith = credentials.peek
            do {
                let value = try attempt(number)
                report(call, since: started, failure: nil, retrying: false)
                emit(.debug, "s3 request completed", call, ["s3.attempt": "\(number)",
                                                            "s3.duration_ms": "\((ContinuousClock.now - started).milliseconds)"])
                return value
            } catch let failure as ConsumerFailure {
                // The caller's own callback stopped the transfer: not S3's doing.
                report(call, since: started, failure: nil, retrying: false)
                throw failure.error
            } catch var error as S3Error {
                error.operation = call.operation
                error.bucket = call.bucket
                error.key = call.key
                error.attempts = number
                error.message = scrub(error.message)
                var metadata = ["s3.attempt": "\(number)", "s3.code": error.code, "s3.error": error.message]
                if let status = error.status { metadata["s3.status"] = "\(status)" }
                if let requestId = error.requestId { metadata["s3.request_id"] = requestId }
                // Credentials S3 calls expired: renew them once and try again (nothing was
                // delivered: errors come before any body byte).
                if !renewed, let signedWith = signedWith ?? credentials.peek, error.suggestsExpiredCredentials(signedWith) {
                    renewed = true
                    emit(.warning, "s3 credentials rejected; renewing", call, metadata)
                    let fresh: AWSCredentials?
                    let cause = error.cause
                    do { fresh = try credentials.refresh(rejecting: signedWith) } catch {
                        report(call, since: started, failure: cause, retrying: false)
                        throw S3Error.credentialsUnavailable(error)
                    }
                    if fresh != nil {
                        report(call, since: started, failure: cause, retrying: true)
                        continue
                    }
                }
                let retrying = error.isRetryable && number < policy.maxAttempts
                report(call, since: started, failure: error.cause, retrying: retrying)
                guard retrying else {
                    // A missing object is an everyday answer (a cache probe), not a problem.
                    emit(error.kind == .notFound ? .debug : .warning, "s3 request failed", call, metadata)
                    throw error
                }
                let delay = policy.delay(afterAttempt: number)
                metadata["s3.delay_ms"] = "\(delay.milliseconds)"
                emit(.warning, "s3 request retrying", call, metadata)
                Thread.sleep(forTimeInterval: Double(delay.milliseconds) / 1000)
                number += 1
            }
        }
    }

    private func report(_ call: Call, since started: ContinuousClock.Instant, failure: S3FailureCause?, retrying: Bool) {
        observe?(S3AttemptReport(operation: call.operation, bucket: call.bucket, duration: ContinuousClock.now - started,
                                 failure: failure, retrying: retrying))
    }

    // MARK: - Logging and redaction

    func emit(_ level: S3LogRecord.Level, _ message: String, _ call: Call, _ extra: [String: String] = [:]) {
        guard let log else { return }
        var metadata = extra
        metadata["s3.operation"] = call.operation
        metadata["s3.bucket"] = call.bucket
        if let key = call.key { metadata["s3.key"] = key }
        log(S3LogRecord(level: level, message: message, metadata: metadata))
    }

    /// Removes the secret and the session token from text that came from elsewhere (S3's error
    /// messages), in case a service ever echoes them.
    func scrub(_ text: String) -> String {
        var clean = text
        let current = credentials.peek
        for secret in [current?.secretAccessKey ?? "", current?.sessionToken ?? ""] where secret.count >= 4 {
            clean = clean.replacingOccurrences(of: secret, with: "<redacted>")
        }
        return clean
    }
}
