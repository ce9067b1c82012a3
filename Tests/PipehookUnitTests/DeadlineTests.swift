import PipehookStore
import Synchronization
import Testing

/// The one utility that bounds waits: what the caller gets, and what happens to the work.
@Suite struct DeadlineTests {
    struct Boom: Error {}

    @Test func workThatEndsInTimeGivesItsResult() async {
        #expect(await Deadline.within(.seconds(10), { 42 }) == 42)
        let failed = await Deadline.within(.seconds(10), { () async throws -> Int in throw Boom() })
        #expect(throws: Boom.self) { try failed?.get() }
    }

    @Test func slowWorkIsCancelledAndTheCallerGetsNil() async throws {
        let cancelled = Atomic<Bool>(false)
        let started = ContinuousClock.now
        let answer = await Deadline.within(.milliseconds(100)) { () async -> Int in
            try? await Task.sleep(for: .seconds(30))
            cancelled.store(Task.isCancelled, ordering: .releasing)
            return 1
        }
        #expect(answer == nil)
        #expect(ContinuousClock.now - started < .seconds(20))
        // The work saw its cancellation (it ends by itself, soon after).
        for _ in 0..<200 where !cancelled.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(10)) }
        let sawCancellation = cancelled.load(ordering: .acquiring)
        #expect(sawCancellation)
    }

    /// Work that ignores cancellation (a commit already sent) does not hold the caller.
    @Test func workThatIgnoresCancellationDoesNotHoldTheCaller() async {
        let release = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let started = ContinuousClock.now
        let answer = await Deadline.within(.milliseconds(100)) { () async -> Int in
            await withCheckedContinuation { continuation in release.withLock { $0 = continuation } }
            return 1
        }
        #expect(answer == nil)
        #expect(ContinuousClock.now - started < .seconds(20))
        // Let it end, or the test would leak a waiting task.
        while release.withLock({ $0 }) == nil { await Task.yield() }
        release.withLock { $0?.resume() }
    }

    @Test func aCancelledCallerStopsWaiting() async {
        let started = ContinuousClock.now
        let waiter = Task { await Deadline.within(.seconds(60), { () async -> Int in try? await Task.sleep(for: .seconds(60)); return 1 }) }
        try? await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        #expect(await waiter.value == nil)
        #expect(ContinuousClock.now - started < .seconds(30))
    }
}

/// The process-wide ticker behind `Deadline`: nothing stays registered once waits end.
@Suite struct DeadlineTickerTests {
    @Test func waitsThatEndOrExpireLeaveNothingRegistered() async {
        let ticker = DeadlineTicker(resolution: .milliseconds(10))
        async let quick = ticker.within(.seconds(30)) { 1 }
        async let slow = ticker.within(.milliseconds(50)) { () async throws -> Int in
            try await Task.sleep(for: .seconds(30))
            return 2
        }
        let (a, b) = await (quick, slow)
        #expect((try? a?.get()) == 1)
        #expect(b == nil)
        #expect(ticker.pending == 0)
    }

    @Test func manyConcurrentWaitsEachGetTheirOwnAnswer() async {
        let ticker = DeadlineTicker(resolution: .milliseconds(10))
        let answers = await withTaskGroup(of: (Int, Int?).self) { group in
            for index in 0..<500 {
                group.addTask {
                    let answer = await ticker.within(.milliseconds(index.isMultiple(of: 2) ? 30_000 : 20)) { () async throws -> Int in
                        if !index.isMultiple(of: 2) { try await Task.sleep(for: .seconds(30)) }
                        return index
                    }
                    return (index, try? answer?.get())
                }
            }
            return await group.reduce(into: [Int: Int?]()) { $0[$1.0] = $1.1 }
        }
        #expect(answers.count == 500)
        #expect(answers.allSatisfy { index, answer in index.isMultiple(of: 2) ? answer == index : answer == nil })
        #expect(ticker.pending == 0)
    }
}
