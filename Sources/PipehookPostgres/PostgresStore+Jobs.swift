import Logging
import PipehookLifecycle
import PipehookStore
import PostgresNIO

extension PostgresStore: JobStore {
    /// Claims due jobs for this instance. `FOR UPDATE SKIP LOCKED` lets instances claiming at the
    /// same moment take disjoint jobs instead of waiting for each other; a job whose lease expired
    /// (its instance died or stalled) is taken over, its fence incremented, and the attempt it was
    /// making marked interrupted in the same transaction. Due-ness and the new lease are computed
    /// from the server's clock, so instances whose clocks differ agree on who holds a job.
    public func claimJobs(owner: String, leaseMilliseconds: Int64, limit: Int) async throws(StoreError) -> [ClaimedJob] {
        try await write("claim jobs") { db, logger in
            let rows = try await db.query("""
                WITH now AS (SELECT \(unescaped: Self.serverNow) AS ms), due AS (
                    SELECT id FROM jobs, now
                    WHERE (state = 'pending' AND run_at <= now.ms) OR (state = 'running' AND lease_until < now.ms)
                    ORDER BY run_at LIMIT \(limit)
                    FOR UPDATE OF jobs SKIP LOCKED
                ), interrupted AS (
                    UPDATE attempts SET outcome = 'interrupted', ended_at = (SELECT ms FROM now),
                           summary = \(JobRules.interruptedByLostLease)
                    WHERE job_id IN (SELECT id FROM due) AND outcome = 'running'
                )
                UPDATE jobs SET state = 'running', lease_owner = \(owner), lease_until = now.ms + \(leaseMilliseconds),
                       fence = jobs.fence + 1, updated_at = now.ms
                FROM due, now WHERE jobs.id = due.id
                RETURNING \(unescaped: Self.jobColumns(table: "jobs")),
                    (SELECT definition FROM route_versions r WHERE r.version = jobs.route_version) AS definition
                """, logger: logger).collect()
            var jobs: [(JobRecord, String?)] = []
            for row in rows {
                let definition = try row.makeRandomAccess()["definition"].decode(String?.self)
                jobs.append((try Self.job(row), definition))
            }
            jobs.sort { ($0.0.runAt, $0.0.id) < ($1.0.runAt, $1.0.id) }
            var claimed: [ClaimedJob] = []
            for (job, definition) in jobs {
                let event = try await db.query("""
                    SELECT \(unescaped: Self.eventColumns) FROM events WHERE source = \(job.source) AND event_id = \(job.eventID)
                    """, logger: logger).collect().first
                guard let event else {
                    try await db.query("""
                        UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL,
                               last_error = \(JobRules.eventGone), updated_at = \(unescaped: Self.serverNow) WHERE id = \(job.id)
                        """, logger: logger)
                    continue
                }
                var route = RoutePin(stringLiteral: job.route)
                if let version = job.routeVersion, let definition {
                    route = RoutePin(name: job.route, version: version, definition: definition)
                }
                claimed.append(ClaimedJob(
                    job: job, event: try Self.storedEvent(event), route: route,
                    lease: JobLease(jobID: job.id, owner: owner, fence: job.fence)
                ))
            }
            return claimed
        }
    }

    /// Locks the job row if it is still running under this exact claim; false when the lease is
    /// stale. Taken first in every holder's write: the order `claimJobs` locks in (job, then
    /// attempts), so a late holder and a takeover cannot deadlock.
    private static func lockHeld(_ lease: JobLease, _ db: PostgresConnection, _ logger: Logger) async throws -> Bool {
        try await !db.query("""
            SELECT 1 FROM jobs WHERE id = \(lease.jobID) AND fence = \(lease.fence) AND lease_owner = \(lease.owner)
                AND state = 'running' FOR UPDATE
            """, logger: logger).collect().isEmpty
    }

    public func renewLease(_ lease: JobLease, leaseMilliseconds: Int64) async throws(StoreError) -> Bool {
        try await write("renew lease") { db, logger in
            try await !db.query("""
                UPDATE jobs SET lease_until = \(unescaped: Self.serverNow) + \(leaseMilliseconds)
                WHERE id = \(lease.jobID) AND fence = \(lease.fence) AND lease_owner = \(lease.owner) AND state = 'running'
                RETURNING 1
                """, logger: logger).collect().isEmpty
        }
    }

    public func startAttempt(_ lease: JobLease, step: Int, stepKind: String, attempt: Int) async throws(StoreError) -> Int64 {
        try await write("start attempt") { db, logger in
            guard try await Self.lockHeld(lease, db, logger) else { throw JobRules.fenced(lease) }
            let rows = try await db.query("""
                INSERT INTO attempts (job_id, step, step_kind, attempt, started_at, outcome)
                VALUES (\(lease.jobID), \(step), \(stepKind), \(attempt), \(unescaped: Self.serverNow), 'running') RETURNING id
                """, logger: logger).collect()
            return try rows[0].decode(Int64.self)
        }
    }

    public func finishAttempt(
        _ attemptID: Int64, lease: JobLease, result: AttemptResult, disposition: AttemptDisposition
    ) async throws(StoreError) -> JobRecord {
        try await write("finish attempt") { db, logger in
            // Nothing is recorded by a stale holder: another instance owns the job now.
            guard try await Self.lockHeld(lease, db, logger) else { throw JobRules.fenced(lease) }
            let now = Self.serverNow
            let rows: [PostgresRow]
            switch disposition {
            case .advance(let artifact, let done):
                rows = try await db.query("""
                    UPDATE jobs SET next_step = next_step + 1, attempts = 0, last_error = NULL, updated_at = \(unescaped: now),
                        state = CASE WHEN \(done) THEN 'succeeded' ELSE state END,
                        lease_owner = CASE WHEN \(done) THEN NULL ELSE lease_owner END,
                        lease_until = CASE WHEN \(done) THEN NULL ELSE lease_until END,
                        artifact_file = coalesce(\(artifact?.file)::text, artifact_file),
                        artifact_sha256 = coalesce(\(artifact?.sha256)::text, artifact_sha256),
                        artifact_bytes = coalesce(\(artifact?.bytes)::bigint, artifact_bytes)
                    WHERE id = \(lease.jobID)
                    RETURNING \(unescaped: Self.jobColumns())
                    """, logger: logger).collect()
            case .retry(let delay, let error):
                rows = try await db.query("""
                    UPDATE jobs SET state = 'pending', attempts = attempts + 1, run_at = \(unescaped: now) + \(max(0, delay)),
                        last_error = \(error), lease_owner = NULL, lease_until = NULL, updated_at = \(unescaped: now)
                    WHERE id = \(lease.jobID)
                    RETURNING \(unescaped: Self.jobColumns())
                    """, logger: logger).collect()
            case .dead(let error):
                rows = try await db.query("""
                    UPDATE jobs SET state = 'dead', attempts = attempts + 1, last_error = \(error),
                        lease_owner = NULL, lease_until = NULL, updated_at = \(unescaped: now)
                    WHERE id = \(lease.jobID)
                    RETURNING \(unescaped: Self.jobColumns())
                    """, logger: logger).collect()
            }
            try await db.query("""
                UPDATE attempts SET ended_at = \(unescaped: now), outcome = \(result.outcome.rawValue), summary = \(result.summary),
                       exit_code = \(result.exitCode.map(Int64.init)), http_status = \(result.httpStatus.map(Int64.init)),
                       output = \(ByteBuffer(bytes: result.output))
                WHERE id = \(attemptID) AND job_id = \(lease.jobID)
                """, logger: logger)
            return try Self.job(rows[0])
        }
    }

    public func releaseJob(_ lease: JobLease) async throws(StoreError) {
        try await write("release job") { db, logger in
            // Only this claim's job: a lease another instance took over is not ours to touch.
            guard try await Self.lockHeld(lease, db, logger) else { return }
            try await db.query("""
                UPDATE jobs SET state = 'pending', run_at = \(unescaped: Self.serverNow), lease_owner = NULL, lease_until = NULL,
                       updated_at = \(unescaped: Self.serverNow)
                WHERE id = \(lease.jobID)
                """, logger: logger)
            try await db.query("""
                UPDATE attempts SET outcome = 'interrupted', ended_at = \(unescaped: Self.serverNow), summary = \(JobRules.interruptedByShutdown)
                WHERE job_id = \(lease.jobID) AND outcome = 'running'
                """, logger: logger)
        }
    }

    public func jobs(state: JobState?, limit: Int) async throws(StoreError) -> [JobRecord] {
        try await read("list jobs") { db, logger in
            if let state {
                return try await db.query("""
                    SELECT \(unescaped: Self.jobColumns()) FROM jobs WHERE state = \(state.rawValue) ORDER BY updated_at DESC LIMIT \(limit)
                    """, logger: logger).collect().map(Self.job)
            }
            return try await db.query("""
                SELECT \(unescaped: Self.jobColumns()) FROM jobs ORDER BY updated_at DESC LIMIT \(limit)
                """, logger: logger).collect().map(Self.job)
        }
    }

    public func jobs(generationID: String, source: String) async throws(StoreError) -> [JobRecord] {
        try await read("list jobs") { db, logger in
            try await db.query("""
                SELECT \(unescaped: Self.jobColumns()) FROM jobs WHERE generation_id = \(generationID) AND source = \(source)
                ORDER BY created_at, route
                """, logger: logger).collect().map(Self.job)
        }
    }

    public func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord] {
        try await read("list attempts") { db, logger in
            try await db.query("""
                SELECT id, job_id, step, step_kind, attempt, started_at, ended_at, outcome, summary, exit_code, http_status, output
                FROM attempts WHERE job_id = \(jobID) ORDER BY id
                """, logger: logger).collect().map { row in
                let (id, jobID, step, stepKind, attempt, startedAt, endedAt, outcome, summary, exitCode, httpStatus, output) =
                    try row.decode((Int64, String, Int, String, Int, Int64, Int64?, String, String?, Int64?, Int?, ByteBuffer?).self)
                return AttemptRecord(
                    id: id, jobID: jobID, step: step, stepKind: stepKind, attempt: attempt, startedAt: startedAt, endedAt: endedAt,
                    outcome: AttemptOutcome(rawValue: outcome) ?? .failed, summary: summary,
                    exitCode: exitCode.map { Int32(truncatingIfNeeded: $0) }, httpStatus: httpStatus,
                    output: output.map { Array($0.readableBytesView) } ?? []
                )
            }
        }
    }

    public func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord {
        try await write("retry job") { db, logger in
            guard let row = try await db.query(
                "SELECT \(unescaped: Self.jobColumns()) FROM jobs WHERE id = \(jobID) FOR UPDATE", logger: logger
            ).collect().first else {
                throw StoreError(.notFound, "no job \(jobID)")
            }
            try JobRules.checkRetryable(try Self.job(row))
            let rows = try await db.query("""
                UPDATE jobs SET state = 'pending', run_at = \(unescaped: Self.serverNow), attempts = 0, updated_at = \(at) WHERE id = \(jobID)
                RETURNING \(unescaped: Self.jobColumns())
                """, logger: logger).collect()
            return try Self.job(rows[0])
        }
    }

    public func retryDead(at: Int64) async throws(StoreError) -> Int {
        try await write("retry dead jobs") { db, logger in
            try await db.query("""
                WITH retried AS (
                    UPDATE jobs SET state = 'pending', run_at = \(unescaped: Self.serverNow), attempts = 0, updated_at = \(at)
                    WHERE state = 'dead' RETURNING 1
                ) SELECT count(*) FROM retried
                """, logger: logger).collect().first?.decode(Int.self) ?? 0
        }
    }

    /// Does nothing and returns 0. A shared store cannot tell a job whose instance died from one
    /// another live instance is running right now, so "everything running was interrupted by my
    /// last stop" is false here; a dead instance's jobs come back when their lease expires, through
    /// `claimJobs`, which marks their attempts interrupted then.
    public func requeueRunning(at: Int64) async throws(StoreError) -> Int { 0 }

    public func jobCounts() async throws(StoreError) -> [JobState: Int] {
        try await read("count jobs") { db, logger in
            var counts = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0, 0) })
            for try await (state, count) in try await db.query(
                "SELECT state, count(*) FROM jobs GROUP BY state", logger: logger
            ).decode((String, Int).self) {
                if let state = JobState(rawValue: state) { counts[state] = count }
            }
            return counts
        }
    }

    public func millisecondsUntilNextJob() async throws(StoreError) -> Int64? {
        try await read("next job due") { db, logger in
            let rows = try await db.query("""
                SELECT (SELECT min(run_at) FROM jobs WHERE state = 'pending'), (SELECT min(lease_until) FROM jobs WHERE state = 'running'),
                       \(unescaped: Self.serverNow)
                """, logger: logger).collect()
            let (pending, leases, now) = try rows[0].decode((Int64?, Int64?, Int64).self)
            return [pending, leases].compactMap { $0 }.min().map { max(0, $0 - now) }
        }
    }

    /// The server's clock in Unix milliseconds: the one clock every instance agrees on.
    static let serverNow = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

    // MARK: rows

    static func jobColumns(table: String? = nil) -> String {
        let prefix = table.map { "\($0)." } ?? ""
        return [
            "id", "source", "generation_id", "route", "route_version", "fence", "event_id", "state", "next_step", "attempts", "run_at", "lease_owner",
            "lease_until", "artifact_file", "artifact_sha256", "artifact_bytes", "last_error", "created_at", "updated_at",
        ].map { prefix + $0 }.joined(separator: ", ")
    }

    static func job(_ row: PostgresRow) throws -> JobRecord {
        let (id, source, generationID, route, routeVersion, fence, eventID, state, nextStep, attempts, runAt, leaseOwner,
             leaseUntil, file, sha256, bytes, lastError, createdAt, updatedAt) =
            try row.decode((String, String, String, String, String?, Int64, String, String, Int, Int, Int64, String?,
                            Int64?, String?, String?, Int64?, String?, Int64, Int64).self)
        return JobRecord(
            id: id, source: source, generationID: generationID, route: route, routeVersion: routeVersion, fence: fence,
            eventID: eventID,
            state: JobState(rawValue: state) ?? .dead, nextStep: nextStep, attempts: attempts, runAt: runAt,
            leaseOwner: leaseOwner, leaseUntil: leaseUntil,
            artifact: file.map { JobArtifact(file: $0, sha256: sha256 ?? "", bytes: bytes ?? 0) },
            lastError: lastError, createdAt: createdAt, updatedAt: updatedAt
        )
    }
}
