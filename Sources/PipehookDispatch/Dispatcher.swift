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

/// The live route table; swapped whole on reload.
public final class RouteTable: Sendable {
    private let routes: Mutex<[String: Route]>
    public init(_ routes: [Route]) { self.routes = Mutex(Dictionary(routes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })) }
    public func route(named name: String) -> Route? { routes.withLock { $0[name] } }
    public func replace(_ routes: [Route]) { self.routes.withLock { $0 = Dictionary(routes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }) } }
}

/// Claims due jobs with a lease, runs their steps in order, records every attempt, retries with
/// backoff and dead-letters. Leases of a process that died expire, and its jobs run again.
public final class Dispatcher: Service {
    public struct Options: Sendable {
        public var workers = 8
        public var leaseMilliseconds: Int64 = 60_000
        public var pollInterval: Duration = .seconds(1)
        /// How long running steps may go on after a shutdown request before they are cancelled.
        public var gracePeriod: Duration = .seconds(30)
        public init() {}
    }

    let store: any JobStore
    let routes: RouteTable
    let runners: StepRunners
    let logger: Logger
    let metrics: PipehookMetrics
    let options: Options
    let owner: String
    let now: @Sendable () -> Int64
    private let signals: AsyncStream<Void>
    private let signaller: AsyncStream<Void>.Continuation
    private let inFlight = Atomic<Int>(0)
    private let limiters = Mutex<[String: Limiter]>([:])

    public init(
        store: any JobStore, routes: RouteTable, runners: StepRunners, logger: Logger, metrics: PipehookMetrics = .discarding,
        options: Options = Options(), now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.store = store
        self.metrics = metrics
        self.routes = routes
        self.runners = runners
        self.logger = logger
        self.options = options
        self.now = now
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

    private func claimAndStart(in group: inout DiscardingTaskGroup) async {
        if let counts = try? await store.jobCounts() {
            metrics.jobsWaiting(pending: counts[.pending] ?? 0, dead: counts[.dead] ?? 0)
        }
        let free = options.workers - inFlight.load(ordering: .acquiring)
        guard free > 0 else { return }
        let claimed: [ClaimedJob]
        do {
            claimed = try await store.claimJobs(owner: owner, now: now(), leaseMilliseconds: options.leaseMilliseconds, limit: free)
        } catch {
            logger.error("cannot claim jobs", metadata: ["error": .string(error.message)])
            return
        }
        for job in claimed {
            inFlight.add(1, ordering: .acquiringAndReleasing)
            group.addTask {
                await self.execute(job)
                self.inFlight.subtract(1, ordering: .acquiringAndReleasing)
                self.signaller.yield()
            }
        }
    }

    /// Runs a claimed job's remaining steps while keeping its lease alive.
    func execute(_ claimed: ClaimedJob) async {
        await withTaskGroup(of: Void.self) { group in
            let lease = options.leaseMilliseconds
            let store = self.store, owner = self.owner, now = self.now, jobID = claimed.job.id
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(lease / 3))
                    if Task.isCancelled { break }
                    _ = try? await store.renewLease(jobID: jobID, owner: owner, until: now() + lease)
                }
            }
            await runSteps(claimed)
            group.cancelAll()
        }
    }

    private func runSteps(_ claimed: ClaimedJob) async {
        var job = claimed.job
        var metadata: Logger.Metadata = [
            "job_id": .string(job.id), "route": .string(job.route),
            "event_id": .string(job.eventID), "generation_id": .string(job.generationID),
        ]
        guard let route = routes.route(named: job.route) else {
            await finish(job, attemptID: nil, step: job.nextStep, kind: "route",
                         result: AttemptResult(outcome: .dead, summary: "route \(job.route) is no longer configured"),
                         disposition: .dead(error: "route \(job.route) is no longer configured"), metadata: metadata)
            return
        }
        while job.nextStep < route.steps.count, job.state == .running {
            let index = job.nextStep
            let step = route.steps[index]
            let attempt = job.attempts + 1
            metadata["step"] = .string("\(index):\(step.kind)")
            metadata["attempt"] = .stringConvertible(attempt)
            let attemptID: Int64
            do {
                attemptID = try await store.startAttempt(jobID: job.id, step: index, stepKind: step.kind, attempt: attempt, at: now())
            } catch {
                logger.error("cannot record attempt start", metadata: metadata.merging(["error": .string(error.message)]) { a, _ in a })
                return  // the lease expires and the job is claimed again
            }
            let context = StepContext(jobID: job.id, attempt: attempt, document: Self.document(claimed.event, artifact: job.artifact))
            let started = ContinuousClock.now
            let outcome = await limiter(for: route.name, step: index, capacity: step.concurrency).withPermit {
                await self.runners.run(step, context)
            }
            if Task.isCancelled {
                // Shutdown cut the step short: it runs again after restart.
                try? await store.releaseJob(jobID: job.id, owner: owner, at: now())
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
            guard let updated = await finish(job, attemptID: attemptID, step: index, kind: step.kind, result: result, disposition: disposition, metadata: metadata) else {
                return
            }
            job = updated
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
            return (result(.failed), .retry(runAt: now() + delay, error: outcome.summary))
        }
    }

    @discardableResult
    private func finish(
        _ job: JobRecord, attemptID: Int64?, step: Int, kind: String, result: AttemptResult, disposition: AttemptDisposition,
        metadata: Logger.Metadata
    ) async -> JobRecord? {
        do {
            let id: Int64
            if let attemptID {
                id = attemptID
            } else {
                id = try await store.startAttempt(jobID: job.id, step: step, stepKind: kind, attempt: job.attempts + 1, at: now())
            }
            let updated = try await store.finishAttempt(id, jobID: job.id, owner: owner, result: result, disposition: disposition, at: now())
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
            return updated
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
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
