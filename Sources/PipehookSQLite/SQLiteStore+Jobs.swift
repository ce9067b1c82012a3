import Foundation
import GRDB
import PipehookLifecycle
import PipehookStore

extension SQLiteStore: JobStore {
    public func claimJobs(owner: String, leaseMilliseconds: Int64, limit: Int) async throws(StoreError) -> [ClaimedJob] {
        let clock = self.clock
        return try await write("claim jobs") { db in
            let now = clock()
            let ids = try String.fetchAll(db, sql: """
                SELECT id FROM jobs
                WHERE (state = 'pending' AND run_at <= ?) OR (state = 'running' AND lease_until < ?)
                ORDER BY run_at LIMIT ?
                """, arguments: [now, now, limit])
            var claimed: [ClaimedJob] = []
            for id in ids {
                // A step that was running when its holder died or lost its lease shows as interrupted.
                try db.execute(sql: """
                    UPDATE attempts SET outcome = 'interrupted', ended_at = ?, summary = ?
                    WHERE job_id = ? AND outcome = 'running'
                    """, arguments: [now, JobRules.interruptedByLostLease, id])
                try db.execute(sql: """
                    UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, fence = fence + 1, updated_at = ? WHERE id = ?
                    """, arguments: [owner, now + leaseMilliseconds, now, id])
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]) else { continue }
                let job = try Self.job(row)
                guard let eventRow = try Row.fetchOne(
                    db, sql: "SELECT * FROM events WHERE source = ? AND event_id = ?", arguments: [job.source, job.eventID]
                ) else {
                    try db.execute(sql: """
                        UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL, last_error = ?, updated_at = ? WHERE id = ?
                        """, arguments: [JobRules.eventGone, now, id])
                    continue
                }
                var route = RoutePin(stringLiteral: job.route)
                if let version = job.routeVersion,
                   let definition = try String.fetchOne(db, sql: "SELECT definition FROM route_versions WHERE version = ?", arguments: [version]) {
                    route = RoutePin(name: job.route, version: version, definition: definition)
                }
                claimed.append(ClaimedJob(
                    job: job, event: try Self.storedEvent(eventRow), route: route,
                    lease: JobLease(jobID: job.id, owner: owner, fence: job.fence)
                ))
            }
            return claimed
        }
    }

    /// True when the job is still running under this exact claim.
    private static func holds(_ lease: JobLease, _ db: Database) throws -> Bool {
        try Bool.fetchOne(db, sql: """
            SELECT 1 FROM jobs WHERE id = ? AND fence = ? AND lease_owner = ? AND state = 'running'
            """, arguments: [lease.jobID, lease.fence, lease.owner]) ?? false
    }

    public func renewLease(_ lease: JobLease, leaseMilliseconds: Int64) async throws(StoreError) -> Bool {
        let clock = self.clock
        return try await write("renew lease") { db in
            try db.execute(sql: """
                UPDATE jobs SET lease_until = ? WHERE id = ? AND fence = ? AND lease_owner = ? AND state = 'running'
                """, arguments: [clock() + leaseMilliseconds, lease.jobID, lease.fence, lease.owner])
            return db.changesCount == 1
        }
    }

    public func startAttempt(_ lease: JobLease, step: Int, stepKind: String, attempt: Int) async throws(StoreError) -> Int64 {
        let clock = self.clock
        return try await write("start attempt") { db in
            guard try Self.holds(lease, db) else { throw JobRules.fenced(lease) }
            try db.execute(sql: """
                INSERT INTO attempts (job_id, step, step_kind, attempt, started_at, outcome) VALUES (?, ?, ?, ?, ?, 'running')
                """, arguments: [lease.jobID, step, stepKind, attempt, clock()])
            return db.lastInsertedRowID
        }
    }

    public func finishAttempt(
        _ attemptID: Int64, lease: JobLease, result: AttemptResult, disposition: AttemptDisposition
    ) async throws(StoreError) -> JobRecord {
        let clock = self.clock
        return try await write("finish attempt") { db in
            // Checked first: a stale holder records neither the attempt nor the job's move.
            guard try Self.holds(lease, db) else { throw JobRules.fenced(lease) }
            let at = clock()
            try db.execute(sql: """
                UPDATE attempts SET ended_at = ?, outcome = ?, summary = ?, exit_code = ?, http_status = ?, output = ?
                WHERE id = ? AND job_id = ?
                """, arguments: [at, result.outcome.rawValue, result.summary, result.exitCode, result.httpStatus, Data(result.output), attemptID, lease.jobID])
            switch disposition {
            case .advance(let artifact, let done):
                try db.execute(sql: """
                    UPDATE jobs SET next_step = next_step + 1, attempts = 0, last_error = NULL, updated_at = ?,
                        state = CASE WHEN ? THEN 'succeeded' ELSE state END,
                        lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END,
                        lease_until = CASE WHEN ? THEN NULL ELSE lease_until END,
                        artifact_file = coalesce(?, artifact_file), artifact_sha256 = coalesce(?, artifact_sha256),
                        artifact_bytes = coalesce(?, artifact_bytes)
                    WHERE id = ?
                    """, arguments: [at, done, done, done, artifact?.file, artifact?.sha256, artifact?.bytes, lease.jobID])
            case .retry(let delay, let error):
                try db.execute(sql: """
                    UPDATE jobs SET state = 'pending', attempts = attempts + 1, run_at = ?, last_error = ?,
                        lease_owner = NULL, lease_until = NULL, updated_at = ?
                    WHERE id = ?
                    """, arguments: [at + max(0, delay), error, at, lease.jobID])
            case .dead(let error):
                try db.execute(sql: """
                    UPDATE jobs SET state = 'dead', attempts = attempts + 1, last_error = ?,
                        lease_owner = NULL, lease_until = NULL, updated_at = ?
                    WHERE id = ?
                    """, arguments: [error, at, lease.jobID])
            }
            return try Self.job(try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [lease.jobID])!)
        }
    }

    public func releaseJob(_ lease: JobLease) async throws(StoreError) {
        let clock = self.clock
        try await write("release job") { db in
            guard try Self.holds(lease, db) else { return }
            let at = clock()
            try db.execute(sql: """
                UPDATE attempts SET outcome = 'interrupted', ended_at = ?, summary = ?
                WHERE job_id = ? AND outcome = 'running'
                """, arguments: [at, JobRules.interruptedByShutdown, lease.jobID])
            try db.execute(sql: """
                UPDATE jobs SET state = 'pending', run_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?
                """, arguments: [at, at, lease.jobID])
        }
    }

    public func jobs(state: JobState?, limit: Int) async throws(StoreError) -> [JobRecord] {
        try await read { db in
            let rows = try state.map {
                try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE state = ? ORDER BY updated_at DESC LIMIT ?", arguments: [$0.rawValue, limit])
            } ?? Row.fetchAll(db, sql: "SELECT * FROM jobs ORDER BY updated_at DESC LIMIT ?", arguments: [limit])
            return try rows.map(Self.job)
        }
    }

    public func jobs(generationID: String, source: String) async throws(StoreError) -> [JobRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE generation_id = ? AND source = ? ORDER BY created_at, route",
                             arguments: [generationID, source]).map(Self.job)
        }
    }

    public func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM attempts WHERE job_id = ? ORDER BY id", arguments: [jobID]).map { row in
                let outcome: String = row["outcome"]
                let output: Data? = row["output"]
                return AttemptRecord(
                    id: row["id"], jobID: row["job_id"], step: row["step"], stepKind: row["step_kind"], attempt: row["attempt"],
                    startedAt: row["started_at"], endedAt: row["ended_at"], outcome: AttemptOutcome(rawValue: outcome) ?? .failed,
                    summary: row["summary"], exitCode: row["exit_code"], httpStatus: row["http_status"], output: output.map { Array($0) } ?? []
                )
            }
        }
    }

    /// Due at once by the store's clock (`at` is only when it was asked, for `updated_at`).
    public func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord {
        let clock = self.clock
        return try await write("retry job") { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [jobID]) else {
                throw StoreError(.notFound, "no job \(jobID)")
            }
            try JobRules.checkRetryable(try Self.job(row))
            try db.execute(sql: """
                UPDATE jobs SET state = 'pending', run_at = ?, attempts = 0, updated_at = ? WHERE id = ?
                """, arguments: [clock(), at, jobID])
            return try Self.job(try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [jobID])!)
        }
    }

    public func retryDead(at: Int64) async throws(StoreError) -> Int {
        let clock = self.clock
        return try await write("retry dead jobs") { db in
            try db.execute(sql: "UPDATE jobs SET state = 'pending', run_at = ?, attempts = 0, updated_at = ? WHERE state = 'dead'", arguments: [clock(), at])
            return db.changesCount
        }
    }

    public func requeueRunning(at: Int64) async throws(StoreError) -> Int {
        try await write("requeue running jobs") { db in
            try db.execute(sql: """
                UPDATE attempts SET outcome = 'interrupted', ended_at = ?, summary = ?
                WHERE outcome = 'running'
                """, arguments: [at, JobRules.interruptedByRestart])
            try db.execute(sql: """
                UPDATE jobs SET state = 'pending', run_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?
                WHERE state = 'running'
                """, arguments: [at, at])
            return db.changesCount
        }
    }

    public func jobCounts() async throws(StoreError) -> [JobState: Int] {
        try await read { db in
            var counts: [JobState: Int] = [:]
            for state in JobState.allCases {
                counts[state] = try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs WHERE state = ?", arguments: [state.rawValue]) ?? 0
            }
            return counts
        }
    }

    public func millisecondsUntilNextJob() async throws(StoreError) -> Int64? {
        let clock = self.clock
        return try await read { db in
            let pending = try Int64.fetchOne(db, sql: "SELECT min(run_at) FROM jobs WHERE state = 'pending'")
            let leases = try Int64.fetchOne(db, sql: "SELECT min(lease_until) FROM jobs WHERE state = 'running'")
            return [pending, leases].compactMap { $0 }.min().map { max(0, $0 - clock()) }
        }
    }

    // MARK: rows

    static func job(_ row: Row) throws -> JobRecord {
        let state: String = row["state"]
        let file: String? = row["artifact_file"]
        return JobRecord(
            id: row["id"], source: row["source"], generationID: row["generation_id"], route: row["route"],
            routeVersion: row["route_version"], fence: row["fence"], eventID: row["event_id"], state: JobState(rawValue: state) ?? .dead, nextStep: row["next_step"],
            attempts: row["attempts"], runAt: row["run_at"], leaseOwner: row["lease_owner"], leaseUntil: row["lease_until"],
            artifact: file.map { JobArtifact(file: $0, sha256: row["artifact_sha256"] ?? "", bytes: row["artifact_bytes"] ?? 0) },
            lastError: row["last_error"], createdAt: row["created_at"], updatedAt: row["updated_at"]
        )
    }

    static func storedEvent(_ row: Row) throws -> StoredEvent {
        let origin: String = row["origin"]
        let previous: String? = row["previous_status"]
        let raw: Data = row["raw"]
        return StoredEvent(
            eventID: row["event_id"], source: row["source"], origin: EventOrigin(rawValue: origin) ?? .webhook,
            eventType: row["event_type"], generationID: row["generation_id"],
            status: try status(row["status"], column: "events.status"),
            previousStatus: try previous.map { try status($0, column: "events.previous_status") },
            outputURL: row["output_url"], errorMessage: row["error_message"], receivedAt: row["received_at"], raw: Array(raw)
        )
    }

    /// One write transaction with errors mapped to `StoreError`.
    func write<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do {
            return try await Task { try await pool.write(body) }.value
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.unavailable, "\(what) failed: \(Self.describe(error))")
        }
    }
}
