import PipehookLifecycle

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
        id: String, source: String, generationID: String, route: String, eventID: String, state: JobState,
        nextStep: Int, attempts: Int, runAt: Int64, leaseOwner: String?, leaseUntil: Int64?, artifact: JobArtifact?,
        lastError: String?, createdAt: Int64, updatedAt: Int64
    ) {
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
    public init(job: JobRecord, event: StoredEvent) {
        self.job = job
        self.event = event
    }
}

/// How a finished attempt moves its job along.
public enum AttemptDisposition: Sendable, Equatable {
    /// The step succeeded: continue with the next one (or finish when `done`).
    case advance(artifact: JobArtifact?, done: Bool)
    /// The step failed; try it again at `runAt`.
    case retry(runAt: Int64, error: String)
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
public protocol JobStore: Sendable {
    /// Leases up to `limit` due jobs: pending ones whose time has come, and running ones whose
    /// lease expired (their process died; the attempt it was making is marked interrupted).
    func claimJobs(owner: String, now: Int64, leaseMilliseconds: Int64, limit: Int) async throws(StoreError) -> [ClaimedJob]
    /// Extends the lease while a long step runs. False when the lease is no longer ours.
    func renewLease(jobID: String, owner: String, until: Int64) async throws(StoreError) -> Bool
    /// Records the start of an attempt (so a crash mid-step is visible as interrupted).
    func startAttempt(jobID: String, step: Int, stepKind: String, attempt: Int, at: Int64) async throws(StoreError) -> Int64
    /// Ends an attempt and moves the job, in one transaction.
    func finishAttempt(
        _ attemptID: Int64, jobID: String, owner: String, result: AttemptResult, disposition: AttemptDisposition, at: Int64
    ) async throws(StoreError) -> JobRecord
    /// Puts a job that is still leased by `owner` back to pending now (graceful shutdown).
    func releaseJob(jobID: String, owner: String, at: Int64) async throws(StoreError)

    func jobs(state: JobState?, limit: Int) async throws(StoreError) -> [JobRecord]
    func jobs(generationID: String, source: String) async throws(StoreError) -> [JobRecord]
    func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord]
    /// Dead (or pending) job back to pending, now, with a fresh attempt count for its step.
    func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord
    func retryDead(at: Int64) async throws(StoreError) -> Int
    /// At start of a single-instance store: every job still marked running belongs to a process
    /// that is gone, so it is queued again now (its attempt marked interrupted).
    func requeueRunning(at: Int64) async throws(StoreError) -> Int
    /// How many jobs are in each state (for the pending/dead gauges).
    func jobCounts() async throws(StoreError) -> [JobState: Int]
    /// The earliest `runAt` (or lease expiry) among jobs not finished, for the dispatcher's sleep.
    func nextJobDue() async throws(StoreError) -> Int64?
}

/// Everything the daemon and the CLI need from a store.
public typealias Storage = WebhookStore & JobStore & PollStore
