import Foundation
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
    ///
    /// A fixed number of round trips whatever the number of jobs: lock the due rows, fetch their
    /// events, mark their old attempts interrupted, write the claimed rows back, open the attempts.
    public func claimJobs(
        owner: String, leaseMilliseconds: Int64, limit: Int, nextStepKind: @escaping NextStepKind
    ) async throws(StoreError) -> [ClaimedJob] {
        try await write("claim jobs") { db, logger in
            // Due and expired jobs in two locking reads that each walk `jobs_state_run_at` in order
            // and stop at `limit`: one read with OR fetched and sorted every due job on each claim.
            let rows = try await db.query("""
                WITH now AS (SELECT \(unescaped: Self.serverNow) AS ms),
                due AS (
                    SELECT jobs.* FROM jobs, now WHERE state = 'pending' AND run_at <= now.ms
                    ORDER BY run_at LIMIT \(limit) FOR UPDATE OF jobs SKIP LOCKED),
                expired AS (
                    SELECT jobs.* FROM jobs, now WHERE state = 'running' AND lease_until < now.ms
                    ORDER BY run_at LIMIT \(limit) FOR UPDATE OF jobs SKIP LOCKED),
                picked AS (SELECT * FROM due UNION ALL SELECT * FROM expired)
                SELECT \(unescaped: Self.jobColumns(table: "jobs")),
                    (SELECT definition FROM route_versions r WHERE r.version = jobs.route_version) AS definition, now.ms AS now
                FROM picked AS jobs, now
                ORDER BY run_at LIMIT \(limit)
                """, logger: logger).collect()
            guard !rows.isEmpty else { return [] }
            var now: Int64 = 0
            var due: [(job: JobRecord, fence: Int64, definition: String?)] = []
            for row in rows {
                let columns = row.makeRandomAccess()
                now = try columns["now"].decode(Int64.self)
                let job = try Self.job(row)
                guard let claimed = JobRules.claim(job, owner: owner, now: now, leaseMilliseconds: leaseMilliseconds) else { continue }
                due.append((claimed, job.fence, try columns["definition"].decode(String?.self)))
            }
            due.sort { ($0.job.runAt, $0.job.id) < ($1.job.runAt, $1.job.id) }
            guard !due.isEmpty else { return [] }
            // Every claimed job's event in one query.
            var events: [EventKey: StoredEvent] = [:]
            for row in try await db.query("""
                SELECT \(unescaped: Self.eventColumns) FROM events
                WHERE (source, event_id) IN (SELECT * FROM unnest(\(due.map(\.job.source))::text[], \(due.map(\.job.eventID))::text[]))
                """, logger: logger).collect() {
                let event = try Self.storedEvent(row)
                events[EventKey(source: event.source, eventID: event.eventID)] = event
            }
            try await db.query("""
                UPDATE attempts SET outcome = 'interrupted', ended_at = \(now), summary = \(JobRules.interruptedByLostLease)
                WHERE job_id = ANY(\(due.map(\.job.id))::text[]) AND outcome = 'running'
                """, logger: logger)
            var saved: [(JobRecord, Int64)] = []
            var claimed: [ClaimedJob] = []
            var starts: [(String, AttemptStart)] = []
            for (job, fence, definition) in due {
                guard let event = events[EventKey(source: job.source, eventID: job.eventID)] else {
                    saved.append((JobRules.eventMissing(job, now: now), fence))
                    continue
                }
                saved.append((job, fence))
                var route = RoutePin(stringLiteral: job.route)
                if let version = job.routeVersion, let definition {
                    route = RoutePin(name: job.route, version: version, definition: definition)
                }
                if let start = JobRules.attemptToOpen(job, stepKind: nextStepKind(job, route)) { starts.append((job.id, start)) }
                claimed.append(ClaimedJob(job: job, event: event, route: route, lease: JobLease(jobID: job.id, owner: owner, fence: job.fence)))
            }
            try await Self.save(saved, db, logger)
            let opened = try await Self.open(starts, at: now, db, logger)
            return claimed.map { claim in
                var claim = claim
                claim.attemptID = opened[claim.job.id]
                return claim
            }
        }
    }

    private struct EventKey: Hashable {
        var source: String
        var eventID: String
    }

    /// Locks the job rows (in id order: the same order everywhere, job rows before attempts) and
    /// reads them with the server's clock.
    private static func lock(
        _ ids: [String], _ db: PostgresConnection, _ logger: Logger
    ) async throws -> (now: Int64, jobs: [String: JobRecord]) {
        let rows = try await db.query("""
            SELECT \(unescaped: jobColumns()), \(unescaped: serverNow) AS now FROM jobs
            WHERE id = ANY(\(Array(Set(ids)).sorted())::text[]) ORDER BY id FOR UPDATE
            """, logger: logger).collect()
        var now: Int64?
        var jobs: [String: JobRecord] = [:]
        for row in rows {
            now = try row.makeRandomAccess()["now"].decode(Int64.self)
            let job = try Self.job(row)
            jobs[job.id] = job
        }
        if let now { return (now, jobs) }
        let clock = try await db.query("SELECT \(unescaped: serverNow)", logger: logger).collect()
        return (try clock[0].decode(Int64.self), [:])
    }

    /// One job row as `jsonb_to_recordset` reads it (absent keys are NULL).
    private struct JobRow: Encodable {
        var id: String
        var readFence: Int64
        var state: String
        var nextStep: Int
        var attempts: Int
        var runAt: Int64
        var leaseOwner: String?
        var leaseUntil: Int64?
        var fence: Int64
        var artifactFile: String?
        var artifactSHA256: String?
        var artifactBytes: Int64?
        var lastError: String?
        var updatedAt: Int64
    }

    /// Writes back the rows rules returned, in one statement, each only if its fence is still the
    /// one read under the row lock (the second of each pair).
    private static func save(_ jobs: [(JobRecord, Int64)], _ db: PostgresConnection, _ logger: Logger) async throws {
        guard !jobs.isEmpty else { return }
        let rows = jobs.map { job, fence in
            JobRow(
                id: job.id, readFence: fence, state: job.state.rawValue, nextStep: job.nextStep, attempts: job.attempts, runAt: job.runAt,
                leaseOwner: job.leaseOwner, leaseUntil: job.leaseUntil, fence: job.fence, artifactFile: job.artifact?.file,
                artifactSHA256: job.artifact?.sha256, artifactBytes: job.artifact?.bytes, lastError: job.lastError, updatedAt: job.updatedAt
            )
        }
        let json = String(decoding: try JSONEncoder().encode(rows), as: UTF8.self)
        try await db.query("""
            UPDATE jobs SET state = u."state", next_step = u."nextStep", attempts = u."attempts", run_at = u."runAt",
                lease_owner = u."leaseOwner", lease_until = u."leaseUntil", fence = u."fence", artifact_file = u."artifactFile",
                artifact_sha256 = u."artifactSHA256", artifact_bytes = u."artifactBytes", last_error = u."lastError",
                updated_at = u."updatedAt"
            FROM jsonb_to_recordset(\(json)::jsonb) AS u("id" text, "readFence" bigint, "state" text, "nextStep" bigint,
                "attempts" bigint, "runAt" bigint, "leaseOwner" text, "leaseUntil" bigint, "fence" bigint, "artifactFile" text,
                "artifactSHA256" text, "artifactBytes" bigint, "lastError" text, "updatedAt" bigint)
            WHERE jobs.id = u."id" AND jobs.fence = u."readFence"
            """, logger: logger)
    }

    /// Opens attempts (outcome `running`) in one statement; their ids by job.
    private static func open(
        _ starts: [(String, AttemptStart)], at now: Int64, _ db: PostgresConnection, _ logger: Logger
    ) async throws -> [String: Int64] {
        guard !starts.isEmpty else { return [:] }
        let rows = try await db.query("""
            INSERT INTO attempts (job_id, step, step_kind, attempt, started_at, outcome)
            SELECT u.job_id, u.step, u.step_kind, u.attempt, \(now), 'running'
            FROM unnest(\(starts.map(\.0))::text[], \(starts.map { Int64($0.1.step) })::bigint[],
                        \(starts.map(\.1.stepKind))::text[], \(starts.map { Int64($0.1.attempt) })::bigint[])
                 WITH ORDINALITY AS u(job_id, step, step_kind, attempt, n)
            ORDER BY u.n
            RETURNING id, job_id
            """, logger: logger).collect()
        var ids: [String: Int64] = [:]
        for row in rows {
            let (id, jobID) = try row.decode((Int64, String).self)
            ids[jobID] = id
        }
        return ids
    }

    /// One statement, not lock-then-write: renewals run every third of a lease and must stay quick.
    /// Its WHERE clause is `JobRules.holds`, its SET `JobRules.renew`.
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
            let (now, jobs) = try await Self.lock([lease.jobID], db, logger)
            guard let job = jobs[lease.jobID], JobRules.holds(job, lease) else { throw JobRules.fenced(lease) }
            let opened = try await Self.open([(lease.jobID, AttemptStart(step: step, stepKind: stepKind, attempt: attempt))], at: now, db, logger)
            guard let id = opened[lease.jobID] else { throw StoreError(.unavailable, "start attempt: no attempt id returned") }
            return id
        }
    }

    public func finishAttempt(_ finish: AttemptFinish) async throws(StoreError) -> FinishedAttempt {
        try await finishes.submit(finish) { [weak self] batch in
            guard let self else { return batch.map { _ in .failure(StoreError(.unavailable, "the store is closed")) } }
            return await self.commitFinishes(batch)
        }.get()
    }

    /// One attempt's end as `jsonb_to_recordset` reads it.
    private struct AttemptEnd: Encodable {
        var id: Int64
        var jobID: String
        var outcome: String
        var summary: String
        var exitCode: Int64?
        var httpStatus: Int64?
        var output: String
    }

    /// The finishes of many jobs in one transaction and a fixed number of round trips: lock the
    /// job rows, end the attempts, write the jobs back (guarded by the fence read under the lock),
    /// open the next attempts. A stale lease fails only its own finish; if the transaction fails,
    /// each finish is tried again in its own.
    private func commitFinishes(_ batch: [AttemptFinish]) async -> [Result<FinishedAttempt, StoreError>] {
        func each(_ finishes: [AttemptFinish]) async throws(StoreError) -> [Result<FinishedAttempt, StoreError>] {
            try await write("finish attempts") { db, logger in
                let (now, locked) = try await Self.lock(finishes.map(\.lease.jobID), db, logger)
                var current = locked
                var results: [Result<FinishedAttempt, StoreError>] = []
                var ends: [AttemptEnd] = []
                var starts: [(Int, String, AttemptStart)] = []
                for finish in finishes {
                    let lease = finish.lease
                    do throws(StoreError) {
                        guard let job = current[lease.jobID] else { throw JobRules.fenced(lease) }
                        let next = try JobRules.finish(job, lease: lease, disposition: finish.disposition, now: now)
                        current[lease.jobID] = next
                        let result = finish.result
                        ends.append(AttemptEnd(
                            id: finish.attemptID, jobID: lease.jobID, outcome: result.outcome.rawValue, summary: result.summary,
                            exitCode: result.exitCode.map(Int64.init), httpStatus: result.httpStatus.map(Int64.init),
                            output: Data(result.output).base64EncodedString()
                        ))
                        if let start = JobRules.attemptToOpen(next, stepKind: finish.nextStepKind) {
                            starts.append((results.count, lease.jobID, start))
                        }
                        results.append(.success(FinishedAttempt(job: next, nextAttemptID: nil)))
                    } catch {
                        results.append(.failure(error))
                    }
                }
                if !ends.isEmpty {
                    let json = String(decoding: try JSONEncoder().encode(ends), as: UTF8.self)
                    try await db.query("""
                        UPDATE attempts SET ended_at = \(now), outcome = u."outcome", summary = u."summary", exit_code = u."exitCode",
                            http_status = u."httpStatus", output = decode(u."output", 'base64')
                        FROM jsonb_to_recordset(\(json)::jsonb) AS u("id" bigint, "jobID" text, "outcome" text, "summary" text,
                            "exitCode" bigint, "httpStatus" bigint, "output" text)
                        WHERE attempts.id = u."id" AND attempts.job_id = u."jobID"
                        """, logger: logger)
                }
                var changed: [(JobRecord, Int64)] = []
                for (id, job) in current {
                    if let read = locked[id], read != job { changed.append((job, read.fence)) }
                }
                try await Self.save(changed, db, logger)
                let opened = try await Self.open(starts.map { ($0.1, $0.2) } as [(String, AttemptStart)], at: now, db, logger)
                for (index, jobID, _) in starts {
                    if case .success(var finished) = results[index] {
                        finished.nextAttemptID = opened[jobID]
                        results[index] = .success(finished)
                    }
                }
                return results
            }
        }
        do {
            return try await each(batch)
        } catch {
            if batch.count == 1 { return [.failure(error)] }
        }
        var results: [Result<FinishedAttempt, StoreError>] = []
        for finish in batch {
            do throws(StoreError) {
                results.append(contentsOf: try await each([finish]))
            } catch {
                results.append(.failure(error))
            }
        }
        return results
    }

    public func releaseJob(_ lease: JobLease) async throws(StoreError) {
        try await write("release job") { db, logger in
            // Only this claim's job: a lease another instance took over is not ours to touch.
            let (now, jobs) = try await Self.lock([lease.jobID], db, logger)
            guard let job = jobs[lease.jobID], let released = JobRules.release(job, lease: lease, now: now) else { return }
            try await Self.save([(released, job.fence)], db, logger)
            try await db.query("""
                UPDATE attempts SET outcome = 'interrupted', ended_at = \(now), summary = \(JobRules.interruptedByShutdown)
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

    public func job(id: String) async throws(StoreError) -> JobRecord? {
        try await read("find a job") { db, logger in
            try await db.query("SELECT \(unescaped: Self.jobColumns()) FROM jobs WHERE id = \(id)", logger: logger).collect().first.map(Self.job)
        }
    }

    public func events(source: String, generationID: String) async throws(StoreError) -> [StoredEvent] {
        try await read("read a generation's events") { db, logger in
            try await db.query("""
                SELECT \(unescaped: Self.eventColumns) FROM events WHERE source = \(source) AND generation_id = \(generationID) ORDER BY seq
                """, logger: logger).collect().map(Self.storedEvent)
        }
    }

    public func eventGenerations(eventID: String) async throws(StoreError) -> [GenerationKey] {
        try await read("find an event") { db, logger in
            // The unique index is (source, event_id) and PostgreSQL has no skip scan: walk the few
            // distinct sources through the index (a recursive CTE), then look the id up under each,
            // instead of reading every event.
            try await db.query("""
                WITH RECURSIVE sources AS (
                    (SELECT source FROM events ORDER BY source LIMIT 1)
                    UNION ALL
                    SELECT (SELECT e.source FROM events e WHERE e.source > sources.source ORDER BY e.source LIMIT 1)
                    FROM sources WHERE sources.source IS NOT NULL
                )
                SELECT e.source, e.generation_id FROM sources JOIN events e ON e.source = sources.source AND e.event_id = \(eventID)
                WHERE sources.source IS NOT NULL ORDER BY e.source COLLATE "C"
                """, logger: logger).collect().map { row in
                let (source, generationID) = try row.decode((String, String).self)
                return GenerationKey(source: source, generationID: generationID)
            }
        }
    }

    public func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord] {
        try await read("list attempts") { db, logger in
            try await db.query("""
                SELECT id, job_id, step, step_kind, attempt, started_at, ended_at, outcome, summary, exit_code, http_status, output
                FROM attempts WHERE job_id = \(jobID) ORDER BY id
                """, logger: logger).collect().map(Self.attempt)
        }
    }

    static let attemptColumns = "id, job_id, step, step_kind, attempt, started_at, ended_at, outcome, summary, exit_code, http_status, output"

    static func attempt(_ row: PostgresRow) throws -> AttemptRecord {
        let (id, jobID, step, stepKind, attempt, startedAt, endedAt, outcome, summary, exitCode, httpStatus, output) =
            try row.decode((Int64, String, Int, String, Int, Int64, Int64?, String, String?, Int64?, Int?, ByteBuffer?).self)
        return AttemptRecord(
            id: id, jobID: jobID, step: step, stepKind: stepKind, attempt: attempt, startedAt: startedAt, endedAt: endedAt,
            outcome: AttemptOutcome(rawValue: outcome) ?? .failed, summary: summary,
            exitCode: exitCode.map { Int32(truncatingIfNeeded: $0) }, httpStatus: httpStatus,
            output: output.map { Array($0.readableBytesView) } ?? []
        )
    }

    public func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord {
        try await write("retry job") { db, logger in
            let (now, jobs) = try await Self.lock([jobID], db, logger)
            guard let job = jobs[jobID] else { throw StoreError(.notFound, "no job \(jobID)") }
            let retried = try JobRules.retry(job, now: now, at: at)
            try await Self.save([(retried, job.fence)], db, logger)
            return retried
        }
    }

    public func retryDead(route: String?, at: Int64) async throws(StoreError) -> Int {
        if Self.namesNoRoute(route) { return 0 }
        return try await write("retry dead jobs") { db, logger in
            let rows = try await db.query("""
                SELECT \(unescaped: Self.jobColumns()), \(unescaped: Self.serverNow) AS now FROM jobs
                WHERE state = 'dead' AND (\(route)::text IS NULL OR route = \(route)) ORDER BY id FOR UPDATE
                """, logger: logger).collect()
            var retried: [(JobRecord, Int64)] = []
            for row in rows {
                let now = try row.makeRandomAccess()["now"].decode(Int64.self)
                let job = try Self.job(row)
                if let next = JobRules.retryDead(job, route: route, now: now, at: at) { retried.append((next, job.fence)) }
            }
            try await Self.save(retried, db, logger)
            return retried.count
        }
    }

    /// Does nothing and returns 0. A shared store cannot tell a job whose instance died from one
    /// another live instance is running right now, so "everything running was interrupted by my
    /// last stop" is false here; a dead instance's jobs come back when their lease expires, through
    /// `claimJobs`, which marks their attempts interrupted then.
    public func requeueRunning(at: Int64) async throws(StoreError) -> Int { 0 }

    public func jobCounts(in states: Set<JobState>) async throws(StoreError) -> [JobState: Int] {
        let names = states.map(\.rawValue).sorted()
        return try await read("count jobs") { db, logger in
            var counts = Dictionary(uniqueKeysWithValues: states.map { ($0, 0) })
            for try await (state, count) in try await db.query(
                "SELECT state, count(*) FROM jobs WHERE state = ANY(\(names)) GROUP BY state", logger: logger
            ).decode((String, Int).self) {
                if let state = JobState(rawValue: state) { counts[state] = count }
            }
            return counts
        }
    }

    public func waitingJobCounts() async throws(StoreError) -> WaitingJobs {
        try await read("count waiting jobs") { db, logger in
            for try await (pending, dead) in try await db.query("""
                SELECT (SELECT count(*) FROM jobs WHERE state = 'pending'), (SELECT count(*) FROM jobs WHERE state = 'dead')
                """, logger: logger).decode((Int, Int).self) {
                return WaitingJobs(pending: pending, dead: dead)
            }
            return WaitingJobs(pending: 0, dead: 0)
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

extension PostgresStore: HistoryStore {
    /// Three queries for the whole page (events, jobs, attempts), each over arrays of keys.
    public func histories(_ keys: [GenerationKey]) async throws(StoreError) -> [GenerationKey: GenerationHistory] {
        var distinct: [GenerationKey] = []
        for key in keys where !distinct.contains(key) { distinct.append(key) }
        guard !distinct.isEmpty else { return [:] }
        let unique = distinct
        let sources = unique.map(\.source), ids = unique.map(\.generationID)
        return try await read("read histories") { db, logger in
            var timelines: [GenerationKey: [TimelineEntry]] = [:]
            for row in try await db.query("""
                SELECT \(unescaped: Self.eventColumns) FROM events
                WHERE (source, generation_id) IN (SELECT * FROM unnest(\(sources)::text[], \(ids)::text[])) ORDER BY seq
                """, logger: logger).collect() {
                let event = try Self.storedEvent(row)
                timelines[GenerationKey(source: event.source, generationID: event.generationID), default: []].append(try Self.timelineEntry(row))
            }
            let jobs = try await db.query("""
                SELECT \(unescaped: Self.jobColumns()) FROM jobs
                WHERE (generation_id, source) IN (SELECT * FROM unnest(\(ids)::text[], \(sources)::text[])) ORDER BY created_at, route
                """, logger: logger).collect().map(Self.job)
            var attempts: [String: [AttemptRecord]] = [:]
            if !jobs.isEmpty {
                for row in try await db.query("""
                    SELECT \(unescaped: Self.attemptColumns) FROM attempts WHERE job_id = ANY(\(jobs.map(\.id))) ORDER BY id
                    """, logger: logger).collect() {
                    let attempt = try Self.attempt(row)
                    attempts[attempt.jobID, default: []].append(attempt)
                }
            }
            var histories: [GenerationKey: GenerationHistory] = [:]
            for key in unique { histories[key] = GenerationHistory(timeline: timelines[key] ?? [], jobs: []) }
            for job in jobs {
                histories[GenerationKey(source: job.source, generationID: job.generationID)]?.jobs.append(JobHistory(job: job, attempts: attempts[job.id] ?? []))
            }
            return histories
        }
    }
}
