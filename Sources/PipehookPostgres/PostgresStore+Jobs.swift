import Logging
import PipehookLifecycle
import PipehookStore
import PostgresNIO

extension PostgresStore: JobStore {
    /// Claims due jobs for this instance. `FOR UPDATE SKIP LOCKED` lets instances claiming at the
    /// same moment take disjoint jobs instead of waiting for each other; a job whose lease expired
    /// (its instance died) is taken over, and the attempt it was making is marked interrupted in
    /// the same transaction.
    public func claimJobs(owner: String, now: Int64, leaseMilliseconds: Int64, limit: Int) async throws(StoreError) -> [ClaimedJob] {
        try await write("claim jobs") { db, logger in
            let jobs = try await db.query("""
                WITH due AS (
                    SELECT id FROM jobs
                    WHERE (state = 'pending' AND run_at <= \(now)) OR (state = 'running' AND lease_until < \(now))
                    ORDER BY run_at LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED
                ), interrupted AS (
                    UPDATE attempts SET outcome = 'interrupted', ended_at = \(now),
                           summary = 'interrupted: the process running it stopped'
                    WHERE job_id IN (SELECT id FROM due) AND outcome = 'running'
                )
                UPDATE jobs SET state = 'running', lease_owner = \(owner), lease_until = \(now + leaseMilliseconds), updated_at = \(now)
                FROM due WHERE jobs.id = due.id
                RETURNING \(unescaped: Self.jobColumns(table: "jobs"))
                """, logger: logger).collect().map(Self.job).sorted { ($0.runAt, $0.id) < ($1.runAt, $1.id) }
            var claimed: [ClaimedJob] = []
            for job in jobs {
                let event = try await db.query("""
                    SELECT \(unescaped: Self.eventColumns) FROM events WHERE source = \(job.source) AND event_id = \(job.eventID)
                    """, logger: logger).collect().first
                guard let event else {
                    try await db.query("""
                        UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL,
                               last_error = 'its event is no longer stored (pruned)', updated_at = \(now) WHERE id = \(job.id)
                        """, logger: logger)
                    continue
                }
                claimed.append(ClaimedJob(job: job, event: try Self.storedEvent(event)))
            }
            return claimed
        }
    }

    public func renewLease(jobID: String, owner: String, until: Int64) async throws(StoreError) -> Bool {
        try await write("renew lease") { db, logger in
            try await !db.query("""
                UPDATE jobs SET lease_until = \(until) WHERE id = \(jobID) AND lease_owner = \(owner) AND state = 'running' RETURNING 1
                """, logger: logger).collect().isEmpty
        }
    }

    public func startAttempt(jobID: String, step: Int, stepKind: String, attempt: Int, at: Int64) async throws(StoreError) -> Int64 {
        try await write("start attempt") { db, logger in
            let rows = try await db.query("""
                INSERT INTO attempts (job_id, step, step_kind, attempt, started_at, outcome)
                VALUES (\(jobID), \(step), \(stepKind), \(attempt), \(at), 'running') RETURNING id
                """, logger: logger).collect()
            return try rows[0].decode(Int64.self)
        }
    }

    public func finishAttempt(
        _ attemptID: Int64, jobID: String, owner: String, result: AttemptResult, disposition: AttemptDisposition, at: Int64
    ) async throws(StoreError) -> JobRecord {
        try await write("finish attempt") { db, logger in
            // The job row first, then the attempt: the order `claimJobs` locks them in, so an
            // instance finishing late and one taking the job over cannot deadlock.
            let rows: [PostgresRow]
            switch disposition {
            case .advance(let artifact, let done):
                rows = try await db.query("""
                    UPDATE jobs SET next_step = next_step + 1, attempts = 0, last_error = NULL, updated_at = \(at),
                        state = CASE WHEN \(done) THEN 'succeeded' ELSE state END,
                        lease_owner = CASE WHEN \(done) THEN NULL ELSE lease_owner END,
                        lease_until = CASE WHEN \(done) THEN NULL ELSE lease_until END,
                        artifact_file = coalesce(\(artifact?.file)::text, artifact_file),
                        artifact_sha256 = coalesce(\(artifact?.sha256)::text, artifact_sha256),
                        artifact_bytes = coalesce(\(artifact?.bytes)::bigint, artifact_bytes)
                    WHERE id = \(jobID) AND lease_owner = \(owner)
                    RETURNING \(unescaped: Self.jobColumns())
                    """, logger: logger).collect()
            case .retry(let runAt, let error):
                rows = try await db.query("""
                    UPDATE jobs SET state = 'pending', attempts = attempts + 1, run_at = \(runAt), last_error = \(error),
                        lease_owner = NULL, lease_until = NULL, updated_at = \(at)
                    WHERE id = \(jobID) AND lease_owner = \(owner)
                    RETURNING \(unescaped: Self.jobColumns())
                    """, logger: logger).collect()
            case .dead(let error):
                rows = try await db.query("""
                    UPDATE jobs SET state = 'dead', attempts = attempts + 1, last_error = \(error),
                        lease_owner = NULL, lease_until = NULL, updated_at = \(at)
                    WHERE id = \(jobID) AND lease_owner = \(owner)
                    RETURNING \(unescaped: Self.jobColumns())
                    """, logger: logger).collect()
            }
            // Nothing is recorded then: another instance owns the job now.
            guard rows.count == 1 else { throw StoreError(.invalid, "job \(jobID) is no longer leased by this process") }
            try await db.query("""
                UPDATE attempts SET ended_at = \(at), outcome = \(result.outcome.rawValue), summary = \(result.summary),
                       exit_code = \(result.exitCode.map(Int64.init)), http_status = \(result.httpStatus.map(Int64.init)),
                       output = \(ByteBuffer(bytes: result.output))
                WHERE id = \(attemptID)
                """, logger: logger)
            return try Self.job(rows[0])
        }
    }

    public func releaseJob(jobID: String, owner: String, at: Int64) async throws(StoreError) {
        try await write("release job") { db, logger in
            // Only this owner's job: a lease another instance took over is not ours to touch.
            let released = try await db.query("""
                UPDATE jobs SET state = 'pending', run_at = \(at), lease_owner = NULL, lease_until = NULL, updated_at = \(at)
                WHERE id = \(jobID) AND lease_owner = \(owner) AND state = 'running' RETURNING 1
                """, logger: logger).collect()
            if !released.isEmpty {
                try await db.query("""
                    UPDATE attempts SET outcome = 'interrupted', ended_at = \(at), summary = 'interrupted: pipehook was stopping'
                    WHERE job_id = \(jobID) AND outcome = 'running'
                    """, logger: logger)
            }
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
            let job = try Self.job(row)
            switch job.state {
            case .running: throw StoreError(.invalid, "job \(jobID) is running right now")
            case .succeeded: throw StoreError(.invalid, "job \(jobID) already succeeded; use `pipehook replay \(job.eventID)` to run its routes again")
            case .pending, .dead: break
            }
            let rows = try await db.query("""
                UPDATE jobs SET state = 'pending', run_at = \(at), attempts = 0, updated_at = \(at) WHERE id = \(jobID)
                RETURNING \(unescaped: Self.jobColumns())
                """, logger: logger).collect()
            return try Self.job(rows[0])
        }
    }

    public func retryDead(at: Int64) async throws(StoreError) -> Int {
        try await write("retry dead jobs") { db, logger in
            try await db.query("""
                WITH retried AS (
                    UPDATE jobs SET state = 'pending', run_at = \(at), attempts = 0, updated_at = \(at) WHERE state = 'dead' RETURNING 1
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

    public func nextJobDue() async throws(StoreError) -> Int64? {
        try await read("next job due") { db, logger in
            let rows = try await db.query("""
                SELECT (SELECT min(run_at) FROM jobs WHERE state = 'pending'), (SELECT min(lease_until) FROM jobs WHERE state = 'running')
                """, logger: logger).collect()
            let (pending, leases) = try rows[0].decode((Int64?, Int64?).self)
            return [pending, leases].compactMap { $0 }.min()
        }
    }

    // MARK: rows

    static func jobColumns(table: String? = nil) -> String {
        let prefix = table.map { "\($0)." } ?? ""
        return [
            "id", "source", "generation_id", "route", "event_id", "state", "next_step", "attempts", "run_at", "lease_owner",
            "lease_until", "artifact_file", "artifact_sha256", "artifact_bytes", "last_error", "created_at", "updated_at",
        ].map { prefix + $0 }.joined(separator: ", ")
    }

    static func job(_ row: PostgresRow) throws -> JobRecord {
        let (id, source, generationID, route, eventID, state, nextStep, attempts, runAt, leaseOwner,
             leaseUntil, file, sha256, bytes, lastError, createdAt, updatedAt) =
            try row.decode((String, String, String, String, String, String, Int, Int, Int64, String?,
                            Int64?, String?, String?, Int64?, String?, Int64, Int64).self)
        return JobRecord(
            id: id, source: source, generationID: generationID, route: route, eventID: eventID,
            state: JobState(rawValue: state) ?? .dead, nextStep: nextStep, attempts: attempts, runAt: runAt,
            leaseOwner: leaseOwner, leaseUntil: leaseUntil,
            artifact: file.map { JobArtifact(file: $0, sha256: sha256 ?? "", bytes: bytes ?? 0) },
            lastError: lastError, createdAt: createdAt, updatedAt: updatedAt
        )
    }
}
