import Foundation

/// A small free list of libcurl handles, so consecutive requests reuse a live connection when the
/// peer keeps it open (S3 does; moto closes after every response, which costs nothing here).
///
/// `@unchecked Sendable`: the list is only read or changed while `lock` is held, and a handle is
/// lent to exactly one caller at a time (it is out of the list while lent), which is the
/// one-thread-at-a-time rule `CurlTransfer` needs.
public final class CurlHandlePool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [CurlTransfer] = []
    /// Handles kept for reuse; more may be in use at once, the extra ones are freed on return.
    public let maxIdle: Int

    public init(maxIdle: Int = 8) {
        self.maxIdle = max(0, maxIdle)
    }

    /// Lends a handle (an idle one, or a new one) to `body` on the calling thread, then takes it back.
    public func withHandle<T>(_ body: (CurlTransfer) throws -> T) rethrows -> T {
        let handle = lock.withLock { idle.popLast() } ?? CurlTransfer()
        defer {
            lock.withLock {
                if idle.count < maxIdle { idle.append(handle) }
            }
        }
        return try body(handle)
    }

    /// Handles waiting for reuse right now.
    public var idleCount: Int { lock.withLock { idle.count } }
}
