import PipehookLifecycle
import Synchronization

/// Job ids, made the same way by every store: `job_` + 16 lower-case hex digits, random, stable
/// across attempts (the re-POST `webhook-id`).
public enum JobID {
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return "job_" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// True for text shaped like `make()`'s output; checked before a request's id reaches a store.
    public static func isValid(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 20, bytes.starts(with: Array("job_".utf8)) else { return false }
        return bytes[4...].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

/// The steps a job runs, fixed when the job is created (SPEC §3.5): a reload that edits, shrinks
/// or removes its route never strands it. `version` is a fingerprint of `definition`, the route's
/// configuration as written (before `${VAR}` substitution, so no secret is stored), from which the
/// dispatcher rebuilds the steps if it no longer has them in memory.
///
/// A pin with an empty `version` is unpinned: its route is looked up by name when the job runs (jobs
/// created before pinning existed are read back this way).
public struct RoutePin: Sendable, Hashable, ExpressibleByStringLiteral {
    public var name: String
    public var version: String
    public var definition: String

    public init(name: String, version: String, definition: String) {
        self.name = name
        self.version = version
        self.definition = definition
    }

    /// An unpinned route, by name.
    public init(stringLiteral name: String) { self.init(name: name, version: "", definition: "") }

    public var isPinned: Bool { !version.isEmpty }
}

/// A claim on a job: the holder's name and the fencing token its claim got. Every write the holder
/// makes carries it; once another claim has taken the job (its lease expired), the token is stale
/// and the store refuses the write, so a stalled holder that comes back can record nothing.
public struct JobLease: Sendable, Hashable {
    public var jobID: String
    public var owner: String
    public var fence: Int64
    public init(jobID: String, owner: String, fence: Int64) {
        self.jobID = jobID
        self.owner = owner
        self.fence = fence
    }
}

public enum JobState: String, Sendable, Codable, CaseIterable {
    /// Waiting for `runAt` (new, or between retries).
    case pending
    /// Leased by a dispatcher; the lease expires if that process dies.
    case running
    case succeeded
    /// Out of attempts or permanently failed; kept until retried or pruned.
    case dead
}

/// A file saved by a download step, passed to the steps after it.
public struct JobArtifact: Sendable, Equatable, Codable {
    public var file: String
    public var sha256: String
    public var bytes: Int64
    public init(file: String, sha256: String, bytes: Int64) {
        self.file = file
        self.sha256 = sha256
        self.bytes = bytes
    }
}

/// One route run for one generation. One id across all attempts.
public struct JobRecord: Sendable, Equatable {
    public var id: String
    public var source: String
    public var generationID: String
    public var route: String
    /// The pinned route version (`RoutePin.version`), nil for a job created before pinning.
    public var routeVersion: String?
    /// Incremented by every claim (the fencing token of the current or last lease).
    public var fence: Int64
    /// The event whose transition created the job.
    public var eventID: String
    public var state: JobState
    /// Index of the step to run next; steps before it have succeeded and are never re-run.
    public var nextStep: Int
    /// Attempts already made on `nextStep`.
    public var attempts: Int
    public var runAt: Int64
    public var leaseOwner: String?
    public var leaseUntil: Int64?
    public var artifact: JobArtifact?
    public var lastError: String?
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(
        id: String, source: String, generationID: String, route: String, routeVersion: String? = nil, fence: Int64 = 0,
        eventID: String, state: JobState, nextStep: Int, attempts: Int, runAt: Int64, leaseOwner: String?, leaseUntil: Int64?,
        artifact: JobArtifact?, lastError: String?, createdAt: Int64, updatedAt: Int64
    ) {
        self.routeVersion = routeVersion
        self.fence = fence
        self.id = id
        self.source = source
        self.generationID = generationID
        self.route = route
        self.eventID = eventID
        self.state = state
        self.nextStep = nextStep
        self.attempts = attempts
        self.runAt = runAt
        self.leaseOwner = leaseOwner
        self.leaseUntil = leaseUntil
        self.artifact = artifact
        self.lastError = lastError
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

public enum AttemptOutcome: String, Sendable, Codable, CaseIterable {
    case running
    case succeeded
    /// Failed; another attempt is scheduled.
    case failed
    /// Failed for good; the job is dead.
    case dead
    /// The process stopped while the step ran; the step runs again.
    case interrupted
}

public struct AttemptRecord: Sendable, Equatable {
    public var id: Int64
    public var jobID: String
    public var step: Int
    public var stepKind: String
    public var attempt: Int
    public var startedAt: Int64
    public var endedAt: Int64?
    public var outcome: AttemptOutcome
    public var summary: String?
    public var exitCode: Int32?
    public var httpStatus: Int?
    /// Captured output, capped by the step (64 KiB).
    public var output: [UInt8]

    public init(
        id: Int64, jobID: String, step: Int, stepKind: String, attempt: Int, startedAt: Int64, endedAt: Int64?,
        outcome: AttemptOutcome, summary: String?, exitCode: Int32?, httpStatus: Int?, output: [UInt8]
    ) {
        self.id = id
        self.jobID = jobID
        self.step = step
        self.stepKind = stepKind
        self.attempt = attempt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.outcome = outcome
        self.summary = summary
        self.exitCode = exitCode
        self.httpStatus = httpStatus
        self.output = output
    }
}

/// The stored event a job was created by: what the steps' event document is built from.
public struct StoredEvent: Sendable, Equatable {
    public var eventID: String
    public var source: String
    public var origin: EventOrigin
    public var eventType: String
    public var generationID: String
    public var status: GenerationStatus
    public var previousStatus: GenerationStatus?
    public var outputURL: String?
    public var errorMessage: String?
    public var receivedAt: Int64
    public var raw: [UInt8]

    public init(
        eventID: String, source: String, origin: EventOrigin, eventType: String, generationID: String,
        status: GenerationStatus, previousStatus: GenerationStatus?, outputURL: String?, errorMessage: String?,
        receivedAt: Int64, raw: [UInt8]
    ) {
        self.eventID = eventID
        self.source = source
        self.origin = origin
        self.eventType = eventType
        self.generationID = generationID
        self.status = status
        self.previousStatus = previousStatus
        self.outputURL = outputURL
        self.errorMessage = errorMessage
        self.receivedAt = receivedAt
        self.raw = raw
    }
}

public struct ClaimedJob: Sendable, Equatable {
    public var job: JobRecord
    public var event: StoredEvent
    /// The steps the job runs (unpinned for a job created before pinning).
    public var route: RoutePin
    /// What every write about this job must carry while this claim holds.
    public var lease: JobLease
    /// The attempt the claim opened (outcome `running`) for the job's next step, in the claim's
    /// own transaction; nil when the claim was not told that step's kind.
    public var attemptID: Int64?
    public init(job: JobRecord, event: StoredEvent, route: RoutePin, lease: JobLease, attemptID: Int64? = nil) {
        self.job = job
        self.event = event
        self.route = route
        self.lease = lease
        self.attemptID = attemptID
    }
}

/// Asked by a claim, inside its transaction, for the kind of the step a claimed job runs next
/// (`job.nextStep` of the steps `route` pins): the claim opens that step's attempt at once. Nil
/// when there is no such step (the route cannot be resolved, or has no step left): then no attempt
/// is opened and the caller records one itself.
public typealias NextStepKind = @Sendable (_ job: JobRecord, _ route: RoutePin) -> String?

/// An attempt a store opens (outcome `running`) for a job it has just claimed or advanced.
public struct AttemptStart: Sendable, Equatable {
    public var step: Int
    public var stepKind: String
    public var attempt: Int
    public init(step: Int, stepKind: String, attempt: Int) {
        self.step = step
        self.stepKind = stepKind
        self.attempt = attempt
    }
}

/// Ends one attempt (`finishAttempt`): what happened, how the job moves on, and — when it
/// advances to a step that is not its last — that step's kind, so the same transaction opens
/// the next attempt.
public struct AttemptFinish: Sendable, Equatable {
    public var attemptID: Int64
    public var lease: JobLease
    public var result: AttemptResult
    public var disposition: AttemptDisposition
    public var nextStepKind: String?
    public init(attemptID: Int64, lease: JobLease, result: AttemptResult, disposition: AttemptDisposition, nextStepKind: String? = nil) {
        self.attemptID = attemptID
        self.lease = lease
        self.result = result
        self.disposition = disposition
        self.nextStepKind = nextStepKind
    }
}

/// The job after a finish, and the attempt that finish opened for its next step (nil when none).
public struct FinishedAttempt: Sendable, Equatable {
    public var job: JobRecord
    public var nextAttemptID: Int64?
    public init(job: JobRecord, nextAttemptID: Int64?) {
        self.job = job
        self.nextAttemptID = nextAttemptID
    }
}

/// The pending and dead job counts (`JobStore.waitingJobCounts`).
public struct WaitingJobs: Sendable, Equatable {
    public var pending: Int
    public var dead: Int
    public init(pending: Int, dead: Int) {
        self.pending = pending
        self.dead = dead
    }
}

/// How a finished attempt moves its job along.
public enum AttemptDisposition: Sendable, Equatable {
    /// The step succeeded: continue with the next one (or finish when `done`).
    case advance(artifact: JobArtifact?, done: Bool)
    /// The step failed; try it again after `delayMilliseconds`, counted by the store's clock.
    case retry(delayMilliseconds: Int64, error: String)
    /// The job is dead.
    case dead(error: String)
}

public struct AttemptResult: Sendable, Equatable {
    public var outcome: AttemptOutcome
    public var summary: String
    public var exitCode: Int32?
    public var httpStatus: Int?
    public var output: [UInt8]
    public init(outcome: AttemptOutcome, summary: String, exitCode: Int32? = nil, httpStatus: Int? = nil, output: [UInt8] = []) {
        self.outcome = outcome
        self.summary = summary
        self.exitCode = exitCode
        self.httpStatus = httpStatus
        self.output = output
    }
}

/// The durable job queue (transactional outbox: jobs are inserted by `ingest`).
///
/// Time is the store's own: leases are set and expire by the store's clock (the database server's
/// for PostgreSQL), never by the caller's, so hosts whose clocks differ cannot both hold a job.
public protocol JobStore: Sendable {
    /// Leases up to `limit` due jobs for `leaseMilliseconds`: pending ones whose time has come, and
    /// running ones whose lease expired (their holder died or stalled; the attempt it was making is
    /// marked interrupted). Each claim increments the job's fence. For every claimed job whose next
    /// step `nextStepKind` names, the same transaction opens that step's attempt
    /// (`ClaimedJob.attemptID`), so a crash mid-step leaves it `running` for the next claim to mark
    /// interrupted, at no extra write.
    func claimJobs(
        owner: String, leaseMilliseconds: Int64, limit: Int, nextStepKind: @escaping NextStepKind
    ) async throws(StoreError) -> [ClaimedJob]
    /// Extends the lease to `leaseMilliseconds` from now. False when the lease is no longer this
    /// holder's (its fence is stale): the holder must stop the step at once.
    func renewLease(_ lease: JobLease, leaseMilliseconds: Int64) async throws(StoreError) -> Bool
    /// Records the start of an attempt (so a crash mid-step is visible as interrupted). Refused
    /// (`StoreError.Kind.fenced`) when the lease is stale. Only needed for an attempt no claim or
    /// finish opened.
    func startAttempt(_ lease: JobLease, step: Int, stepKind: String, attempt: Int) async throws(StoreError) -> Int64
    /// Ends an attempt and moves the job, in one transaction, and opens the next step's attempt
    /// when `finish.nextStepKind` is set and the job advanced to a step still to run. Refused
    /// (`fenced`) when the lease is stale, and then nothing is recorded. Concurrent finishes (of
    /// different jobs) share transactions.
    func finishAttempt(_ finish: AttemptFinish) async throws(StoreError) -> FinishedAttempt
    /// Puts a job still held under `lease` back to pending now (graceful shutdown).
    func releaseJob(_ lease: JobLease) async throws(StoreError)

    func jobs(state: JobState?, limit: Int) async throws(StoreError) -> [JobRecord]
    func jobs(generationID: String, source: String) async throws(StoreError) -> [JobRecord]
    func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord]
    /// The job with this id, or nil (search, issue 14).
    func job(id: String) async throws(StoreError) -> JobRecord?
    /// Dead (or pending) job back to pending, now, with a fresh attempt count for its step.
    func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord
    /// Every dead job (of `route` only, when given) back to pending now; how many.
    func retryDead(route: String?, at: Int64) async throws(StoreError) -> Int
    /// At start of a single-instance store: every job still marked running belongs to a process
    /// that is gone, so it is queued again now (its attempt marked interrupted).
    func requeueRunning(at: Int64) async throws(StoreError) -> Int
    /// How many jobs are in each of `states` (each counted over its range of the state index, so
    /// the few waiting or dead jobs cost little however many succeeded), 0 for none.
    func jobCounts(in states: Set<JobState>) async throws(StoreError) -> [JobState: Int]
    /// Jobs waiting for a step (pending) and for an operator (dead), for the dispatcher's gauges:
    /// counted over those states' index ranges, so succeeded jobs, however many, cost nothing.
    func waitingJobCounts() async throws(StoreError) -> WaitingJobs
    /// Milliseconds, by the store's clock, until the earliest pending job is due or the earliest
    /// lease expires (0 when one is due now); nil when no job is waiting for either.
    func millisecondsUntilNextJob() async throws(StoreError) -> Int64?
}

extension JobStore {
    /// How many jobs are in each state.
    public func jobCounts() async throws(StoreError) -> [JobState: Int] { try await jobCounts(in: Set(JobState.allCases)) }

    /// Every dead job back to pending now.
    public func retryDead(at: Int64) async throws(StoreError) -> Int { try await retryDead(route: nil, at: at) }

    /// A route name with a NUL names no job (configured names cannot hold one); SQL would cut it
    /// (SQLite) or refuse it (PostgreSQL), so stores answer without asking.
    public static func namesNoRoute(_ route: String?) -> Bool { route?.utf8.contains(0) ?? false }

    /// A claim that opens no attempt: the caller records each with `startAttempt`.
    public func claimJobs(owner: String, leaseMilliseconds: Int64, limit: Int) async throws(StoreError) -> [ClaimedJob] {
        try await claimJobs(owner: owner, leaseMilliseconds: leaseMilliseconds, limit: limit, nextStepKind: { _, _ in nil })
    }

    /// Ends an attempt and moves the job; opens no next attempt.
    public func finishAttempt(
        _ attemptID: Int64, lease: JobLease, result: AttemptResult, disposition: AttemptDisposition
    ) async throws(StoreError) -> JobRecord {
        try await finishAttempt(AttemptFinish(attemptID: attemptID, lease: lease, result: result, disposition: disposition)).job
    }
}

/// Everything the daemon and the CLI need from a store.
public typealias Storage = WebhookStore & JobStore & PollStore & CreationStore & HistoryStore

/// The job rules every store applies the same way: what a claim, a stale lease and a retry
/// request mean, with the words the user sees. Stores persist; this decides.
public enum JobRules {
    /// Set on the running attempt of a job whose lease expired when another claim takes it.
    public static let interruptedByLostLease = "interrupted: the process running it stopped or lost its lease"
    /// Set on the running attempts of a single-instance store at start.
    public static let interruptedByRestart = "interrupted: the process running it stopped"
    /// Set when a job is released on shutdown.
    public static let interruptedByShutdown = "interrupted: pipehook was stopping"
    /// A claimed job whose event is gone cannot run; it is dead-lettered with this.
    public static let eventGone = "its event is no longer stored (pruned)"

    public static func fenced(_ lease: JobLease) -> StoreError {
        StoreError(.fenced, "job \(lease.jobID) is no longer leased by this process (fence \(lease.fence) is stale)")
    }

    /// Whether `pipehook retry` may queue the job again.
    public static func checkRetryable(_ job: JobRecord) throws(StoreError) {
        switch job.state {
        case .running: throw StoreError(.invalid, "job \(job.id) is running right now")
        case .succeeded:
            throw StoreError(.invalid, "job \(job.id) already succeeded; use `pipehook replay \(job.eventID)` to run its routes again")
        case .pending, .dead: return
        }
    }

    /// Due now: pending whose time has come, or running whose lease has passed (by the store's clock).
    public static func isDue(_ job: JobRecord, now: Int64) -> Bool {
        switch job.state {
        case .pending: job.runAt <= now
        case .running: (job.leaseUntil ?? .min) < now
        case .succeeded, .dead: false
        }
    }

    // MARK: transitions
    //
    // Each store reads a job's row (locking it where the store can), applies one of these, and
    // writes the row they return back; nil means "nothing to write". `now` is the store's clock.

    /// True when `job` is still running under exactly this claim.
    public static func holds(_ job: JobRecord, _ lease: JobLease) -> Bool {
        job.id == lease.jobID && job.state == .running && job.fence == lease.fence && job.leaseOwner == lease.owner
    }

    /// A due job taken by `owner`: running, leased until `now + leaseMilliseconds`, fence + 1.
    /// Nil when the job is not due (the store selected it by `isDue` under the same clock; this
    /// re-checks).
    public static func claim(_ job: JobRecord, owner: String, now: Int64, leaseMilliseconds: Int64) -> JobRecord? {
        guard isDue(job, now: now) else { return nil }
        var claimed = job
        claimed.state = .running
        claimed.leaseOwner = owner
        claimed.leaseUntil = now + leaseMilliseconds
        claimed.fence += 1
        claimed.updatedAt = now
        return claimed
    }

    /// A claimed job whose event is gone: dead, with `eventGone`.
    public static func eventMissing(_ job: JobRecord, now: Int64) -> JobRecord {
        var dead = job
        dead.state = .dead
        dead.leaseOwner = nil
        dead.leaseUntil = nil
        dead.lastError = eventGone
        dead.updatedAt = now
        return dead
    }

    /// The lease extended to `now + leaseMilliseconds`; nil when it is no longer this holder's.
    public static func renew(_ job: JobRecord, lease: JobLease, now: Int64, leaseMilliseconds: Int64) -> JobRecord? {
        guard holds(job, lease) else { return nil }
        var renewed = job
        renewed.leaseUntil = now + leaseMilliseconds
        return renewed
    }

    /// Where an attempt's end moves the job: advance (the next step, or succeeded after the last),
    /// retry (pending until the delay has passed by the store's clock) or dead. Throws `fenced`
    /// when `lease` is stale: nothing may be recorded then.
    public static func finish(
        _ job: JobRecord, lease: JobLease, disposition: AttemptDisposition, now: Int64
    ) throws(StoreError) -> JobRecord {
        guard holds(job, lease) else { throw fenced(lease) }
        var next = job
        next.updatedAt = now
        switch disposition {
        case .advance(let artifact, let done):
            next.nextStep += 1
            next.attempts = 0
            next.lastError = nil
            if let artifact { next.artifact = artifact }
            if done {
                next.state = .succeeded
                next.leaseOwner = nil
                next.leaseUntil = nil
            }
        case .retry(let delay, let error):
            next.state = .pending
            next.attempts += 1
            next.runAt = now + max(0, delay)
            next.lastError = error
            next.leaseOwner = nil
            next.leaseUntil = nil
        case .dead(let error):
            next.state = .dead
            next.attempts += 1
            next.lastError = error
            next.leaseOwner = nil
            next.leaseUntil = nil
        }
        return next
    }

    /// The attempt to open for a job a claim or finish left running, given its next step's kind
    /// (nil: none to open).
    public static func attemptToOpen(_ job: JobRecord, stepKind: String?) -> AttemptStart? {
        guard job.state == .running, let stepKind else { return nil }
        return AttemptStart(step: job.nextStep, stepKind: stepKind, attempt: job.attempts + 1)
    }

    /// Back to pending now (graceful shutdown); nil when the lease is no longer this holder's.
    /// Its running attempt is marked interrupted (`interruptedByShutdown`).
    public static func release(_ job: JobRecord, lease: JobLease, now: Int64) -> JobRecord? {
        guard holds(job, lease) else { return nil }
        var released = job
        released.state = .pending
        released.runAt = now
        released.leaseOwner = nil
        released.leaseUntil = nil
        released.updatedAt = now
        return released
    }

    /// `pipehook retry`: a pending or dead job due now by the store's clock with a fresh attempt
    /// count for its step; `at` (when it was asked) becomes `updatedAt`.
    public static func retry(_ job: JobRecord, now: Int64, at: Int64) throws(StoreError) -> JobRecord {
        try checkRetryable(job)
        var retried = job
        retried.state = .pending
        retried.runAt = now
        retried.attempts = 0
        retried.updatedAt = at
        return retried
    }

    /// `pipehook retry --dead` and the status page's "retry all" of a route: a dead job (of
    /// `route`, byte for byte, when given) retried; nil for any other.
    public static func retryDead(_ job: JobRecord, route: String? = nil, now: Int64, at: Int64) -> JobRecord? {
        guard job.state == .dead else { return nil }
        if let route, !job.route.sameBytes(as: route) { return nil }
        return try? retry(job, now: now, at: at)
    }

    /// At start of a single-instance store: a job left running belongs to a process that is gone,
    /// so it is pending now (its attempt marked interrupted, `interruptedByRestart`); nil otherwise.
    public static func requeue(_ job: JobRecord, now: Int64) -> JobRecord? {
        guard job.state == .running else { return nil }
        var queued = job
        queued.state = .pending
        queued.runAt = now
        queued.leaseOwner = nil
        queued.leaseUntil = nil
        queued.updatedAt = now
        return queued
    }
}

/// Runs commits through a `GroupCommit` made on first use, so a store can batch a kind of write
/// without building the batcher in its initialiser.
public final class LazyGroupCommit<Item: Sendable, Outcome: Sendable>: Sendable {
    private let group = Mutex<GroupCommit<Item, Outcome>?>(nil)
    private let maxBatch: Int

    public init(maxBatch: Int = 512) { self.maxBatch = maxBatch }

    /// `commit` is used by the first call only; pass the same one every time.
    public func submit(_ item: Item, commit: @escaping GroupCommit<Item, Outcome>.Commit) async -> Result<Outcome, StoreError> {
        let maxBatch = self.maxBatch
        let group = self.group.withLock { group in
            if let group { return group }
            let made = GroupCommit<Item, Outcome>(maxBatch: maxBatch, commit: commit)
            group = made
            return made
        }
        return await group.submit(item)
    }
}

/// What a generation's entry on the status page shows: its timeline, and its jobs each with its
/// attempts.
public struct GenerationHistory: Sendable, Equatable {
    public var timeline: [TimelineEntry]
    public var jobs: [JobHistory]
    public init(timeline: [TimelineEntry], jobs: [JobHistory]) {
        self.timeline = timeline
        self.jobs = jobs
    }
}

public struct JobHistory: Sendable, Equatable {
    public var job: JobRecord
    public var attempts: [AttemptRecord]
    public init(job: JobRecord, attempts: [AttemptRecord]) {
        self.job = job
        self.attempts = attempts
    }
}

/// The histories of a page of generations in one read (issue 14): a store over a network answers
/// in a few round trips instead of three per generation and one per job.
public protocol HistoryStore: WebhookStore, JobStore {
    /// Every key's history (an empty one for a key the store does not know), jobs in creation
    /// order, timeline and attempts in the order they happened.
    func histories(_ keys: [GenerationKey]) async throws(StoreError) -> [GenerationKey: GenerationHistory]
}

extension HistoryStore {
    /// One call per generation and per job: for a store in this process, where a call is cheap.
    public func historiesOneByOne(_ keys: [GenerationKey]) async throws(StoreError) -> [GenerationKey: GenerationHistory] {
        var histories: [GenerationKey: GenerationHistory] = [:]
        var details: [String: [GenerationDetail]] = [:]
        for key in keys where histories[key] == nil {
            if details[key.generationID] == nil { details[key.generationID] = try await generations(withID: key.generationID) }
            let timeline = details[key.generationID]?.first { $0.generation.source.sameBytes(as: key.source) }?.timeline ?? []
            var jobs: [JobHistory] = []
            for job in try await self.jobs(generationID: key.generationID, source: key.source) {
                jobs.append(JobHistory(job: job, attempts: try await attempts(jobID: job.id)))
            }
            histories[key] = GenerationHistory(timeline: timeline, jobs: jobs)
        }
        return histories
    }
}
