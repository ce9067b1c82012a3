import Foundation
import Logging
import PipehookDispatch
import PipehookHandlers
import PipehookLifecycle
import PipehookPostgres
import PipehookReconcile
import PipehookSettings
import PipehookStore
import ServiceLifecycle
import Synchronization
import Testing

/// Several instances on one database (SPEC §9), each a `PostgresStore` with its own client, as
/// separate processes would have: a delivery accepted once, one transition and one set of jobs
/// per race, each step run once, a dead instance's job taken over after its lease, migrations
/// applied once, and reconciliation on one instance at a time.
@Suite(.enabled(if: PostgresTestDatabase.url != nil, PostgresTestDatabase.note))
struct PostgresInstancesTests {
    @Test func thousandConcurrentDeliveriesAcrossTwoInstancesAreAcceptedOnce() async throws {
        try await TestSchema.with { schema in
            let a = try await schema.open(poolMax: 8), b = try await schema.open(poolMax: 8)
            let statuses: [GenerationStatusText] = [.queued, .in_progress, .completed]
            var deliveries = (0..<600).map { i in Fixture.delivery(id: "m\(i)", generation: "g\(i / 3)", status: statuses[i % 3]) }
            deliveries += deliveries.shuffled().prefix(400)  // redelivered, to either instance
            deliveries.shuffle()
            let started = ContinuousClock.now
            let outcomes = try await withThrowingTaskGroup(of: IntakeOutcome.self) { group in
                for (index, delivery) in deliveries.enumerated() {
                    let store = index.isMultiple(of: 2) ? a : b
                    group.addTask { try await store.ingest(delivery) }
                }
                return try await group.reduce(into: [IntakeOutcome]()) { $0.append($1) }
            }
            let elapsed = ContinuousClock.now - started
            #expect(outcomes.count == 1000)
            #expect(outcomes.filter { $0 == .duplicate }.count == 400)
            #expect(outcomes.filter { if case .accepted = $0 { true } else { false } }.count == 600)
            #expect(try await a.counts() == StoreCounts(deliveries: 600, events: 600, generations: 200, unrecognized: 0))
            let all = try await b.generations(status: nil, limit: 1000)
            #expect(all.count == 200 && all.allSatisfy { $0.status == .completed })
            // Each generation: queued, in_progress, completed, whatever order they came in;
            // exactly one of its events applied `completed`.
            for generation in ["g0", "g77", "g199"] {
                let timeline = try #require(try await a.generations(withID: generation).first).timeline
                #expect(timeline.count == 3)
                #expect(timeline.filter { $0.status == .completed && $0.transition == .applied }.count == 1)
            }
            print("1,000 deliveries over two instances in \(elapsed)")
            await a.close()
            await b.close()
        }
    }

    /// Events about one generation arriving at both instances at once: the generation lock makes
    /// one apply the transition and create the jobs; the other sees the new status.
    @Test func eventsRacingOnBothInstancesApplyOnceAndCreateOneSetOfJobs() async throws {
        try await TestSchema.with { schema in
            let a = try await schema.open(poolMax: 8), b = try await schema.open(poolMax: 8)
            let generations = (0..<60).map { "g\($0)" }
            let outcomes = try await withThrowingTaskGroup(of: (String, IntakeOutcome).self) { group in
                for (index, generation) in generations.enumerated() {
                    // Half the races are completed/completed, half completed/failed.
                    let statuses: [GenerationStatusText] = index.isMultiple(of: 2) ? [.completed, .completed] : [.completed, .failed]
                    for (store, status, name) in [(a, statuses[0], "a"), (b, statuses[1], "b")] {
                        var delivery = Fixture.delivery(id: "\(name)-\(generation)", generation: generation, status: status)
                        delivery.routes = ["archive", "notify"]
                        group.addTask { (generation, try await store.ingest(delivery)) }
                    }
                }
                return try await group.reduce(into: [(String, IntakeOutcome)]()) { $0.append($1) }
            }
            #expect(outcomes.count == 120)
            for (index, generation) in generations.enumerated() {
                let transitions = outcomes.filter { $0.0 == generation }.compactMap { outcome -> Transition? in
                    if case .accepted(_, _, let transition, _) = outcome.1 { transition } else { nil }
                }
                let expected: [Transition] = index.isMultiple(of: 2) ? [.applied, .same] : [.applied, .conflict]
                #expect(transitions.sorted { $0.rawValue < $1.rawValue } == expected.sorted { $0.rawValue < $1.rawValue }, "\(generation)")
                let jobs = try await a.jobs(generationID: generation, source: "pipevideo")
                #expect(jobs.map(\.route).sorted() == ["archive", "notify"], "\(generation)")
                // The jobs belong to the event that applied the transition.
                let timeline = try #require(try await b.generations(withID: generation).first).timeline
                let applied = try #require(timeline.first { $0.transition == .applied })
                #expect(jobs.allSatisfy { $0.eventID == applied.eventID })
            }
            #expect(try await b.jobCounts()[.pending] == 120)
            await a.close()
            await b.close()
        }
    }

    static let twoSteps = DispatcherTests.twoSteps

    func dispatcherOptions(lease: Int64 = 60_000) -> Dispatcher.Options {
        var options = Dispatcher.Options()
        options.pollInterval = .milliseconds(20)
        options.gracePeriod = .milliseconds(200)
        options.leaseMilliseconds = lease
        return options
    }

    /// Steps that record which job ran which step, on which instance.
    final class RecordingSteps: Sendable {
        let calls = Mutex<[String]>([])
        var runners: StepRunners {
            StepRunners(
                exec: { step, context in
                    self.calls.withLock { $0.append("\(context.jobID)/\(step.command[0])#\(context.attempt)") }
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 0...5)))
                    return StepOutcome(result: .succeeded, summary: "ok")
                },
                download: { _, _ in StepOutcome(result: .permanent, summary: "unused") },
                post: { _, _ in StepOutcome(result: .permanent, summary: "unused") }
            )
        }
    }

    @Test func twoDispatchersRunEveryStepOfEveryJobExactlyOnce() async throws {
        try await TestSchema.with { schema in
            let a = try await schema.open(poolMax: 8), b = try await schema.open(poolMax: 8)
            for i in 0..<80 {
                var delivery = Fixture.delivery(id: "m\(i)", generation: "g\(i)", status: .completed)
                delivery.routes = ["r"]
                _ = try await (i.isMultiple(of: 2) ? a : b).ingest(delivery)
            }
            let stepsA = RecordingSteps(), stepsB = RecordingSteps()
            let dispatcherA = Dispatcher(store: a, routes: RouteTable(Self.twoSteps), runners: stepsA.runners, logger: Fixture.logger, options: dispatcherOptions())
            let dispatcherB = Dispatcher(store: b, routes: RouteTable(Self.twoSteps), runners: stepsB.runners, logger: Fixture.logger, options: dispatcherOptions())
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await dispatcherA.run() }
                group.addTask { try await dispatcherB.run() }
                let deadline = ContinuousClock.now.advanced(by: .seconds(60))
                while (try await a.jobCounts()[.succeeded] ?? 0) < 80, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
                group.cancelAll()
            }
            let calls = stepsA.calls.withLock { $0 } + stepsB.calls.withLock { $0 }
            #expect(try await a.jobCounts() == [.pending: 0, .running: 0, .succeeded: 80, .dead: 0])
            #expect(calls.count == 160, "each of 80 jobs has two steps")
            #expect(Set(calls).count == 160, "a step ran twice: \(Dictionary(grouping: calls, by: { $0 }).filter { $0.value.count > 1 }.keys)")
            #expect(calls.allSatisfy { $0.hasSuffix("#1") })
            for job in try await b.jobs(state: .succeeded, limit: 100) {
                #expect(try await a.attempts(jobID: job.id).map(\.outcome) == [.succeeded, .succeeded])
            }
            print("two dispatchers: \(stepsA.calls.withLock { $0.count }) steps on A, \(stepsB.calls.withLock { $0.count }) on B")
            await a.close()
            await b.close()
        }
    }

    /// Instance A dies mid-step (its connections gone, as after `kill -9`; its dispatcher then
    /// stopped without being able to release the job). Its 4 s lease runs out; instance B takes
    /// the job over, marks A's attempt interrupted and runs that step again, and only then.
    @Test func deadInstancesJobIsReclaimedAfterItsLeaseExpires() async throws {
        try await TestSchema.with { schema in
            let a = try await schema.open(), b = try await schema.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed)
            delivery.routes = ["r"]
            _ = try await a.ingest(delivery)

            final class Hanging: Sendable {
                let started = Atomic<Int>(0)
                var runners: StepRunners {
                    StepRunners(
                        exec: { _, _ in
                            self.started.add(1, ordering: .acquiringAndReleasing)
                            try? await Task.sleep(for: .seconds(60))
                            return StepOutcome(result: .succeeded, summary: "never reached in time")
                        },
                        download: { _, _ in StepOutcome(result: .permanent, summary: "unused") },
                        post: { _, _ in StepOutcome(result: .permanent, summary: "unused") }
                    )
                }
            }
            let hanging = Hanging()
            let dispatcherA = Dispatcher(store: a, routes: RouteTable(Self.twoSteps), runners: hanging.runners, logger: Fixture.logger, options: dispatcherOptions(lease: 4_000))
            let runningA = Task { try await dispatcherA.run() }
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while hanging.started.load(ordering: .acquiring) == 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(hanging.started.load(ordering: .acquiring) == 1)
            await a.close()
            runningA.cancel()
            _ = await runningA.result
            let leased = try #require(try await b.jobs(state: .running, limit: 10).first, "A could not release it: it is dead")
            let lastLease = try #require(leased.leaseUntil)

            let steps = RecordingSteps()
            let dispatcherB = Dispatcher(store: b, routes: RouteTable(Self.twoSteps), runners: steps.runners, logger: Fixture.logger, options: dispatcherOptions(lease: 4_000))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await dispatcherB.run() }
                let deadline = ContinuousClock.now.advanced(by: .seconds(20))
                while (try await b.jobCounts()[.succeeded] ?? 0) < 1, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                group.cancelAll()
            }
            #expect(steps.calls.withLock { $0 } == ["\(leased.id)/first#1", "\(leased.id)/second#1"])
            let attempts = try await b.attempts(jobID: leased.id)
            #expect(attempts.map(\.outcome) == [.interrupted, .succeeded, .succeeded])
            #expect(attempts.first?.summary == JobRules.interruptedByLostLease)
            // Taken over only once A's last lease had run out.
            #expect(try #require(attempts.first?.endedAt) > lastLease)
            let job = try #require(try await b.jobs(state: .succeeded, limit: 10).first)
            #expect(job.id == leased.id && job.leaseOwner == nil)
            await b.close()
        }
    }

    @Test func migrationsRunConcurrentlyFromSeveralInstancesApplyOnce() async throws {
        try await TestSchema.with { schema in
            let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
                for _ in 0..<4 { group.addTask { try await schema.open(poolMax: 2) } }
                return try await group.reduce(into: [PostgresStore]()) { $0.append($1) }
            }
            #expect(stores.count == 4)
            let rows = try await stores[0].client.query("SELECT id FROM pipehook_migrations ORDER BY id", logger: Fixture.logger)
            var ids: [String] = []
            for try await id in rows.decode(String.self) { ids.append(id) }
            #expect(ids == ["v1-intake", "v2-jobs", "v3-polls", "v4-fenced-pinned-jobs", "v5-exclusive-leases", "v6-idempotency-keys", "v7-generations-by-source", "v8-jobs-by-generation", "v9-activity-by-time"])
            #expect(try await stores[1].migrate().isEmpty)
            #expect(try await stores[2].ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) != .duplicate)
            for store in stores { await store.close() }
        }
    }

    /// A stand-in for the reconciler: counts how many instances run it at once.
    final class Probe: Service {
        let running: Atomic<Int>
        let highest: Atomic<Int>
        let starts = Atomic<Int>(0)
        let stops = Atomic<Int>(0)
        let shared: Gauge

        final class Gauge: Sendable {
            let running = Atomic<Int>(0)
            let highest = Atomic<Int>(0)
        }

        init(_ gauge: Gauge) {
            shared = gauge
            running = Atomic(0)
            highest = Atomic(0)
        }

        var isRunning: Bool { running.load(ordering: .acquiring) > 0 }

        func run() async throws {
            starts.add(1, ordering: .acquiringAndReleasing)
            running.add(1, ordering: .acquiringAndReleasing)
            let now = shared.running.add(1, ordering: .acquiringAndReleasing).newValue
            _ = shared.highest.max(now, ordering: .acquiringAndReleasing)
            while !Task.isCancelled, !Task.isShuttingDownGracefully {
                try? await Task.sleep(for: .milliseconds(10))
            }
            shared.running.subtract(1, ordering: .acquiringAndReleasing)
            running.subtract(1, ordering: .acquiringAndReleasing)
            stops.add(1, ordering: .acquiringAndReleasing)
        }
    }

    @Test func reconciliationLockIsHeldByOneInstanceAtATime() async throws {
        try await TestSchema.with { schema in
            let a = try await schema.open(), b = try await schema.open()
            let gauge = Probe.Gauge()
            let probeA = Probe(gauge), probeB = Probe(gauge)
            let serviceA = ExclusiveService(store: a, name: "reconcile", service: probeA, retryInterval: .milliseconds(100), logger: Fixture.logger)
            let serviceB = ExclusiveService(store: b, name: "reconcile", service: probeB, retryInterval: .milliseconds(100), logger: Fixture.logger)
            let runA = Task { try await serviceA.run() }
            let runB = Task { try await serviceB.run() }
            func waitUntil(_ condition: () -> Bool) async throws {
                let deadline = ContinuousClock.now.advanced(by: .seconds(20))
                while !condition(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            }
            try await waitUntil { probeA.isRunning || probeB.isRunning }
            // Several retry rounds of the other one: still only one runs. (On a loaded machine a
            // late renewal may hand the lease over, with a moment between the two where neither
            // runs: wait that moment out rather than read it as a failure.)
            try await Task.sleep(for: .milliseconds(600))
            try await waitUntil { probeA.isRunning != probeB.isRunning }
            #expect(probeA.isRunning != probeB.isRunning)
            let (holder, holderTask, other) = probeA.isRunning ? (probeA, runA, probeB) : (probeB, runB, probeA)
            // (A holder whose renewal is late on a loaded machine gives the lease up safely and
            // another takes it: handovers may happen; two holders at once never — the gauge.)
            #expect(gauge.highest.load(ordering: .acquiring) == 1)

            // The holder stops: the other instance takes over.
            holderTask.cancel()
            _ = await holderTask.result
            #expect(!holder.isRunning)
            try await waitUntil { other.isRunning }
            #expect(other.isRunning)
            #expect(gauge.highest.load(ordering: .acquiring) == 1, "two instances ran it at once")

            // An instance that can no longer reach the database (its connections closed, as a
            // network cut would) cannot renew: its service stops before its lease can end, and only
            // then does another instance take over. Never two at once.
            let c = try await schema.open()
            let probeC = Probe(gauge)
            let serviceC = ExclusiveService(store: c, name: "reconcile", service: probeC, retryInterval: .milliseconds(100), logger: Fixture.logger)
            let runC = Task { try await serviceC.run() }
            try await Task.sleep(for: .milliseconds(300))
            #expect(!probeC.isRunning)
            let otherStore = other === probeA ? a : b
            await otherStore.close()
            try await waitUntil { probeC.isRunning && !other.isRunning }
            #expect(!other.isRunning, "the service went on without its lease")
            #expect(probeC.isRunning)
            #expect(gauge.highest.load(ordering: .acquiring) == 1, "two instances ran it at once")
            runA.cancel()
            runB.cancel()
            runC.cancel()
            _ = await (runA.result, runB.result, runC.result)
            for store in [a, b, c] { await store.close() }
        }
    }

    /// The real reconciler under the lock: it polls on the instance holding it; when that
    /// instance stops, the other one takes over; and a reconciler that stopped runs again when
    /// its instance gets the lock back.
    @Test func reconcilerRunsOnTheInstanceHoldingTheLockAndMovesWithIt() async throws {
        try await TestSchema.with { schema in
            let a = try await schema.open(), b = try await schema.open()
            let fake = FakePipevideoAPI(key: ReconcileTests.key)
            for id in ["gen_1", "gen_2", "gen_3"] { await fake.script(id, [.status("in_progress"), .status("completed")]) }
            try await fake.run { base in
                func reconciler(_ store: PostgresStore) -> Reconciler {
                    Reconciler(
                        store: store, api: ReconcileTests.api(base),
                        configuration: .init(sources: ["pipevideo"], pollAfterMilliseconds: 300, routes: { $0 == .completed ? ["r"] : [] }),
                        logger: Fixture.logger, scanInterval: .milliseconds(100),
                        backoff: APIBackoff(initialMilliseconds: 200, maximumMilliseconds: 1_000)
                    )
                }
                let logA = CapturedLog(), logB = CapturedLog()
                let serviceA = ExclusiveService(store: a, name: "reconcile", service: reconciler(a), retryInterval: .milliseconds(100), logger: logA.logger)
                let serviceB = ExclusiveService(store: b, name: "reconcile", service: reconciler(b), retryInterval: .milliseconds(100), logger: logB.logger)
                func completed(_ id: String) async throws {
                    let deadline = ContinuousClock.now.advanced(by: .seconds(20))
                    while try await a.generations(withID: id).first?.generation.status != .completed, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    #expect(try await a.generations(withID: id).first?.generation.status == .completed, "\(id)")
                }
                let now = { Int64(Date().timeIntervalSince1970 * 1000) }
                var runA = Task { try await serviceA.run() }
                let runB = Task { try await serviceB.run() }
                _ = try await a.track(source: "pipevideo", generationID: "gen_1", at: now())
                try await completed("gen_1")
                let aHolds = logA.all.contains("running here")
                #expect(aHolds != logB.all.contains("running here"), "exactly one instance ran the reconciler")

                // The holder stops; the other takes over.
                (aHolds ? runA : runB).cancel()
                _ = await (aHolds ? runA : runB).result
                _ = try await b.track(source: "pipevideo", generationID: "gen_2", at: now())
                try await completed("gen_2")
                #expect((aHolds ? logB : logA).all.contains("running here"))

                // Back and forth once more: a reconciler that ran before runs again.
                if aHolds {
                    runA = Task { try await serviceA.run() }
                    runB.cancel()
                    _ = await runB.result
                } else {
                    runB.cancel()
                    _ = await runB.result
                    runA = Task { try await serviceA.run() }
                }
                _ = try await a.track(source: "pipevideo", generationID: "gen_3", at: now())
                try await completed("gen_3")
                runA.cancel()
                _ = await runA.result
                for id in ["gen_1", "gen_2", "gen_3"] {
                    #expect(try await a.jobs(generationID: id, source: "pipevideo").count == 1)
                }
            }
            await a.close()
            await b.close()
        }
    }
}
