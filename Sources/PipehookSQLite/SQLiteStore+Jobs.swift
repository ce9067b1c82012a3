import Foundation
import GRDB
import PipehookLifecycle
import PipehookStore

extension SQLiteStore: JobStore {
    public func claimJobs(
        owner: String, leaseMilliseconds: Int64, limit: Int, nextStepKind: @escaping NextStepKind
    ) async throws(StoreError) -> [ClaimedJob] {
        let clock = self.clock
        return try await write("claim jobs") { db in
            let now = clock()
            // Two reads that each walk `jobs_state_run_at` in order and stop at `limit`: one query
            // with OR made SQLite read (and sort) every due job on each claim, so a backlog of n
            // jobs cost O(n) per claim and O(n²) to drain.
            let due = try Row.fetchAll(db.cachedStatement(sql: """
                SELECT * FROM jobs WHERE state = 'pending' AND run_at <= ? ORDER BY run_at LIMIT ?
                """), arguments: [now, limit])
            let expired = try Row.fetchAll(db.cachedStatement(sql: """
                SELECT * FROM jobs WHERE state = 'running' AND lease_until < ? ORDER BY run_at LIMIT ?
                """), arguments: [now, limit])
            let rows = (due + expired).sorted { ($0["run_at"] as Int64) < ($1["run_at"] as Int64) }.prefix(limit)
            var claimed: [ClaimedJob] = []
            for row in rows {
                guard let job = JobRules.claim(try Self.job(row), owner: owner, now: now, leaseMilliseconds: leaseMilliseconds) else { continue }
                // A step that was running when its holder died or lost its lease shows as interrupted.
                try Self.interruptAttempts(of: job.id, at: now, summary: JobRules.interruptedByLostLease, db)
                guard let eventRow = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT * FROM events WHERE source = ? AND event_id = ?"), arguments: [job.source, job.eventID]
                ) else {
                    try Self.save(JobRules.eventMissing(job, now: now), db)
                    continue
                }
                try Self.save(job, db)
                var route = RoutePin(stringLiteral: job.route)
                if let version = job.routeVersion,
                   let definition = try String.fetchOne(
                       db.cachedStatement(sql: "SELECT definition FROM route_versions WHERE version = ?"), arguments: [version]
                   ) {
                    route = RoutePin(name: job.route, version: version, definition: definition)
                }
                let attemptID = try JobRules.attemptToOpen(job, stepKind: nextStepKind(job, route)).map { try Self.open($0, jobID: job.id, at: now, db) }
                claimed.append(ClaimedJob(
                    job: job, event: try Self.storedEvent(eventRow), route: route,
                    lease: JobLease(jobID: job.id, owner: owner, fence: job.fence), attemptID: attemptID
                ))
            }
            return claimed
        }
    }

    /// The job's row, or nil.
    private static func fetchJob(_ id: String, _ db: Database) throws -> JobRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM jobs WHERE id = ?"), arguments: [id]).map(job)
    }

    /// Writes back a job row a rule returned (everything a transition may change).
    private static func save(_ job: JobRecord, _ db: Database) throws {
        try db.cachedStatement(sql: """
            UPDATE jobs SET state = ?, next_step = ?, attempts = ?, run_at = ?, lease_owner = ?, lease_until = ?, fence = ?,
                artifact_file = ?, artifact_sha256 = ?, artifact_bytes = ?, last_error = ?, updated_at = ?
            WHERE id = ?
            """).execute(arguments: [
                job.state.rawValue, job.nextStep, job.attempts, job.runAt, job.leaseOwner, job.leaseUntil, job.fence,
                job.artifact?.file, job.artifact?.sha256, job.artifact?.bytes, job.lastError, job.updatedAt, job.id,
            ])
    }

    private static func interruptAttempts(of jobID: String, at: Int64, summary: String, _ db: Database) throws {
        try db.cachedStatement(sql: """
            UPDATE attempts SET outcome = 'interrupted', ended_at = ?, summary = ? WHERE job_id = ? AND outcome = 'running'
            """).execute(arguments: [at, summary, jobID])
    }

    private static func open(_ start: AttemptStart, jobID: String, at: Int64, _ db: Database) throws -> Int64 {
        try db.cachedStatement(sql: """
            INSERT INTO attempts (job_id, step, step_kind, attempt, started_at, outcome) VALUES (?, ?, ?, ?, ?, 'running')
            """).execute(arguments: [jobID, start.step, start.stepKind, start.attempt, at])
        return db.lastInsertedRowID
    }

    /// The job if it is still running under this exact claim.
    private static func held(_ lease: JobLease, _ db: Database) throws -> JobRecord? {
        guard let job = try fetchJob(lease.jobID, db), JobRules.holds(job, lease) else { return nil }
        return job
    }

    public func renewLease(_ lease: JobLease, leaseMilliseconds: Int64) async throws(StoreError) -> Bool {
        let clock = self.clock
        return try await write("renew lease") { db in
            guard let job = try Self.held(lease, db),
                  let renewed = JobRules.renew(job, lease: lease, now: clock(), leaseMilliseconds: leaseMilliseconds) else { return false }
            try Self.save(renewed, db)
            return true
        }
    }

    public func startAttempt(_ lease: JobLease, step: Int, stepKind: String, attempt: Int) async throws(StoreError) -> Int64 {
        let clock = self.clock
        return try await write("start attempt") { db in
            guard try Self.held(lease, db) != nil else { throw JobRules.fenced(lease) }
            return try Self.open(AttemptStart(step: step, stepKind: stepKind, attempt: attempt), jobID: lease.jobID, at: clock(), db)
        }
    }

    public func finishAttempt(_ finish: AttemptFinish) async throws(StoreError) -> FinishedAttempt {
        let pool = self.pool, clock = self.clock
        return try await finishes.submit(finish) { batch in
            // Unstructured: GRDB interrupts a write whose task is cancelled, and one holder being
            // cancelled must not abort the others' bookkeeping.
            await Task { await Self.commitFinishes(batch, pool: pool, clock: clock) }.value
        }.get()
    }

    /// The finishes of many jobs in one transaction (one fsync). A stale lease fails only its own
    /// finish (checked before anything of it is written); if the transaction itself fails, each
    /// finish is tried again in its own.
    private static func commitFinishes(
        _ batch: [AttemptFinish], pool: DatabasePool, clock: @escaping @Sendable () -> Int64
    ) async -> [Result<FinishedAttempt, StoreError>] {
        func each(_ finishes: [AttemptFinish]) async throws -> [Result<FinishedAttempt, StoreError>] {
            try await pool.write { db in
                let now = clock()
                return try finishes.map { finish in
                    do {
                        return .success(try finishOne(finish, now: now, db))
                    } catch let error as StoreError {
                        return .failure(error)
                    }
                }
            }
        }
        do {
            return try await each(batch)
        } catch {
            if batch.count == 1 { return [.failure(StoreError(.unavailable, "finish attempt failed: \(describe(error))"))] }
        }
        var results: [Result<FinishedAttempt, StoreError>] = []
        for finish in batch {
            do {
                results.append(contentsOf: try await each([finish]))
            } catch {
                results.append(.failure(StoreError(.unavailable, "finish attempt failed: \(describe(error))")))
            }
        }
        return results
    }

    /// Inside the batch transaction; throws `StoreError` (fenced) before writing anything.
    private static func finishOne(_ finish: AttemptFinish, now: Int64, _ db: Database) throws -> FinishedAttempt {
        let lease = finish.lease
        // Checked first: a stale holder records neither the attempt nor the job's move.
        guard let job = try held(lease, db) else { throw JobRules.fenced(lease) }
        let next = try JobRules.finish(job, lease: lease, disposition: finish.disposition, now: now)
        let result = finish.result
        try db.cachedStatement(sql: """
            UPDATE attempts SET ended_at = ?, outcome = ?, summary = ?, exit_code = ?, http_status = ?, output = ?
            WHERE id = ? AND job_id = ?
            """).execute(arguments: [
                now, result.outcome.rawValue, result.summary, result.exitCode, result.httpStatus, Data(result.output),
                finish.attemptID, lease.jobID,
            ])
        try save(next, db)
        let opened = try JobRules.attemptToOpen(next, stepKind: finish.nextStepKind).map { try open($0, jobID: next.id, at: now, db) }
        return FinishedAttempt(job: next, nextAttemptID: opened)
    }

    public func releaseJob(_ lease: JobLease) async throws(StoreError) {
        let clock = self.clock
        try await write("release job") { db in
            let at = clock()
            guard let job = try Self.held(lease, db), let released = JobRules.release(job, lease: lease, now: at) else { return }
            try Self.interruptAttempts(of: lease.jobID, at: at, summary: JobRules.interruptedByShutdown, db)
            try Self.save(released, db)
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

    public func job(id: String) async throws(StoreError) -> JobRecord? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]).map(Self.job) }
    }

    public func events(source: String, generationID: String) async throws(StoreError) -> [StoredEvent] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM events WHERE source = ? AND generation_id = ? ORDER BY seq", arguments: [source, generationID])
                .map(Self.storedEvent)
        }
    }

    public func eventGenerations(eventID: String) async throws(StoreError) -> [GenerationKey] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT source, generation_id FROM events WHERE event_id = ? ORDER BY source", arguments: [eventID])
                .map { GenerationKey(source: $0["source"], generationID: $0["generation_id"]) }
        }
    }

    public func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord] {
        try await read { db in try Self.attempts(jobID, db) }
    }

    static func attempts(_ jobID: String, _ db: Database) throws -> [AttemptRecord] {
        try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM attempts WHERE job_id = ? ORDER BY id"), arguments: [jobID]).map { row in
            let outcome: String = row["outcome"]
            let output: Data? = row["output"]
            return AttemptRecord(
                id: row["id"], jobID: row["job_id"], step: row["step"], stepKind: row["step_kind"], attempt: row["attempt"],
                startedAt: row["started_at"], endedAt: row["ended_at"], outcome: AttemptOutcome(rawValue: outcome) ?? .failed,
                summary: row["summary"], exitCode: row["exit_code"], httpStatus: row["http_status"], output: output.map { Array($0) } ?? []
            )
        }
    }

    /// Due at once by the store's clock (`at` is only when it was asked, for `updated_at`).
    public func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord {
        let clock = self.clock
        return try await write("retry job") { db in
            guard let job = try Self.fetchJob(jobID, db) else { throw StoreError(.notFound, "no job \(jobID)") }
            let retried = try JobRules.retry(job, now: clock(), at: at)
            try Self.save(retried, db)
            return retried
        }
    }

    public func retryDead(route: String?, at: Int64) async throws(StoreError) -> Int {
        if Self.namesNoRoute(route) { return 0 }
        let clock = self.clock
        return try await write("retry dead jobs") { db in
            let now = clock()
            // The route is compared again, byte for byte, by the rule (SQLite's = stops at a NUL).
            let dead = try Row.fetchAll(
                db, sql: "SELECT * FROM jobs WHERE state = 'dead'" + (route == nil ? "" : " AND route = ?"),
                arguments: route.map { [$0] } ?? []
            ).map(Self.job)
            let retried = dead.compactMap { JobRules.retryDead($0, route: route, now: now, at: at) }
            for job in retried { try Self.save(job, db) }
            return retried.count
        }
    }

    public func requeueRunning(at: Int64) async throws(StoreError) -> Int {
        try await write("requeue running jobs") { db in
            try db.execute(sql: """
                UPDATE attempts SET outcome = 'interrupted', ended_at = ?, summary = ?
                WHERE outcome = 'running'
                """, arguments: [at, JobRules.interruptedByRestart])
            let running = try Row.fetchAll(db, sql: "SELECT * FROM jobs WHERE state = 'running'").map(Self.job)
            let queued = running.compactMap { JobRules.requeue($0, now: at) }
            for job in queued { try Self.save(job, db) }
            return queued.count
        }
    }

    public func jobCounts(in states: Set<JobState>) async throws(StoreError) -> [JobState: Int] {
        let names = states.map(\.rawValue).sorted()
        return try await read { db in
            var counts = Dictionary(uniqueKeysWithValues: states.map { ($0, 0) })
            guard !names.isEmpty else { return counts }
            let marks = Array(repeating: "?", count: names.count).joined(separator: ", ")
            for row in try Row.fetchAll(
                db, sql: "SELECT state, count(*) AS n FROM jobs WHERE state IN (\(marks)) GROUP BY state", arguments: StatementArguments(names)
            ) {
                let state: String = row["state"]
                if let state = JobState(rawValue: state) { counts[state] = row["n"] }
            }
            return counts
        }
    }

    public func waitingJobCounts() async throws(StoreError) -> WaitingJobs {
        try await read { db in
            let row = try Row.fetchOne(db.cachedStatement(sql: """
                SELECT (SELECT count(*) FROM jobs WHERE state = 'pending') AS pending,
                       (SELECT count(*) FROM jobs WHERE state = 'dead') AS dead
                """))
            return WaitingJobs(pending: row?["pending"] ?? 0, dead: row?["dead"] ?? 0)
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

extension SQLiteStore: HistoryStore {
    /// In one read: the statements are cached, and a call costs no round trip here.
    public func histories(_ keys: [GenerationKey]) async throws(StoreError) -> [GenerationKey: GenerationHistory] {
        try await read { db in
            var histories: [GenerationKey: GenerationHistory] = [:]
            for key in keys where histories[key] == nil {
                let timeline = try Row.fetchAll(
                    db.cachedStatement(sql: "SELECT * FROM events WHERE source = ? AND generation_id = ? ORDER BY seq"),
                    arguments: [key.source, key.generationID]
                ).map(Self.timelineEntry)
                let jobs = try Row.fetchAll(
                    db.cachedStatement(sql: "SELECT * FROM jobs WHERE generation_id = ? AND source = ? ORDER BY created_at, route"),
                    arguments: [key.generationID, key.source]
                ).map(Self.job)
                histories[key] = GenerationHistory(timeline: timeline, jobs: try jobs.map { JobHistory(job: $0, attempts: try Self.attempts($0.id, db)) })
            }
            return histories
        }
    }
}
