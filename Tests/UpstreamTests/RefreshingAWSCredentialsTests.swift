import Foundation
import Synchronization
import Testing
@testable import Upstream

/// The renewal rules of `RefreshingAWSCredentials` as pure behaviour, with a source that counts
/// its fetches and hands out a new key each time.
@Suite("Renewing AWS credentials: one fetch at a time, no renewal storms")
struct RefreshingAWSCredentialsTests {
    /// A source whose every fetch takes `delay` and returns key `KEY<n>`, valid for `lifetime`.
    final class CountingSource: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        let delay: TimeInterval
        let lifetime: TimeInterval

        init(delay: TimeInterval = 0, lifetime: TimeInterval = 600) {
            self.delay = delay
            self.lifetime = lifetime
        }

        var fetches: Int { lock.withLock { count } }

        var source: AWSCredentialSource {
            AWSCredentialSource(name: "counting", detail: "test source") { [self] in
                Thread.sleep(forTimeInterval: delay)
                let n = lock.withLock { count += 1; return count }
                return AWSCredentials(accessKeyId: "KEY\(n)", secretAccessKey: "secret-\(n)", sessionToken: "token-\(n)",
                                      expiration: Date().addingTimeInterval(lifetime))
            }
        }
    }

    @Test("Concurrent first requests share one fetch")
    func singleFlight() throws {
        let counting = CountingSource(delay: 0.3)
        let credentials = RefreshingAWSCredentials(source: counting.source)
        let seen = Mutex<Set<String>>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            let key = (try? credentials.current().accessKeyId) ?? "error"
            seen.withLock { _ = $0.insert(key) }
        }
        #expect(counting.fetches == 1)
        #expect(seen.withLock { $0 } == ["KEY1"])
    }

    @Test("A refusal of brand-new credentials renews nothing; of older ones, one renewal shared by every refused request")
    func forcedRenewalIsBounded() throws {
        let counting = CountingSource()
        let policy = AWSCredentialsRefreshPolicy(minimumInterval: .milliseconds(300))
        let credentials = RefreshingAWSCredentials(source: counting.source, policy: policy)
        let first = try credentials.current()
        #expect(try credentials.refresh(rejecting: first) == nil, "obtained just now: not an expiry")
        #expect(counting.fetches == 1)

        Thread.sleep(forTimeInterval: 0.4)
        let keys = Mutex<Set<String>>([])
        DispatchQueue.concurrentPerform(iterations: 6) { _ in
            let key = (try? credentials.refresh(rejecting: first))??.accessKeyId ?? "none"
            keys.withLock { _ = $0.insert(key) }
        }
        #expect(keys.withLock { $0 } == ["KEY2"], "every refused request retries with the one renewal")
        #expect(counting.fetches == 2)
    }

    @Test("Renewed in the background ahead of expiry, at half the lifetime when that is under the margin")
    func backgroundRenewal() throws {
        let counting = CountingSource(lifetime: 2)
        let log = LogCapture()
        let policy = AWSCredentialsRefreshPolicy(expiryBuffer: .milliseconds(200), minimumInterval: .milliseconds(100))
        let credentials = RefreshingAWSCredentials(source: counting.source, policy: policy, log: log.record)
        #expect(try credentials.current().accessKeyId == "KEY1")
        Thread.sleep(forTimeInterval: 1.5)
        #expect(counting.fetches == 2, "renewed once, about 1 s in")
        #expect(credentials.peek?.accessKeyId == "KEY2")
        let renewal = log.all.first { $0.message == "aws credentials refreshed" }
        #expect(renewal?.metadata["aws.credentials.reason"] == "background")
        #expect(renewal?.metadata["aws.credentials.previous_expires_in_s"] == "1" || renewal?.metadata["aws.credentials.previous_expires_in_s"] == "0")
    }
}
