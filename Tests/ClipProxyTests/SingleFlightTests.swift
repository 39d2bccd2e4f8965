import Foundation
import Testing
@testable import ClipProxy

/// `SingleFlight` in process: one execution per key at a time, its result shared.
@Suite("SingleFlight: one piece of work per key at a time", .queuedBehindBlockingSuites)
struct SingleFlightTests {
    /// Starts `callers` concurrent runs of `key` whose work stays in flight until every caller
    /// has arrived, then returns what each caller got.
    private func concurrentRuns(_ flight: SingleFlight<String, Int>, key: String, callers: Int, executions: ProbeTally,
                                work: @escaping @Sendable (Int) throws -> Int) async -> [Result<Int, ProbeFailure>] {
        let arrived = ProbeTally()
        return await withTaskGroup(of: Result<Int, ProbeFailure>.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    arrived.add()
                    do {
                        return .success(try await flight.run(key) {
                            let execution = executions.add()
                            while arrived.value < callers {
                                try Task.checkCancellation()
                                await Task.yield()
                            }
                            // The last caller counted itself just before calling `run`: let it get there.
                            for _ in 0..<100 { await Task.yield() }
                            return try work(execution)
                        })
                    } catch let error as ProbeFailure {
                        return .failure(error)
                    } catch {
                        Issue.record("unexpected error \(error)")
                        return .failure(ProbeFailure(id: -1))
                    }
                }
            }
            var results: [Result<Int, ProbeFailure>] = []
            for await result in group { results.append(result) }
            return results
        }
    }

    @Test("Concurrent runs of one key execute the work once and all get its result")
    func concurrentCallersShareOneExecution() async throws {
        let flight = SingleFlight<String, Int>()
        let executions = ProbeTally()
        let results = await concurrentRuns(flight, key: "episode", callers: 24, executions: executions) { 1000 + $0 }
        #expect(executions.value == 1)
        #expect(results.count == 24)
        #expect(results.allSatisfy { $0 == .success(1001) }, "results: \(results)")
    }

    @Test("An error reaches every caller of that execution; the next run executes again")
    func errorsPropagateToAll() async throws {
        let flight = SingleFlight<String, Int>()
        let executions = ProbeTally()
        let results = await concurrentRuns(flight, key: "episode", callers: 12, executions: executions) {
            throw ProbeFailure(id: $0)
        }
        #expect(executions.value == 1)
        #expect(results.count == 12)
        #expect(results.allSatisfy { $0 == .failure(ProbeFailure(id: 1)) }, "results: \(results)")
        // A failure is not remembered: the next caller runs the work again.
        let again = try await flight.run("episode") { executions.add() }
        #expect(again == 2 && executions.value == 2)
    }

    @Test("A run after the previous one completed executes again")
    func laterRunExecutesAgain() async throws {
        let flight = SingleFlight<String, Int>()
        let executions = ProbeTally()
        let first = try await flight.run("k") { executions.add() }
        let second = try await flight.run("k") { executions.add() }
        let third = try await flight.run("k") { executions.add() }
        #expect(first == 1 && second == 2 && third == 3)
    }

    @Test("Different keys run independently: one key's work completes while another's is still in flight")
    func keysAreIndependent() async throws {
        let flight = SingleFlight<String, Int>()
        let blocked = ProbeGate()
        let aStarted = ProbeGate()
        let timeline = ProbeTimeline()
        async let a = flight.run("a") {
            await aStarted.open()
            await blocked.wait()
            await timeline.record("a done")
            return 1
        }
        await aStarted.wait()
        // If "b" waited behind "a" (or shared its result), this would hang or return 1.
        let b = try await flight.run("b") {
            await timeline.record("b done")
            return 2
        }
        #expect(b == 2)
        await blocked.open()
        #expect(try await a == 1)
        #expect(await timeline.entries == ["b done", "a done"])
    }
}
