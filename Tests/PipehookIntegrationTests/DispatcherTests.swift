import Foundation
import Logging
import PipehookDispatch
import PipehookFormats
import PipehookHandlers
import PipehookSettings
import PipehookSQLite
import PipehookStore
import Synchronization
import Testing

/// The dispatcher against a real SQLite store, with steps whose results a test scripts.
@Suite struct DispatcherTests {
    /// Records each call and answers from a script per step kind.
    final class ScriptedSteps: Sendable {
        let calls = Mutex<[String]>([])
        let script: Mutex<[String: [StepOutcome.Result]]>

        init(_ script: [String: [StepOutcome.Result]]) { self.script = Mutex(script) }

        func answer(_ name: String, _ context: StepContext) -> StepOutcome {
            calls.withLock { $0.append("\(name)#\(context.attempt)") }
            let result = script.withLock { script -> StepOutcome.Result in
                guard var queue = script[name], !queue.isEmpty else { return .succeeded }
                let next = queue.removeFirst()
                script[name] = queue
                return next
            }
            return StepOutcome(result: result, summary: "\(name) \(result)")
        }

        var runners: StepRunners {
            StepRunners(
                exec: { step, context in self.answer(step.command[0], context) },
                download: { _, context in self.answer("download", context) },
                post: { step, context in self.answer(step.url, context) }
            )
        }
    }

    static func routes(_ yaml: String) -> [Route] {
        try! SettingsParser.parse(yaml: "sources: {p: {secrets: [\(Fixture.secret)]}}\n" + yaml, environment: [:]).routes
    }

    static let twoSteps = routes("""
        routes:
          - name: r
            on: [completed]
            steps:
              - exec: {command: [first], retry: {attempts: 3, initial_delay: 0s, max_delay: 0s}}
              - exec: {command: [second], retry: {attempts: 3, initial_delay: 0s, max_delay: 0s}}
        """)

    func completed(_ store: SQLiteStore, generation: String = "g1", id: String = "m1") async throws {
        var delivery = Fixture.delivery(id: id, generation: generation, status: .completed)
        delivery.routes = ["r"]
        _ = try await store.ingest(delivery)
    }

    /// Runs the dispatcher until `done` holds (or a deadline passes), then stops it gracefully.
    func drive(_ dispatcher: Dispatcher, until done: @escaping @Sendable () async -> Bool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await dispatcher.run() }
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while !(await done()), ContinuousClock.now < deadline {
                dispatcher.notify()
                try await Task.sleep(for: .milliseconds(20))
            }
            group.cancelAll()
        }
    }

    func options() -> Dispatcher.Options {
        var options = Dispatcher.Options()
        options.pollInterval = .milliseconds(20)
        options.gracePeriod = .milliseconds(200)
        return options
    }

    @Test func transitionCreatesOneJobAndItsStepsRunInOrder() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        try await completed(store)
        // A second completed event and a stale one create no further job.
        try await completed(store, id: "m2")
        var stale = Fixture.delivery(id: "m3", generation: "g1", status: .queued)
        stale.routes = ["r"]
        _ = try await store.ingest(stale)
        #expect(try await store.jobs(state: nil, limit: 10).count == 1)

        let steps = ScriptedSteps([:])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1", "second#1"])
        let job = try #require(try await store.jobs(state: nil, limit: 10).first)
        #expect(job.state == .succeeded && job.nextStep == 2)
        #expect(try await store.attempts(jobID: job.id).map(\.outcome) == [.succeeded, .succeeded])
    }

    @Test func failingStepIsRetriedAloneAndEarlierStepsAreNotRerun() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        try await completed(store)
        let steps = ScriptedSteps(["second": [.retryable(retryAfter: nil), .retryable(retryAfter: nil)]])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1", "second#1", "second#2", "second#3"])
        let job = try #require(try await store.jobs(state: .succeeded, limit: 10).first)
        #expect(try await store.attempts(jobID: job.id).map(\.outcome) == [.succeeded, .failed, .failed, .succeeded])
    }

    @Test func lastAttemptDeadLettersAndRetryRunsOnlyTheFailedStep() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        try await completed(store)
        let steps = ScriptedSteps(["second": Array(repeating: .retryable(retryAfter: nil), count: 3)])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .dead, limit: 10).count) == 1 }
        let dead = try #require(try await store.jobs(state: .dead, limit: 10).first)
        #expect(dead.nextStep == 1 && dead.attempts == 3)
        #expect(dead.lastError?.contains("after 3 attempts") == true)
        _ = try await store.retry(jobID: dead.id, at: Int64(Date().timeIntervalSince1970 * 1000))
        let restarted = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(restarted) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1", "second#1", "second#2", "second#3", "second#1"])
    }

    @Test func permanentFailureDeadLettersAtOnce() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        try await completed(store)
        let steps = ScriptedSteps(["first": [.permanent]])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .dead, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1"])
    }

    /// A process that died mid-step leaves a running job with a lease; once the lease expires
    /// another dispatcher claims it, marks the attempt interrupted and runs that step again.
    @Test func expiredLeaseIsReclaimedAndTheInterruptedStepRerun() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        try await completed(store)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let claimed = try await store.claimJobs(owner: "dead-process", now: now, leaseMilliseconds: 50, limit: 10)
        #expect(claimed.count == 1)
        _ = try await store.startAttempt(jobID: claimed[0].job.id, step: 0, stepKind: "exec", attempt: 1, at: now)
        #expect(try await store.claimJobs(owner: "other", now: now + 10, leaseMilliseconds: 50, limit: 10).isEmpty)
        try await Task.sleep(for: .milliseconds(100))
        let steps = ScriptedSteps([:])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1", "second#1"])
        let attempts = try await store.attempts(jobID: claimed[0].job.id)
        #expect(attempts.map(\.outcome) == [.interrupted, .succeeded, .succeeded])
    }

    @Test func replayCreatesNewJobsAndReprocessRecognizesStoredBodies() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        try await completed(store)
        let jobs = try await store.replay(eventID: "m1", source: nil, routes: { $0 == .completed ? ["r"] : [] }, at: 0)
        #expect(jobs.count == 1)
        #expect(try await store.jobs(state: .pending, limit: 10).count == 2)
        await #expect(throws: StoreError.self) { try await store.replay(eventID: "nope", source: nil, routes: { _ in ["r"] }, at: 0) }

        let body = Fixture.body(generation: "g2", status: "completed")
        _ = try await store.ingest(IncomingDelivery(source: "pipevideo", deliveryID: "u1", receivedAt: 5, signedAt: 0, body: Array(body.utf8), content: .unrecognized(reason: "format was older")))
        let result = try await store.reprocess(
            decode: { (try? PipevideoFormat().decode($0.raw)).map { .event($0) } }, routes: { _ in ["r"] }, at: 10
        )
        #expect(result.recognized == 1 && result.unrecognized == 0)
        #expect(try await store.generations(withID: "g2").first?.generation.status == .completed)
        #expect(try await store.unrecognized(limit: 10).isEmpty)
        #expect(try await store.jobs(state: .pending, limit: 10).count == 3)
    }

    /// A step with `concurrency: 1` never runs twice at once, even with several jobs due.
    @Test func stepConcurrencyCapHolds() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        for i in 0..<5 { try await completed(store, generation: "g\(i)", id: "m\(i)") }
        let routes = Self.routes("""
            routes:
              - name: r
                on: [completed]
                steps:
                  - exec: {command: [slow], concurrency: 1}
            """)
        final class Gauge: Sendable {
            let running = Atomic<Int>(0)
            let highest = Atomic<Int>(0)
        }
        let gauge = Gauge()
        let runners = StepRunners(
            exec: { _, _ in
                let now = gauge.running.add(1, ordering: .acquiringAndReleasing).newValue
                _ = gauge.highest.max(now, ordering: .acquiringAndReleasing)
                try? await Task.sleep(for: .milliseconds(30))
                gauge.running.subtract(1, ordering: .acquiringAndReleasing)
                return StepOutcome(result: .succeeded, summary: "ok")
            },
            download: { _, _ in StepOutcome(result: .permanent, summary: "unused") },
            post: { _, _ in StepOutcome(result: .permanent, summary: "unused") }
        )
        let dispatcher = Dispatcher(store: store, routes: RouteTable(routes), runners: runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 5 }
        #expect(try await store.jobs(state: .succeeded, limit: 10).count == 5)
        #expect(gauge.highest.load(ordering: .acquiring) == 1)
    }
}
