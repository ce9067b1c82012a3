import Foundation
import Logging
import PipehookHandlers
import PipehookLifecycle
import PipehookMetrics
import PipehookSettings
import PipehookStore
import ServiceLifecycle
import Synchronization

/// How each kind of step is run. Injected so tests and the daemon share the dispatcher.
public struct StepRunners: Sendable {
    public var exec: @Sendable (ExecStep, StepContext) async -> StepOutcome
    public var download: @Sendable (DownloadStep, StepContext) async -> StepOutcome
    public var post: @Sendable (PostStep, StepContext) async -> StepOutcome

    public init(
        exec: @escaping @Sendable (ExecStep, StepContext) async -> StepOutcome,
        download: @escaping @Sendable (DownloadStep, StepContext) async -> StepOutcome,
        post: @escaping @Sendable (PostStep, StepContext) async -> StepOutcome
    ) {
        self.exec = exec
        self.download = download
        self.post = post
    }

    func run(_ step: Step, _ context: StepContext) async -> StepOutcome {
        switch step.action {
        case .exec(let exec): await self.exec(exec, context)
        case .download(let download): await self.download(download, context)
        case .post(let post): await self.post(post, context)
        }
    }
}

extension Route {
    /// What a job created for this route is pinned to.
    public var pin: RoutePin { RoutePin(name: name, version: version, definition: definition) }
}

/// The live routes, swapped whole on reload, and every route version seen: a job runs the steps it
/// was pinned to (SPEC §3.5), rebuilt from its stored definition when this process never had them.
public final class RouteTable: Sendable {
    private struct State {
        var current: [String: Route]
        var versions: [String: Route]
        /// Literal post secrets of every route seen, by fingerprint (pinned definitions hold only that).
        var secrets: [String: String]
    }
    private let state: Mutex<State>
    private let environment: @Sendable () -> [String: String]

    public init(_ routes: [Route], environment: @escaping @Sendable () -> [String: String] = { ProcessInfo.processInfo.environment }) {
        let current = Dictionary(routes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        state = Mutex(State(
            current: current, versions: Dictionary(routes.map { ($0.version, $0) }, uniquingKeysWith: { a, _ in a }),
            secrets: routes.reduce(into: [:]) { $0.merge($1.literalSecrets) { a, _ in a } }
        ))
        self.environment = environment
    }

    public func route(named name: String) -> Route? { state.withLock { $0.current[name] } }

    public func replace(_ routes: [Route]) {
        state.withLock { state in
            state.current = Dictionary(routes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for route in routes {
                state.versions[route.version] = route
                state.secrets.merge(route.literalSecrets) { a, _ in a }
            }
        }
    }

    /// The steps for a claimed job: its pinned version, or for an unpinned (older) job the route
    /// of that name as configured now. A failure says why, for the job's last error.
    public func resolve(_ pin: RoutePin) -> Result<Route, ResolveFailure> {
        guard pin.isPinned else {
            if let route = route(named: pin.name) { return .success(route) }
            return .failure(ResolveFailure(message: "route \(pin.name) is no longer configured"))
        }
        let (known, secrets) = state.withLock { ($0.versions[pin.version], $0.secrets) }
        if let known { return .success(known) }
        do {
            let route = try SettingsParser.pinnedRoute(definition: pin.definition, environment: environment(), secrets: secrets)
            state.withLock { $0.versions[pin.version] = route }
            return .success(route)
        } catch {
            let problems = error.problems.map(\.description).joined(separator: "; ")
            return .failure(ResolveFailure(message: "cannot rebuild route \(pin.name) version \(pin.version.prefix(12)): \(problems)"))
        }
    }

    public struct ResolveFailure: Error, Sendable { public var message: String }
}

/// Claims due jobs with a fenced lease, runs their steps in order, records every attempt, retries
/// with backoff and dead-letters. A lease is renewed while a step runs; a step whose lease cannot be
/// renewed in time is stopped (its process group killed) before the lease can pass, so no other
/// instance ever runs it at the same time. Leases of a process that died expire, and its jobs run
/// again elsewhere.
public final class Dispatcher: Service {
    public struct Options: Sendable {
        public var workers = 8
        public var leaseMilliseconds: Int64 = 60_000
        public var pollInterval: Duration = .seconds(1)
        /// How long running steps may go on after a shutdown request before they are cancelled.
        public var gracePeriod: Duration = .seconds(30)
        /// How often the pending/dead gauges are recounted, in a loop of their own (never on the
        /// claim path).
        public var gaugeInterval: Duration = .seconds(2)
        public init() {}
    }

    let store: any JobStore
    let routes: RouteTable
    let runners: StepRunners
    let logger: Logger
    let metrics: PipehookMetrics
    let options: Options
    let owner: String
    private let signals: AsyncStream<Void>
    private let signaller: AsyncStream<Void>.Continuation
    private let inFlight = Atomic<Int>(0)
    private let limiters = Mutex<[String: Limiter]>([:])

    public init(
        store: any JobStore, routes: RouteTable, runners: StepRunners, logger: Logger, metrics: PipehookMetrics = .discarding,
        options: Options = Options()
    ) {
        self.store = store
        self.metrics = metrics
        self.routes = routes
        self.runners = runners
        self.logger = logger
        self.options = options
        owner = "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        (signals, signaller) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Wakes the dispatcher now (new jobs were committed) instead of at the next poll.
    public func notify() { signaller.yield() }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                let signaller = self.signaller
                let interval = options.pollInterval
                group.addTask { await self.updateGauges() }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        signaller.yield()
                    }
                }
                for await _ in signals {
                    await claimAndStart(in: &group)
                }
                // Shutting down: no new claims; running steps get the grace period.
                let clock = ContinuousClock()
                let deadline = clock.now.advanced(by: options.gracePeriod)
                while inFlight.load(ordering: .acquiring) > 0, clock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(50))
                }
                if inFlight.load(ordering: .acquiring) > 0 {
                    logger.warning("stopping with steps still running; they run again after restart",
                                   metadata: ["running": .stringConvertible(inFlight.load(ordering: .acquiring))])
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.signaller.finish()
        }
    }

    /// The pending/dead gauges, recounted every `gaugeInterval` until cancelled.
    private func updateGauges() async {
        while !Task.isCancelled {
            if let counts = try? await store.waitingJobCounts() { metrics.jobsWaiting(pending: counts.pending, dead: counts.dead) }
            try? await Task.sleep(for: options.gaugeInterval)
        }
    }

    private func claimAndStart(in group: inout DiscardingTaskGroup) async {
        let free = options.workers - inFlight.load(ordering: .acquiring)
        guard free > 0 else { return }
        let claimed: [ClaimedJob]
        // The lease runs from the store's clock at some moment after this one: measuring from
        // here (on this host's monotonic clock) can only underestimate how long it lasts.
        let sent = ContinuousClock.now
        do {
            // The claim opens each job's first attempt in its own transaction: one write per step.
            let routes = self.routes
            claimed = try await store.claimJobs(owner: owner, leaseMilliseconds: options.leaseMilliseconds, limit: free) { job, pin in
                guard case .success(let route) = routes.resolve(pin), route.steps.indices.contains(job.nextStep) else { return nil }
                return route.steps[job.nextStep].kind
            }
        } catch {
            logger.error("cannot claim jobs", metadata: ["error": .string(error.message)])
            return
        }
        for job in claimed {
            inFlight.add(1, ordering: .acquiringAndReleasing)
            group.addTask {
                await self.execute(job, claimedAt: sent)
                self.inFlight.subtract(1, ordering: .acquiringAndReleasing)
                self.signaller.yield()
            }
        }
    }

    /// Runs a claimed job's remaining steps while keeping its lease alive; stops them if the lease
    /// is lost.
    func execute(_ claimed: ClaimedJob, claimedAt: ContinuousClock.Instant) async {
        let store = self.store, lease = claimed.lease
        let keeper = LeaseKeeper(
            duration: .milliseconds(options.leaseMilliseconds), since: claimedAt, what: "a job's lease",
            metadata: ["job_id": .string(lease.jobID)], logger: logger
        ) { milliseconds throws(StoreError) in
            try await store.renewLease(lease, leaseMilliseconds: milliseconds)
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.runSteps(claimed, keeper: keeper) }
            group.addTask { await keeper.keep() }
            // Whichever ends first: the steps (done, or stopped by shutdown) or the lease.
            await group.next()
            group.cancelAll()
        }
    }

    private func runSteps(_ claimed: ClaimedJob, keeper: LeaseKeeper) async {
        var job = claimed.job
        let lease = claimed.lease
        var metadata: Logger.Metadata = [
            "job_id": .string(job.id), "route": .string(job.route),
            "event_id": .string(job.eventID), "generation_id": .string(job.generationID),
        ]
        if claimed.route.isPinned { metadata["route_version"] = .string(String(claimed.route.version.prefix(12))) }
        let route: Route
        switch routes.resolve(claimed.route) {
        case .success(let resolved): route = resolved
        case .failure(let failure):
            await finish(job, lease: lease, attemptID: claimed.attemptID, step: job.nextStep, kind: "route",
                         result: AttemptResult(outcome: .dead, summary: failure.message),
                         disposition: .dead(error: failure.message), metadata: metadata)
            return
        }
        if job.nextStep >= route.steps.count {
            // Only an unpinned job whose route shrank under it: its remaining steps are gone.
            let summary = "no steps left: route \(route.name) has \(route.steps.count) step(s) now"
            await finish(job, lease: lease, attemptID: claimed.attemptID, step: job.nextStep, kind: "route",
                         result: AttemptResult(outcome: .succeeded, summary: summary),
                         disposition: .advance(artifact: nil, done: true), metadata: metadata)
            return
        }
        // Opened by the claim, then by each finish that advances: normally no write of its own.
        var opened = claimed.attemptID
        while job.nextStep < route.steps.count, job.state == .running {
            let index = job.nextStep
            let step = route.steps[index]
            let attempt = job.attempts + 1
            metadata["step"] = .string("\(index):\(step.kind)")
            metadata["attempt"] = .stringConvertible(attempt)
            let attemptID: Int64
            if let opened {
                attemptID = opened
            } else {
                do {
                    attemptID = try await store.startAttempt(lease, step: index, stepKind: step.kind, attempt: attempt)
                } catch {
                    logger.error("cannot record attempt start", metadata: metadata.merging(["error": .string(error.message)]) { a, _ in a })
                    return  // the lease expires and the job is claimed again
                }
            }
            opened = nil
            if keeper.isLost { return }
            let context = StepContext(jobID: job.id, attempt: attempt, document: Self.document(claimed.event, artifact: job.artifact))
            let started = ContinuousClock.now
            let outcome = await limiter(for: route.name, step: index, capacity: step.concurrency).withPermit {
                await self.runners.run(step, context)
            }
            if keeper.isLost {
                // Stopped because the lease could not be kept: another claim may take the job
                // now, so nothing more is recorded here (the store would refuse it anyway).
                logger.warning("step stopped: its lease could not be renewed", metadata: metadata)
                return
            }
            if Task.isCancelled {
                // Shutdown cut the step short: it runs again after restart.
                try? await store.releaseJob(lease)
                logger.notice("step interrupted by shutdown", metadata: metadata)
                return
            }
            let elapsed = ContinuousClock.now - started
            let (result, disposition) = decide(outcome, step: step, attempt: attempt, isLast: index == route.steps.count - 1)
            let stepLabel = "\(index)-\(step.kind)"
            metrics.attempt(route: route.name, step: stepLabel, result: result.outcome.rawValue,
                            nanoseconds: elapsed.nanoseconds)
            if case .download = step.action, let artifact = outcome.artifact, outcome.result == .succeeded {
                metrics.downloaded(route: route.name, bytes: artifact.bytes)
            }
            metadata["outcome"] = .string(result.outcome.rawValue)
            metadata["summary"] = .string(outcome.summary)
            metadata["duration_ms"] = .stringConvertible(elapsed.milliseconds)
            let nextKind = route.steps.indices.contains(index + 1) ? route.steps[index + 1].kind : nil
            guard let finished = await finish(
                job, lease: lease, attemptID: attemptID, step: index, kind: step.kind, result: result, disposition: disposition,
                nextStepKind: nextKind, metadata: metadata
            ) else {
                return
            }
            job = finished.job
            opened = finished.nextAttemptID
        }
    }

    /// Turns a step's outcome into the attempt record and what happens to the job next.
    func decide(_ outcome: StepOutcome, step: Step, attempt: Int, isLast: Bool) -> (AttemptResult, AttemptDisposition) {
        func result(_ kind: AttemptOutcome) -> AttemptResult {
            AttemptResult(outcome: kind, summary: outcome.summary, exitCode: outcome.exitCode, httpStatus: outcome.httpStatus, output: outcome.output)
        }
        switch outcome.result {
        case .succeeded:
            return (result(.succeeded), .advance(artifact: outcome.artifact, done: isLast))
        case .permanent:
            return (result(.dead), .dead(error: outcome.summary))
        case .retryable(let retryAfter):
            if RetrySchedule.isExhausted(attempt: attempt, policy: step.retry) {
                return (result(.dead), .dead(error: "\(outcome.summary) (after \(attempt) attempts)"))
            }
            var generator = SystemRandomNumberGenerator()
            let retryAfterMs = retryAfter.map(\.milliseconds)
            let delay = RetrySchedule.delay(afterFailures: attempt, policy: step.retry, retryAfterMilliseconds: retryAfterMs, using: &generator)
            return (result(.failed), .retry(delayMilliseconds: delay, error: outcome.summary))
        }
    }

    /// Records the attempt's end and the job's move (opening the next step's attempt when
    /// `nextStepKind` is given and the job advanced), in one write shared with other jobs' finishes.
    @discardableResult
    private func finish(
        _ job: JobRecord, lease: JobLease, attemptID: Int64?, step: Int, kind: String, result: AttemptResult,
        disposition: AttemptDisposition, nextStepKind: String? = nil, metadata: Logger.Metadata
    ) async -> FinishedAttempt? {
        do {
            let id: Int64
            if let attemptID {
                id = attemptID
            } else {
                id = try await store.startAttempt(lease, step: step, stepKind: kind, attempt: job.attempts + 1)
            }
            let finished = try await store.finishAttempt(AttemptFinish(
                attemptID: id, lease: lease, result: result, disposition: disposition, nextStepKind: nextStepKind
            ))
            let updated = finished.job
            switch updated.state {
            case .succeeded:
                metrics.jobFinished(route: job.route, result: "succeeded")
                logger.info("job succeeded", metadata: metadata)
            case .dead:
                metrics.jobFinished(route: job.route, result: "dead")
                logger.error("job dead", metadata: metadata)
            case .pending: logger.warning("step failed; retry scheduled", metadata: metadata)
            case .running: logger.info("step succeeded", metadata: metadata)
            }
            return finished
        } catch where error.kind == .fenced {
            logger.warning("attempt not recorded: the job's lease was taken over", metadata: metadata)
            return nil
        } catch {
            logger.error("cannot record attempt", metadata: metadata.merging(["error": .string(error.message)]) { a, _ in a })
            return nil
        }
    }

    private func limiter(for route: String, step: Int, capacity: Int?) -> Limiter {
        let key = "\(route)#\(step)#\(capacity ?? 0)"
        return limiters.withLock { limiters in
            if let existing = limiters[key] { return existing }
            let limiter = Limiter(capacity: capacity ?? Int.max)
            limiters[key] = limiter
            return limiter
        }
    }

    static func document(_ event: StoredEvent, artifact: JobArtifact?) -> EventDocument {
        EventDocument(
            eventID: event.eventID, source: event.source, type: event.eventType, generationID: event.generationID,
            status: event.status, previousStatus: event.previousStatus, outputURL: event.outputURL,
            errorMessage: event.errorMessage, receivedAt: event.receivedAt,
            artifact: artifact, raw: event.raw
        )
    }
}

extension Duration {
    var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
