import Foundation
import Testing
@testable import ClipProxy

/// `FillSlots` in process: capacity, the bounded queue, its maximum wait, and hand-over order.
@Suite("FillSlots: admission control for fills", .queuedBehindBlockingSuites)
struct FillSlotsTests {
    /// Counts the holders of a slot. The first holders stay until `capacity` of them hold at
    /// once, so the test knows the limit was reached (not merely never exceeded by luck).
    actor Holders {
        let capacity: Int
        private(set) var current = 0
        private(set) var peak = 0
        private(set) var served = 0
        private var filledOnce = false
        private var held: [CheckedContinuation<Void, Never>] = []

        init(capacity: Int) { self.capacity = capacity }

        func enter() async {
            current += 1
            peak = max(peak, current)
            if current >= capacity { letEveryoneGo() }
            if !filledOnce {
                // Cancelled (the time limit, when capacity is never reached): let go rather than hang.
                await withTaskCancellationHandler {
                    await withCheckedContinuation { held.append($0) }
                } onCancel: {
                    Task { await self.letEveryoneGo() }
                }
            }
        }

        private func letEveryoneGo() {
            filledOnce = true
            let waiting = held
            held = []
            for continuation in waiting { continuation.resume() }
        }

        func leave() {
            current -= 1
            served += 1
        }
    }

    /// Suspends until `count` acquirers wait in the queue (or the test's time limit cancels it).
    private func waitUntilQueued(_ slots: FillSlots, _ count: Int) async throws {
        while await slots.snapshot.waiting < count {
            try Task.checkCancellation()
            await Task.yield()
        }
    }

    @Test("50 concurrent acquirers: never more than capacity hold a slot, capacity is reached, all are served")
    func capacityHolds() async throws {
        // A wait as long as the suite's time limit: beside suites that hold the cooperative pool
        // (see `queuedBehindBlockingSuites`) a waiter can be starved of threads for minutes.
        let slots = FillSlots(capacity: 4, queueLimit: 64, maxWait: .seconds(600))
        let holders = Holders(capacity: 4)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await slots.acquire()
                    await holders.enter()
                    for _ in 0..<3 { await Task.yield() }
                    await holders.leave()
                    await slots.release()
                }
            }
            try await group.waitForAll()
        }
        #expect(await holders.peak == 4)
        #expect(await holders.served == 50)
        let after = await slots.snapshot
        #expect(after.running == 0 && after.waiting == 0)
    }

    @Test("Beyond the queue limit an acquirer is refused with overloaded at once, without taking a place")
    func queueLimitRefusesAtOnce() async throws {
        // An hour's wait: refused "at once" is then anything far short of it, however long this
        // test waits for a thread in a busy `make test`.
        let slots = FillSlots(capacity: 1, queueLimit: 2, maxWait: .seconds(3600))
        try await slots.acquire()  // the only slot, held by the test
        let timeline = ProbeTimeline()
        let started = ContinuousClock.now
        let (firstOutcome, refusalWait) = try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<3 {
                group.addTask {
                    do {
                        try await slots.acquire()
                        await timeline.record("acquired \(i)")
                        await slots.release()
                    } catch {
                        #expect((error as? ServiceError) == .overloaded)
                        await timeline.record("refused")
                    }
                }
            }
            // One of the three finds the queue full: it is refused while the slot is still held.
            while await timeline.entries.isEmpty {
                try Task.checkCancellation()
                await Task.yield()
            }
            let first = await timeline.entries
            let wait = ContinuousClock.now - started
            #expect(await slots.snapshot.waiting == 2)
            await slots.release()
            try await group.waitForAll()
            return (first, wait)
        }
        #expect(firstOutcome == ["refused"])
        #expect(refusalWait < .seconds(300), "refused after \(refusalWait); the queue's wait is an hour")
        let entries = await timeline.entries
        #expect(entries.filter { $0 == "refused" }.count == 1)
        #expect(entries.filter { $0.hasPrefix("acquired") }.count == 2)
        // A queue of zero refuses as soon as the slots are busy.
        let noQueue = FillSlots(capacity: 1, queueLimit: 0, maxWait: .seconds(60))
        try await noQueue.acquire()
        await #expect(throws: ServiceError.overloaded) { try await noQueue.acquire() }
        await noQueue.release()
        try await noQueue.acquire()
        await noQueue.release()
    }

    @Test("A waiter that waits longer than maxWait is refused, and its place and slot go to nobody")
    func maxWaitRefuses() async throws {
        let slots = FillSlots(capacity: 1, queueLimit: 4, maxWait: .milliseconds(30))
        try await slots.acquire()
        let started = ContinuousClock.now
        await #expect(throws: ServiceError.overloaded) { try await slots.acquire() }
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(30), "refused after \(waited), before its maximum wait")
        #expect(await slots.snapshot.waiting == 0)
        await slots.release()
        // The refused waiter holds nothing: the slot is free for the next acquirer at once.
        #expect(await slots.snapshot.running == 0)
        try await slots.acquire()
        await slots.release()
    }

    @Test("Released slots go to waiters in arrival order, directly: a newcomer cannot overtake the queue")
    func releasesServeInArrivalOrder() async throws {
        let slots = FillSlots(capacity: 1, queueLimit: 16, maxWait: .seconds(600))
        try await slots.acquire()
        let timeline = ProbeTimeline()
        let firstMayGo = ProbeGate()
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Should a check below throw (the time limit), waiter 0 must not hold its slot forever.
            defer { Task { await firstMayGo.open() } }
            for i in 0..<6 {
                group.addTask {
                    try await slots.acquire()
                    await timeline.record("\(i)")
                    if i == 0 { await firstMayGo.wait() }
                    await slots.release()
                }
                try await waitUntilQueued(slots, i + 1)  // arrival order is the order they were queued in
            }
            await slots.release()
            // The slot went straight to waiter 0: still one running, one fewer waiting, at once.
            let handedOver = await slots.snapshot
            #expect(handedOver.running == 1 && handedOver.waiting == 5)
            // A newcomer now queues behind the five instead of taking the slot.
            group.addTask {
                try await slots.acquire()
                await timeline.record("newcomer")
                await slots.release()
            }
            try await waitUntilQueued(slots, 6)
            await firstMayGo.open()
            try await group.waitForAll()
        }
        #expect(await timeline.entries == ["0", "1", "2", "3", "4", "5", "newcomer"])
        let after = await slots.snapshot
        #expect(after.running == 0 && after.waiting == 0)
    }
}
