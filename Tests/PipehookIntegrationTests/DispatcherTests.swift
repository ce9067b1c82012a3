import Foundation
import Logging
import PipehookDispatch
import PipehookFormats
import PipehookHandlers
import PipehookSettings
import PipehookStore
import Synchronization
import Testing

/// The dispatcher over the in-memory store (it obeys the same conformance suite as the durable
/// ones; the daemon over SQLite and PostgreSQL is driven end to end elsewhere), with steps whose
/// results a test scripts.
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

    func completed(_ store: any Storage, generation: String = "g1", id: String = "m1") async throws {
        var delivery = Fixture.delivery(id: id, generation: generation, status: .completed)
        delivery.routes = ["r"]
        _ = try await store.ingest(delivery)
    }

    /// Runs the dispatcher until `done` holds (or a deadline passes), then stops it gracefully.
    func drive(_ dispatcher: Dispatcher, until done: @escaping @Sendable () async -> Bool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await dispatcher.run() }
            let deadline = ContinuousClock.now.advanced(by: .seconds(40))
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
        let store = MemoryStore()
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
        let store = MemoryStore()
        try await completed(store)
        let steps = ScriptedSteps(["second": [.retryable(retryAfter: nil), .retryable(retryAfter: nil)]])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1", "second#1", "second#2", "second#3"])
        let job = try #require(try await store.jobs(state: .succeeded, limit: 10).first)
        #expect(try await store.attempts(jobID: job.id).map(\.outcome) == [.succeeded, .failed, .failed, .succeeded])
    }

    @Test func lastAttemptDeadLettersAndRetryRunsOnlyTheFailedStep() async throws {
        let store = MemoryStore()
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
        let store = MemoryStore()
        try await completed(store)
        let steps = ScriptedSteps(["first": [.permanent]])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .dead, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1"])
    }

    /// A process that died mid-step leaves a running job with a lease; once the lease expires
    /// another dispatcher claims it, marks the attempt interrupted and runs that step again.
    @Test func expiredLeaseIsReclaimedAndTheInterruptedStepRerun() async throws {
        let clock = ManualClock()
        let store = MemoryStore(clock: { clock.now() })
        try await completed(store)
        let claimed = try await store.claimJobs(owner: "dead-process", leaseMilliseconds: 60_000, limit: 10)
        #expect(claimed.count == 1)
        _ = try await store.startAttempt(claimed[0].lease, step: 0, stepKind: "exec", attempt: 1)
        #expect(try await store.claimJobs(owner: "other", leaseMilliseconds: 60_000, limit: 10).isEmpty)
        clock.advance(milliseconds: 61_000)
        let steps = ScriptedSteps([:])
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 1 }
        #expect(steps.calls.withLock { $0 } == ["first#1", "second#1"])
        let attempts = try await store.attempts(jobID: claimed[0].job.id)
        #expect(attempts.map(\.outcome) == [.interrupted, .succeeded, .succeeded])
    }

    @Test func replayCreatesNewJobsAndReprocessRecognizesStoredBodies() async throws {
        let store = MemoryStore()
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
        let store = MemoryStore()
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

    /// Forwards to a real store, except that lease renewals fail (the store is unreachable for
    /// them, or says another claim took the job).
    final class FailingRenewals: JobStore {
        let base: any Storage
        let answer: Bool?
        let renewals = Atomic<Int>(0)
        init(_ base: any Storage, answer: Bool?) {
            self.base = base
            self.answer = answer
        }
        func claimJobs(
            owner: String, leaseMilliseconds: Int64, limit: Int, nextStepKind: @escaping NextStepKind
        ) async throws(StoreError) -> [ClaimedJob] {
            try await base.claimJobs(owner: owner, leaseMilliseconds: leaseMilliseconds, limit: limit, nextStepKind: nextStepKind)
        }
        func renewLease(_ lease: JobLease, leaseMilliseconds: Int64) async throws(StoreError) -> Bool {
            renewals.add(1, ordering: .relaxed)
            guard let answer else { throw StoreError(.unavailable, "renewal refused by the test") }
            return answer
        }
        func startAttempt(_ lease: JobLease, step: Int, stepKind: String, attempt: Int) async throws(StoreError) -> Int64 {
            try await base.startAttempt(lease, step: step, stepKind: stepKind, attempt: attempt)
        }
        func finishAttempt(_ finish: AttemptFinish) async throws(StoreError) -> FinishedAttempt {
            try await base.finishAttempt(finish)
        }
        func releaseJob(_ lease: JobLease) async throws(StoreError) { try await base.releaseJob(lease) }
        func jobs(state: JobState?, limit: Int) async throws(StoreError) -> [JobRecord] { try await base.jobs(state: state, limit: limit) }
        func jobs(generationID: String, source: String) async throws(StoreError) -> [JobRecord] {
            try await base.jobs(generationID: generationID, source: source)
        }
        func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord] { try await base.attempts(jobID: jobID) }
        func job(id: String) async throws(StoreError) -> JobRecord? { try await base.job(id: id) }
        func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord { try await base.retry(jobID: jobID, at: at) }
        func retryDead(route: String?, at: Int64) async throws(StoreError) -> Int { try await base.retryDead(route: route, at: at) }
        func requeueRunning(at: Int64) async throws(StoreError) -> Int { try await base.requeueRunning(at: at) }
        func jobCounts(in states: Set<JobState>) async throws(StoreError) -> [JobState: Int] { try await base.jobCounts(in: states) }
        func waitingJobCounts() async throws(StoreError) -> WaitingJobs { try await base.waitingJobCounts() }
        func millisecondsUntilNextJob() async throws(StoreError) -> Int64? { try await base.millisecondsUntilNextJob() }
    }

    /// A step that sleeps until cancelled, recording when it started and when it was stopped.
    final class Sleeper: Sendable {
        let events = Mutex<[(String, ContinuousClock.Instant)]>([])
        var runners: StepRunners {
            StepRunners(
                exec: { _, _ in
                    self.events.withLock { $0.append(("start", .now)) }
                    try? await Task.sleep(for: .seconds(30))
                    self.events.withLock { $0.append((Task.isCancelled ? "stopped" : "finished", .now)) }
                    return StepOutcome(result: .succeeded, summary: "slept")
                },
                download: { _, _ in StepOutcome(result: .permanent, summary: "unused") },
                post: { _, _ in StepOutcome(result: .permanent, summary: "unused") }
            )
        }
    }

    /// SPEC §3.5: a step whose lease cannot be renewed is stopped before the lease can pass, and
    /// nothing about it is recorded (another claim may take the job); the same when the store says
    /// the lease is no longer ours.
    @Test(arguments: [nil, false] as [Bool?])
    func aStepWhoseLeaseIsLostIsStoppedBeforeTheLeaseEnds(renewal: Bool?) async throws {
        // The store's clock stands still: the lease never ends by it, whatever the load, so what
        // stops the step is the dispatcher's own rule.
        let base = MemoryStore(clock: { [clock = ManualClock()] in clock.now() })
        try await completed(base)
        let store = FailingRenewals(base, answer: renewal)
        let sleeper = Sleeper()
        var options = options()
        // Long enough that a loaded machine's slow claim does not eat the whole margin.
        options.leaseMilliseconds = 12_000
        let dispatcher = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: sleeper.runners, logger: Fixture.logger, options: options)
        try await drive(dispatcher) { sleeper.events.withLock { $0.count } >= 2 }
        let events = sleeper.events.withLock { $0 }
        try #require(events.count == 2)
        #expect(events.map(\.0) == ["start", "stopped"])
        // Renewed every 4 s; given up 3 s before the 12 s lease's certain end.
        #expect(events[1].1 - events[0].1 < .milliseconds(12_000), "stopped while the lease still held")
        #expect(store.renewals.load(ordering: .relaxed) >= 1)
        // Nothing recorded after the loss: the job is still the lost claim's, its attempt running,
        // until a claim after the lease's end takes it over.
        let job = try #require(try await base.jobs(state: nil, limit: 10).first)
        #expect(job.state == .running && job.nextStep == 0)
        #expect(try await base.attempts(jobID: job.id).map(\.outcome) == [.running])
    }

    /// A step longer than its lease: renewals keep it, so a second dispatcher on the same store
    /// never starts it too, and it runs once.
    @Test func aStepLongerThanItsLeaseRunsOnce() async throws {
        let store = MemoryStore()
        try await completed(store)
        let runs = Atomic<Int>(0)
        let runners = StepRunners(
            exec: { step, _ in
                if step.command[0] == "first" {
                    runs.add(1, ordering: .relaxed)
                    try? await Task.sleep(for: .milliseconds(14_000))
                }
                return StepOutcome(result: .succeeded, summary: "ok")
            },
            download: { _, _ in StepOutcome(result: .permanent, summary: "unused") },
            post: { _, _ in StepOutcome(result: .permanent, summary: "unused") }
        )
        var options = options()
        // Renewed every 4 s; each renewal may take up to 5 s before the step is given up.
        options.leaseMilliseconds = 12_000
        let a = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: runners, logger: Fixture.logger, options: options)
        let b = Dispatcher(store: store, routes: RouteTable(Self.twoSteps), runners: runners, logger: Fixture.logger, options: options)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await b.run() }
            try await drive(a) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 1 }
            group.cancelAll()
        }
        #expect(runs.load(ordering: .relaxed) == 1)
        let job = try #require(try await store.jobs(state: .succeeded, limit: 10).first)
        #expect(try await store.attempts(jobID: job.id).map(\.outcome) == [.succeeded, .succeeded])
    }

    static let threeSteps = routes("""
        routes:
          - name: r
            on: [completed]
            steps:
              - exec: {command: [one], retry: {attempts: 3, initial_delay: 0s, max_delay: 0s}}
              - exec: {command: [two], retry: {attempts: 3, initial_delay: 0s, max_delay: 0s}}
              - exec: {command: [three], retry: {attempts: 3, initial_delay: 0s, max_delay: 0s}}
        """)

    static let shrunk = routes("""
        routes:
          - name: r
            on: [completed]
            steps:
              - exec: {command: [only]}
        """)

    /// SPEC §3.5: jobs keep the steps they were created with. After a reload that shrinks their
    /// route, or removes it, queued and retrying jobs still run their own steps to the end.
    @Test(arguments: ["shrunk", "removed"])
    func aReloadNeverStrandsAJob(change: String) async throws {
        let store = MemoryStore()
        for i in 0..<2 {
            var delivery = Fixture.delivery(id: "m\(i)", generation: "g\(i)", status: .completed)
            delivery.routes = [Self.threeSteps[0].pin]
            _ = try await store.ingest(delivery)
        }
        // g1's job fails its first step once before the reload: it waits to retry step 0.
        let steps = ScriptedSteps(["one": [.retryable(retryAfter: nil)]])
        let table = RouteTable(Self.threeSteps)
        table.replace(change == "shrunk" ? Self.shrunk : [])
        // A fresh process (a restart after the edit) knows only the new routes: the old version
        // comes from the store.
        let restarted = RouteTable(change == "shrunk" ? Self.shrunk : [])
        let dispatcher = Dispatcher(store: store, routes: restarted, runners: steps.runners, logger: Fixture.logger, options: options())
        try await drive(dispatcher) { (try? await store.jobs(state: .succeeded, limit: 10).count) == 2 }
        let jobs = try await store.jobs(state: nil, limit: 10)
        #expect(jobs.count == 2 && jobs.allSatisfy { $0.state == .succeeded && $0.nextStep == 3 })
        #expect(jobs.allSatisfy { $0.routeVersion == Self.threeSteps[0].version })
        let calls = steps.calls.withLock { $0 }
        #expect(calls.filter { $0.hasPrefix("one#") }.count == 3 && calls.filter { $0.hasPrefix("two#") }.count == 2)
        #expect(calls.filter { $0.hasPrefix("three#") }.count == 2 && !calls.contains { $0.hasPrefix("only") })
        // In memory too: a table that saw the old version serves it without rebuilding.
        guard case .success(let route) = table.resolve(Self.threeSteps[0].pin) else { Issue.record("not resolved"); return }
        #expect(route.steps.count == 3)
    }
}
