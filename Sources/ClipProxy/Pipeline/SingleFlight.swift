import Synchronization

/// Runs one piece of work per key at a time: callers that arrive while it runs await the same
/// result instead of starting it again (a frame-index load, a second-tier upload).
final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let running = Mutex<[Key: Task<Value, any Error>]>([:])

    func run(_ key: Key, _ work: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = running.withLock { tasks -> Task<Value, any Error> in
            if let task = tasks[key] { return task }
            // The task's clean-up takes the same lock, so it cannot run before it is registered.
            let task = Task { [self] in
                defer { _ = running.withLock { $0.removeValue(forKey: key) } }
                return try await work()
            }
            tasks[key] = task
            return task
        }
        return try await task.value
    }
}
