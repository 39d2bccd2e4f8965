import Synchronization

/// Admission control, for fills (and the dashboard's catalog queries): at most `capacity` run at
/// once; up to `queueLimit` more wait in arrival order for at most `maxWait`; anything beyond is
/// refused at once (the client gets 503 with Retry-After) instead of piling work onto a saturated
/// machine.
actor FillSlots {
    let capacity: Int
    let queueLimit: Int
    let maxWait: Duration
    private var running = 0
    private var waiting: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    private var nextId: UInt64 = 0
    /// `running` and the queue's length, readable without the actor (by `/metrics`).
    private let runningNow = Atomic<Int>(0)
    private let waitingNow = Atomic<Int>(0)

    init(capacity: Int, queueLimit: Int, maxWait: Duration) {
        self.capacity = capacity
        self.queueLimit = queueLimit
        self.maxWait = maxWait
    }

    /// Takes a slot, waiting in the queue if all are busy. Throws `ServiceError.overloaded` when
    /// the queue is full or the wait runs out. Every successful call needs one `release()`.
    func acquire() async throws {
        if running < capacity {
            running += 1
            publish()
            return
        }
        guard waiting.count < queueLimit else { throw ServiceError.overloaded }
        let id = nextId
        nextId += 1
        let maxWait = maxWait
        Task { [weak self] in
            try? await Task.sleep(for: maxWait)
            await self?.giveUp(id)
        }
        try await withCheckedThrowingContinuation {
            waiting.append((id, $0))
            publish()
        }
    }

    /// Frees a slot: the longest waiter gets it directly, so the count never dips and rises again.
    func release() {
        if waiting.isEmpty {
            running -= 1
        } else {
            waiting.removeFirst().continuation.resume()
        }
        publish()
    }

    private func giveUp(_ id: UInt64) {
        guard let index = waiting.firstIndex(where: { $0.id == id }) else { return }
        waiting.remove(at: index).continuation.resume(throwing: ServiceError.overloaded)
        publish()
    }

    var snapshot: (running: Int, waiting: Int) { (running, waiting.count) }

    /// What `snapshot` said at the last change, without waiting for the actor.
    nonisolated var published: (running: Int, waiting: Int) { (runningNow.load(ordering: .relaxed), waitingNow.load(ordering: .relaxed)) }

    private func publish() {
        runningNow.store(running, ordering: .relaxed)
        waitingNow.store(waiting.count, ordering: .relaxed)
    }
}

/// All fill slots are busy and the queue is full, or a cold clip waited too long for a slot.
enum ServiceError: Error, CustomStringConvertible {
    case overloaded
    var description: String { "too many clips are being cut right now; retry in a second" }
}
