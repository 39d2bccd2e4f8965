import Foundation

/// When temporary credentials are renewed and how failures are retried.
public struct AWSCredentialsRefreshPolicy: Sendable {
    /// Renew this long before `Expiration`, or half the credentials' lifetime when that is
    /// shorter (credentials that last 60 s are renewed 30 s before they end).
    public var margin: Duration
    /// Never sign with credentials that end within this (or within a quarter of their lifetime,
    /// when that is shorter); ask the source first.
    public var expiryBuffer: Duration
    /// Backoff between failed background refreshes: `retryBase` doubling up to `retryMax`,
    /// always early enough to try once more before the current credentials expire.
    public var retryBase: Duration
    public var retryMax: Duration
    /// With no valid credentials, requests ask the source themselves at most once per this
    /// interval; requests in between fail at once with the last error.
    public var demandInterval: Duration
    /// The least time between two renewals (a source that hands back the same credentials
    /// until shortly before they expire, as instance metadata does), also for renewals forced
    /// by S3's refusals.
    public var minimumInterval: Duration

    public init(margin: Duration = .seconds(300), expiryBuffer: Duration = .seconds(10), retryBase: Duration = .seconds(1),
                retryMax: Duration = .seconds(30), demandInterval: Duration = .seconds(1), minimumInterval: Duration = .seconds(5)) {
        self.margin = margin
        self.expiryBuffer = expiryBuffer
        self.retryBase = retryBase
        self.retryMax = retryMax
        self.demandInterval = demandInterval
        self.minimumInterval = minimumInterval
    }
}

/// What the credentials are doing, reported after every attempt to get them (for metrics).
public struct AWSCredentialsStatus: Sendable {
    /// The source in use (`AWSCredentialSource.name`), nil before one was found.
    public let source: String?
    /// When the current credentials end; nil when they do not (or there are none).
    public let expiration: Date?
    /// Whether the attempt that produced this status failed.
    public let failed: Bool
    /// Failed attempts since the last success.
    public let consecutiveFailures: Int
}

/// The credentials an S3 client signs with: found through the chain on first use (never at
/// construction, so a server starts without them), then renewed in the background before they
/// expire when they are temporary.
///
/// - One renewal at a time: concurrent requests share it, and while it runs (or fails, retried
///   with backoff) requests keep signing with the current credentials as long as they are valid.
/// - Past expiry with the source down, requests fail with an `AWSCredentialsError` naming the
///   source and the cause; the background thread keeps trying, and the first success serves
///   again without a restart.
/// - `refresh(rejecting:)` renews at once when S3 says the credentials expired.
///
/// The background work runs on a thread of its own (sources block on HTTP, files and
/// processes), never on an event loop; it ends when this object is released.
public final class RefreshingAWSCredentials: Sendable, CustomStringConvertible {
    private let state: CredentialsState

    /// Credentials from `provider`'s chain, resolved on first use.
    /// - Parameters:
    ///   - log: what happens (resolved, renewed, renewal failed), with dotted metadata keys
    ///     (`aws.credentials.source`, `aws.credentials.expires_in_s`, `aws.credentials.error`, …);
    ///     never a secret.
    ///   - onStatus: called after every attempt, on the thread that made it.
    public init(provider: AWSCredentialsProvider, policy: AWSCredentialsRefreshPolicy = AWSCredentialsRefreshPolicy(),
                log: (@Sendable (S3LogRecord) -> Void)? = nil, onStatus: (@Sendable (AWSCredentialsStatus) -> Void)? = nil) {
        state = CredentialsState(resolve: { () throws(AWSCredentialsError) in try provider.resolveSource() },
                                 policy: policy, log: log, onStatus: onStatus)
    }

    /// Credentials from one source already known (no chain).
    init(source: AWSCredentialSource, policy: AWSCredentialsRefreshPolicy = AWSCredentialsRefreshPolicy(),
         log: (@Sendable (S3LogRecord) -> Void)? = nil) {
        state = CredentialsState(resolve: { () throws(AWSCredentialsError) in (source, try source.fetch()) },
                                 policy: policy, log: log, onStatus: nil)
    }

    /// Credentials that never change.
    public init(fixed credentials: AWSCredentials) {
        state = CredentialsState(resolve: { () throws(AWSCredentialsError) in
            (.fixed(credentials, name: "static", detail: "credentials given to the client"), credentials)
        }, policy: AWSCredentialsRefreshPolicy(), log: nil, onStatus: nil)
        state.prime()
    }

    deinit { state.stop() }

    /// Valid credentials to sign with now: the current ones, or (when there are none, or they
    /// are about to expire) new ones from the source, asked on this thread. Blocking.
    public func current() throws(AWSCredentialsError) -> AWSCredentials { try state.current() }

    /// Renews now because S3 refused `rejected` (ExpiredToken). Returns the credentials to retry
    /// with, or nil when there is nothing newer to try (static credentials, or the source handed
    /// back the same key). When another request already renewed them, no new renewal is made.
    public func refresh(rejecting rejected: AWSCredentials) throws(AWSCredentialsError) -> AWSCredentials? {
        try state.refresh(rejecting: rejected)
    }

    /// The current credentials if there are any, without asking the source (for scrubbing text
    /// of secrets).
    public var peek: AWSCredentials? { state.peek }

    /// Seconds the credentials in use have left at `now`: `.infinity` for credentials that never
    /// expire (static keys), negative once they have expired, nil before any were found. For the
    /// server's gauge; asks no source.
    public func secondsUntilExpiry(at now: Date = Date()) -> Double? {
        guard let current = state.peek else { return nil }
        return current.expiration.map { $0.timeIntervalSince(now) } ?? .infinity
    }

    /// Where the credentials come from, nil until first use.
    public var source: AWSCredentialSource? { state.peekSource }

    public var description: String {
        "RefreshingAWSCredentials(\(source.map { "\($0)" } ?? "not resolved yet"), key id \(peek?.accessKeyId ?? "none"))"
    }
}

/// The mutable part of `RefreshingAWSCredentials`, shared with its background thread (which
/// must not keep the owner alive). `@unchecked Sendable`: every stored `var` is read and written
/// only while `condition` is locked.
private final class CredentialsState: @unchecked Sendable {
    let resolve: @Sendable () throws(AWSCredentialsError) -> (source: AWSCredentialSource, credentials: AWSCredentials)
    let policy: AWSCredentialsRefreshPolicy
    let log: (@Sendable (S3LogRecord) -> Void)?
    let onStatus: (@Sendable (AWSCredentialsStatus) -> Void)?
    private let condition = NSCondition()

    private var source: AWSCredentialSource?
    private var credentials: AWSCredentials?
    /// When `credentials` arrived (their lifetime is `expiration - obtained`).
    private var obtained = Date.distantPast
    private var fetching = false
    private var lastError: AWSCredentialsError?
    private var lastFailure: Date?
    private var consecutiveFailures = 0
    /// When the background thread renews next; nil: nothing to renew.
    private var nextRefresh: Date?
    private var threadStarted = false
    private var stopped = false

    init(resolve: @escaping @Sendable () throws(AWSCredentialsError) -> (source: AWSCredentialSource, credentials: AWSCredentials),
         policy: AWSCredentialsRefreshPolicy, log: (@Sendable (S3LogRecord) -> Void)?,
         onStatus: (@Sendable (AWSCredentialsStatus) -> Void)?) {
        self.resolve = resolve
        self.policy = policy
        self.log = log
        self.onStatus = onStatus
    }

    /// Resolves at once (static credentials cannot fail).
    func prime() {
        condition.lock()
        defer { condition.unlock() }
        _ = try? fetchLocked(reason: "first use")
    }

    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    var peek: AWSCredentials? { condition.withLock { credentials } }
    var peekSource: AWSCredentialSource? { condition.withLock { source } }

    func current() throws(AWSCredentialsError) -> AWSCredentials {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let credentials, usable(credentials, at: Date()) { return credentials }
            if fetching {
                condition.wait()
                continue
            }
            if let lastFailure, let lastError, Date().timeIntervalSince(lastFailure) < policy.demandInterval.seconds {
                throw lastError
            }
            try fetchLocked(reason: credentials == nil ? "first use" : "expired")
        }
    }

    func refresh(rejecting rejected: AWSCredentials) throws(AWSCredentialsError) -> AWSCredentials? {
        condition.lock()
        defer { condition.unlock() }
        while fetching { condition.wait() }
        if let credentials, credentials.accessKeyId != rejected.accessKeyId, usable(credentials, at: Date()) {
            return credentials  // renewed meanwhile by someone else
        }
        guard let source, !source.isFixed else { return nil }
        // Credentials this fresh did not expire: S3 refused them for another reason. Asking the
        // source again would only add load to it (one renewal per failing request).
        if let credentials, credentials.accessKeyId == rejected.accessKeyId,
           Date().timeIntervalSince(obtained) < policy.minimumInterval.seconds {
            return nil
        }
        try fetchLocked(reason: "rejected by S3")
        guard let credentials, credentials.accessKeyId != rejected.accessKeyId || credentials.sessionToken != rejected.sessionToken else {
            return nil
        }
        return credentials
    }

    /// Valid for longer than the buffer. Called for the current credentials only (their
    /// lifetime counts from `obtained`).
    private func usable(_ credentials: AWSCredentials, at now: Date) -> Bool {
        guard let expiration = credentials.expiration else { return true }
        return expiration.timeIntervalSince(now) > buffer(for: expiration)
    }

    /// `expiryBuffer`, or a quarter of the credentials' lifetime when that is shorter, so that
    /// short-lived credentials are renewed (at half their lifetime) well before they are unusable.
    private func buffer(for expiration: Date) -> TimeInterval {
        min(policy.expiryBuffer.seconds, max(0, expiration.timeIntervalSince(obtained)) / 4)
    }

    /// Asks the source (or the chain, before one is known) with the lock released meanwhile, then
    /// records the outcome and plans the next renewal. Called with the lock held and no fetch running.
    private func fetchLocked(reason: String) throws(AWSCredentialsError) {
        fetching = true
        let known = source
        let previous = credentials
        condition.unlock()
        let outcome: Result<(source: AWSCredentialSource, credentials: AWSCredentials), AWSCredentialsError>
        if let known {
            do { outcome = .success((known, try known.fetch())) } catch { outcome = .failure(error) }
        } else {
            do { outcome = .success(try resolve()) } catch { outcome = .failure(error) }
        }
        condition.lock()
        fetching = false
        defer { condition.broadcast() }
        let now = Date()
        switch outcome {
        case .success(let found):
            source = found.source
            credentials = found.credentials
            obtained = now
            lastError = nil
            lastFailure = nil
            consecutiveFailures = 0
            nextRefresh = found.credentials.expiration.map { refreshTime(for: $0, now: now) }
            if nextRefresh != nil { startThreadIfNeeded() }
            var metadata = ["aws.credentials.source": found.source.name, "aws.credentials.reason": reason]
            if let expiration = found.credentials.expiration {
                metadata["aws.credentials.expires_in_s"] = "\(Int(expiration.timeIntervalSince(now)))"
            }
            if let old = previous?.expiration { metadata["aws.credentials.previous_expires_in_s"] = "\(Int(old.timeIntervalSince(now)))" }
            emit(.info, previous == nil ? "aws credentials resolved" : "aws credentials refreshed", metadata)
            report(failed: false)
        case .failure(let error):
            lastError = error
            lastFailure = now
            consecutiveFailures += 1
            var metadata = ["aws.credentials.source": known?.name ?? "chain", "aws.credentials.reason": reason,
                            "aws.credentials.error": error.description, "aws.credentials.failures": "\(consecutiveFailures)"]
            if threadStarted {
                let retry = retryTime(now: now)
                nextRefresh = retry
                metadata["aws.credentials.retry_in_ms"] = "\(Int(retry.timeIntervalSince(now) * 1000))"
            }
            if let expiration = credentials?.expiration {
                metadata["aws.credentials.valid_for_s"] = "\(Int(expiration.timeIntervalSince(now)))"
            }
            emit(.warning, "aws credentials refresh failed", metadata)
            report(failed: true)
            throw error
        }
    }

    /// `expiration - min(margin, lifetime / 2)`, but not sooner than `minimumInterval` from now.
    private func refreshTime(for expiration: Date, now: Date) -> Date {
        let lifetime = expiration.timeIntervalSince(now)
        let lead = min(policy.margin.seconds, lifetime / 2)
        return max(now.addingTimeInterval(policy.minimumInterval.seconds), expiration.addingTimeInterval(-lead))
    }

    /// Backoff after a failure, capped so one more attempt happens while the credentials are valid.
    private func retryTime(now: Date) -> Date {
        let exponent = min(consecutiveFailures - 1, 20)
        var delay = min(policy.retryMax.seconds, policy.retryBase.seconds * Double(1 << exponent))
        delay = Double.random(in: (delay / 2)...delay)
        if let expiration = credentials?.expiration {
            let lastChance = expiration.timeIntervalSince(now) - buffer(for: expiration) - 1
            if lastChance > policy.retryBase.seconds / 2 { delay = min(delay, lastChance) }
        }
        return now.addingTimeInterval(max(delay, 0.05))
    }

    private func startThreadIfNeeded() {
        guard !threadStarted else { return }
        threadStarted = true
        let thread = Thread { [self] in backgroundLoop() }
        thread.name = "aws-credentials"
        thread.start()
    }

    /// Renews at `nextRefresh` until stopped. Holds only this state, never the owner.
    private func backgroundLoop() {
        condition.lock()
        defer { condition.unlock() }
        while !stopped {
            guard let next = nextRefresh else {
                condition.wait()
                continue
            }
            if Date() < next {
                _ = condition.wait(until: next)
                continue
            }
            if fetching {
                condition.wait()
                continue
            }
            nextRefresh = nil
            _ = try? fetchLocked(reason: "background")
        }
    }

    private func emit(_ level: S3LogRecord.Level, _ message: String, _ metadata: [String: String]) {
        guard let log else { return }
        let record = S3LogRecord(level: level, message: message, metadata: metadata)
        condition.unlock()
        log(record)
        condition.lock()
    }

    private func report(failed: Bool) {
        guard let onStatus else { return }
        let status = AWSCredentialsStatus(source: source?.name, expiration: credentials?.expiration, failed: failed,
                                          consecutiveFailures: consecutiveFailures)
        condition.unlock()
        onStatus(status)
        condition.lock()
    }
}

extension Duration {
    /// Seconds as a Double, for `Date` arithmetic.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
