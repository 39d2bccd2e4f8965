import Foundation
import Index
import NIOCore
import Testing
import TestSupport
@testable import ClipProxy

/// `Fill` and `FillCoordinator` in process: readers stream a clip while it is made, coalescing.
@Suite("Fill: one clip made in memory while readers stream it", .queuedBehindBlockingSuites)
struct FillTests {
    private func append(_ fill: Fill, _ bytes: ArraySlice<UInt8>) throws {
        try bytes.withUnsafeBytes { try fill.append($0) }
    }

    /// What a waiter ended with: nil when it returned, else the error it threw.
    private func outcome(_ body: () async throws -> Void) async -> (any Error)? {
        do {
            try await body()
            return nil
        } catch {
            return error
        }
    }

    @Test("Sixteen readers get exactly the appended bytes, in order, while the producer appends odd chunk sizes")
    func readersFollowTheProducer() async throws {
        let expected = probeBytes(200_003, seed: 1)
        let fill = Fill(key: ClipKey(identity: "fill-readers"), length: Int64(expected.count), createdMs: 42)
        // Each reader asks for its own chunk size, from one byte to more than the whole clip.
        let readerChunks = [1, 3, 17, 100, 640, 999, 4096, 4097, 8191, 12_345, 50_000, 65_536, 77_777, 131_072, 200_003, 250_000]
        let producerChunks = [1, 2, 3, 4093, 7, 65_537, 13, 31_337, 1021, 0, 5]
        let received = try await withThrowingTaskGroup(of: (Int, [UInt8])?.self) { group in
            for chunk in readerChunks {
                group.addTask {
                    try await fill.waitUntilStarted()
                    var got: [UInt8] = []
                    var offset: Int64 = 0
                    while offset < fill.length {
                        let end = min(fill.length, offset + Int64(chunk))
                        try await fill.waitForBytes(end)
                        got += fill.bytes(offset..<end).readableBytesView
                        offset = end
                    }
                    try await fill.waitUntilFinished()
                    return (chunk, got)
                }
            }
            group.addTask {
                var at = 0
                var turn = 0
                while at < expected.count {
                    let end = min(expected.count, at + producerChunks[turn % producerChunks.count])
                    try self.append(fill, expected[at..<end])
                    if at == 0 && end > 0 { fill.markStarted() }
                    at = end
                    turn += 1
                    await Task.yield()  // let readers in between chunks
                }
                fill.finish(nil)
                return nil
            }
            var received: [(Int, [UInt8])] = []
            for try await result in group {
                if let result { received.append(result) }
            }
            return received
        }
        #expect(received.count == readerChunks.count)
        for (chunk, got) in received {
            #expect(sameBytes(got, expected), "the reader reading \(chunk) bytes at a time got \(got.count) bytes that differ")
        }
        #expect(sameBytes(fill.contents, expected))
        #expect(fill.createdMs == 42)
    }

    @Test("waitUntilStarted resolves only after markStarted, not when bytes arrive; later calls return at once")
    func startWaitsForMarkStarted() async throws {
        let fill = Fill(key: ClipKey(identity: "fill-start"), length: 100, createdMs: 0)
        let timeline = ProbeTimeline()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try await fill.waitUntilStarted()
                    await timeline.record("started")
                }
            }
            // A waiter that comes once bytes are there (but the fill is not marked) waits as well.
            group.addTask {
                try await fill.waitForBytes(10)
                try await fill.waitUntilStarted()
                await timeline.record("started")
            }
            group.addTask {
                try self.append(fill, probeBytes(10, seed: 2)[...])
                try await fill.waitForBytes(10)
                // Give the waiters every chance to (wrongly) return before the fill is marked.
                for _ in 0..<200 { await Task.yield() }
                #expect(!fill.hasStarted)
                await timeline.record("marked")
                fill.markStarted()
                fill.markStarted()  // a second call changes nothing
            }
            try await group.waitForAll()
        }
        #expect(await timeline.entries == ["marked"] + Array(repeating: "started", count: 5))
        #expect(fill.hasStarted)
        try await fill.waitUntilStarted()
    }

    @Test("A fill that fails before it started throws that error to every waiter, early or late")
    func failureBeforeStart() async throws {
        let fill = Fill(key: ClipKey(identity: "fill-refused"), length: 1000, createdMs: 0)
        let refused = ProbeFailure(id: 7)
        let errors = await withTaskGroup(of: (any Error)?.self) { group in
            for _ in 0..<5 {
                group.addTask { await self.outcome { try await fill.waitUntilStarted() } }
            }
            for count in [1, 250, 999, 1000, 5000] {
                group.addTask { await self.outcome { try await fill.waitForBytes(Int64(count)) } }
            }
            group.addTask { await self.outcome { try await fill.waitUntilFinished() } }
            var errors: [(any Error)?] = []
            for _ in 0..<50 { await Task.yield() }  // most waiters are suspended by now
            fill.finish(refused)
            for await error in group { errors.append(error) }
            return errors
        }
        #expect(errors.count == 11)
        for error in errors {
            #expect((error as? ProbeFailure) == refused, "a waiter ended with \(String(describing: error))")
        }
        #expect(!fill.hasStarted)
        // Waiters that come after the failure get it too.
        await #expect(throws: refused) { try await fill.waitUntilStarted() }
        await #expect(throws: refused) { try await fill.waitForBytes(1) }
        await #expect(throws: refused) { try await fill.waitUntilFinished() }
    }

    @Test("After start, a failure throws to readers still waiting; the bytes already written stay readable")
    func failureAfterStart() async throws {
        let expected = probeBytes(5000, seed: 3)
        let fill = Fill(key: ClipKey(identity: "fill-broken"), length: 5000, createdMs: 0)
        try append(fill, expected[0..<1000])
        fill.markStarted()
        let failure = ProbeFailure(id: 9)
        let (early, waiting) = try await withThrowingTaskGroup(of: (String, (any Error)?).self) { group in
            // A reader whose bytes are written gets them.
            try await fill.waitForBytes(1000)
            let early = Array(fill.bytes(0..<1000).readableBytesView)
            for count in [1001, 3000, 5000] {
                group.addTask { ("bytes \(count)", await self.outcome { try await fill.waitForBytes(Int64(count)) }) }
            }
            group.addTask { ("finished", await self.outcome { try await fill.waitUntilFinished() }) }
            for _ in 0..<50 { await Task.yield() }
            fill.finish(failure)
            var waiting: [(String, (any Error)?)] = []
            for try await result in group { waiting.append(result) }
            return (early, waiting)
        }
        #expect(sameBytes(early, expected[0..<1000]))
        #expect(waiting.count == 4)
        for (what, error) in waiting {
            #expect((error as? ProbeFailure) == failure, "\(what) ended with \(String(describing: error))")
        }
        #expect(fill.hasStarted)
        // What was written before the failure is still there for a reader that already waited for it.
        #expect(sameBytes(Array(fill.bytes(0..<1000).readableBytesView), expected[0..<1000]))
        #expect(sameBytes(Array(fill.bytes(400..<600).readableBytesView), expected[400..<600]))
        // New waits learn at once that the body cannot be completed; none may start a response.
        await #expect(throws: failure) { try await fill.waitForBytes(2000) }
        await #expect(throws: failure) { try await fill.waitForBytes(10) }
        await #expect(throws: failure) { try await fill.waitUntilStarted() }
    }

    @Test("finish(nil) with fewer bytes than the length is an incomplete failure, for waiters before and after")
    func shortFinishIsIncomplete() async throws {
        let fill = Fill(key: ClipKey(identity: "fill-short"), length: 100, createdMs: 0)
        try append(fill, probeBytes(60, seed: 4)[...])
        fill.markStarted()
        func isIncomplete(_ error: (any Error)?) -> Bool {
            if case .incomplete(let written, let expected)? = error as? FillError { return written == 60 && expected == 100 }
            return false
        }
        let early = await withTaskGroup(of: (any Error)?.self) { group in
            group.addTask { await self.outcome { try await fill.waitForBytes(100) } }
            group.addTask { await self.outcome { try await fill.waitUntilFinished() } }
            for _ in 0..<50 { await Task.yield() }
            fill.finish(nil)
            var errors: [(any Error)?] = []
            for await error in group { errors.append(error) }
            return errors
        }
        #expect(early.count == 2)
        #expect(early.allSatisfy(isIncomplete), "waiters ended with \(early)")
        #expect(isIncomplete(await outcome { try await fill.waitUntilFinished() }))
        #expect(isIncomplete(await outcome { try await fill.waitForBytes(100) }))
        #expect(isIncomplete(await outcome { try await fill.waitForBytes(30) }))
    }

    @Test("finish(nil) with every byte releases all waiters, start waiters included, even without markStarted")
    func wholeFinishReleasesEveryone() async throws {
        let expected = probeBytes(300, seed: 5)
        let fill = Fill(key: ClipKey(identity: "fill-whole"), length: 300, createdMs: 0)
        let timeline = ProbeTimeline()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await fill.waitUntilStarted(); await timeline.record("started") }
            group.addTask { try await fill.waitUntilFinished(); await timeline.record("finished") }
            group.addTask {
                try self.append(fill, expected[0..<299])
                try self.append(fill, expected[299...])
                // Every byte is written, but the fill has not finished: the finish waiter stays put.
                try await fill.waitForBytes(300)
                for _ in 0..<200 { await Task.yield() }
                await timeline.record("finishing")
                fill.finish(nil)
            }
            try await group.waitForAll()
        }
        let entries = await timeline.entries
        #expect(entries.first == "finishing" && Set(entries) == ["finishing", "started", "finished"] && entries.count == 3,
                "order: \(entries)")
        try await fill.waitUntilFinished()
        try await fill.waitForBytes(300)
        #expect(sameBytes(fill.contents, expected))
    }

    @Test("Appending past the length throws overlong and writes nothing of that chunk")
    func appendPastLength() async throws {
        let expected = probeBytes(10, seed: 6)
        let fill = Fill(key: ClipKey(identity: "fill-overlong"), length: 10, createdMs: 0)
        try append(fill, expected[0..<6])
        let refused = #expect(throws: FillError.self) { try self.append(fill, probeBytes(5, seed: 60)[...]) }
        guard case .overlong(let planned)? = refused else { Issue.record("expected overlong, got \(String(describing: refused))"); return }
        #expect(planned == 10)
        try append(fill, expected[6..<10])
        try append(fill, [][...])  // nothing more is still fine
        #expect(throws: FillError.self) { try self.append(fill, [0][...]) }
        fill.finish(nil)
        try await fill.waitUntilFinished()
        #expect(fill.contents == expected)
    }
}

@Suite("FillCoordinator: one fill per clip key", .queuedBehindBlockingSuites)
struct FillCoordinatorTests {
    @Test("Concurrent claims of one key: exactly one .mine, every other .running with that same fill")
    func oneClaimWins() async throws {
        let coordinator = FillCoordinator()
        let key = ClipKey(identity: "coordinated")
        let fills = (0..<40).map { _ in Fill(key: key, length: 10, createdMs: 0) }
        let claims = await withTaskGroup(of: (Fill, FillCoordinator.Claim).self) { group in
            for fill in fills {
                group.addTask { (fill, await coordinator.claim(fill, isStored: { false })) }
            }
            var claims: [(Fill, FillCoordinator.Claim)] = []
            for await claim in group { claims.append(claim) }
            return claims
        }
        let mine = claims.compactMap { fill, claim -> Fill? in if case .mine = claim { fill } else { nil } }
        try #require(mine.count == 1)
        for (_, claim) in claims {
            switch claim {
            case .mine: continue
            case .running(let running): #expect(running === mine[0])
            case .stored: Issue.record("a claim saw the clip stored; nothing stored it")
            }
        }
        #expect(await coordinator.join(key) === mine[0])
    }

    @Test("A stored clip is .stored; a running fill wins over the store without asking it")
    func storedAndRunning() async throws {
        let coordinator = FillCoordinator()
        let key = ClipKey(identity: "stored")
        let asked = ProbeTally()
        let claim = await coordinator.claim(Fill(key: key, length: 10, createdMs: 0), isStored: { asked.add(); return true })
        guard case .stored = claim else { Issue.record("expected .stored, got \(claim)"); return }
        #expect(asked.value == 1)
        #expect(await coordinator.join(key) == nil)

        let first = Fill(key: key, length: 10, createdMs: 0)
        guard case .mine = await coordinator.claim(first, isStored: { false }) else { Issue.record("expected .mine"); return }
        let second = await coordinator.claim(Fill(key: key, length: 10, createdMs: 0), isStored: { asked.add(); return true })
        guard case .running(let running) = second else { Issue.record("expected .running, got \(second)"); return }
        #expect(running === first)
        #expect(asked.value == 1)
    }

    @Test("remove forgets only the very fill that was registered")
    func removeOnlyTheSameInstance() async throws {
        let coordinator = FillCoordinator()
        let key = ClipKey(identity: "removed")
        let registered = Fill(key: key, length: 10, createdMs: 0)
        let stranger = Fill(key: key, length: 10, createdMs: 0)
        guard case .mine = await coordinator.claim(registered, isStored: { false }) else { Issue.record("expected .mine"); return }
        await coordinator.remove(stranger)
        #expect(await coordinator.join(key) === registered)
        await coordinator.remove(registered)
        #expect(await coordinator.join(key) == nil)
        let next = Fill(key: key, length: 10, createdMs: 0)
        guard case .mine = await coordinator.claim(next, isStored: { false }) else { Issue.record("expected .mine after remove"); return }
        // A late remove of the old fill (its clean-up running after a new fill registered) keeps the new one.
        await coordinator.remove(registered)
        #expect(await coordinator.join(key) === next)
        // Other keys are independent.
        #expect(await coordinator.join(ClipKey(identity: "other")) == nil)
    }
}
