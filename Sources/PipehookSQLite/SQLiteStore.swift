import Foundation
import GRDB
import PipehookFormats
import PipehookLifecycle
import PipehookStore
import Synchronization

/// The SQLite store: one WAL database file, writes grouped into shared durable commits.
///
/// `synchronous = FULL` makes every commit fsync the WAL, so an acknowledged delivery survives
/// `kill -9` and power loss; `GroupCommit` keeps that affordable under load.
public final class SQLiteStore: WebhookStore {
    let pool: DatabasePool
    private let group: GroupCommit<IncomingDelivery, IntakeOutcome>
    private let commits = Counter()
    /// Attempt finishes of concurrent jobs share transactions (SQLiteStore+Jobs.swift).
    let finishes = LazyGroupCommit<AttemptFinish, FinishedAttempt>()

    /// Durable ingest transactions committed so far (each covers a whole group).
    public var commitCount: Int { commits.value.load(ordering: .relaxed) }

    private final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    public struct Options: Sendable {
        /// How long a write waits for another process holding the lock before failing (503).
        public var busyTimeout: TimeInterval = 5
        public var readOnly = false
        public var maxBatch = 512
        /// The store's clock (Unix ms): leases are set and expire by it. One host reads the file, so
        /// its clock is the store's; tests inject their own.
        public var clock: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
        /// Leave checkpoints to `runCheckpoints` (the daemon); short-lived users keep SQLite's own.
        public var checkpointInBackground = false
        public init() {}
    }

    /// Opens (creating if needed) the database and applies migrations.
    private let path: String
    private let options: Options
    let clock: @Sendable () -> Int64

    public init(path: String, options: Options = Options()) throws(StoreError) {
        self.path = path
        self.options = options
        self.clock = options.clock
        var configuration = Configuration()
        configuration.busyMode = .timeout(options.busyTimeout)
        configuration.readonly = options.readOnly
        configuration.label = "pipehook"
        if !options.readOnly {
            configuration.prepareDatabase { db in
                // Small pages: a commit rewrites every page it touched, and most pages a batch
                // touches get one row, so 1 KiB pages write a quarter of the bytes 4 KiB do.
                // Only takes effect when the file is created.
                try db.execute(sql: "PRAGMA page_size = 1024")
                try db.execute(sql: "PRAGMA synchronous = FULL")
                // Checkpoints run from `runCheckpoints` on their own connection, so a commit
                // never stalls behind copying the WAL into the database (p99 latency).
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(options.checkpointInBackground ? 0 : 1000)")
                try db.execute(sql: "PRAGMA journal_size_limit = 67108864")
            }
        }
        do {
            if !options.readOnly {
                let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750]
                )
            } else if !FileManager.default.fileExists(atPath: path) {
                throw StoreError(.notFound, "no database at \(path) (has `pipehook serve` run with this configuration?)")
            }
            pool = try DatabasePool(path: path, configuration: configuration)
            let applied = try pool.read { db in
                try db.tableExists("grdb_migrations") ? try Schema.migrator.appliedIdentifiers(db) : []
            }
            try SchemaRules.refuseNewer(applied: applied, known: Schema.migrator.migrations, store: "the SQLite store at \(path)")
            if !options.readOnly {
                try Schema.migrator.migrate(pool)
                Self.restrictPermissions(path)
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.unavailable, "cannot open SQLite database at \(path): \(Self.describe(error))")
        }
        let pool = self.pool
        let commits = self.commits
        let clock = options.clock
        group = GroupCommit(maxBatch: options.maxBatch) { batch in
            // Unstructured on purpose: GRDB interrupts a write whose task is cancelled, and the
            // leader's request being cancelled must not abort everyone's commit.
            let results = await Task { await Self.commit(batch, pool: pool, clock: clock) }.value
            commits.value.add(1, ordering: .relaxed)
            return results
        }
    }

    /// One transaction for the whole batch, on GRDB's writer thread so that no thread of the
    /// cooperative pool ever blocks on the disk. If the batch fails, each delivery is retried in
    /// its own transaction so that one bad row cannot fail the others.
    private static func commit(
        _ batch: [IncomingDelivery], pool: DatabasePool, clock: @escaping @Sendable () -> Int64
    ) async -> [Result<IntakeOutcome, StoreError>] {
        do {
            return try await pool.write { db in try ingest(batch, db, now: clock()) }.map { .success($0) }
        } catch {
            // A held lock, a full disk or a read-only file fails every delivery alike: retrying
            // them one by one would only make each wait again.
            if batch.count == 1 || isEnvironmental(error) {
                return Array(repeating: .failure(StoreError(.unavailable, "SQLite commit failed: \(describe(error))")), count: batch.count)
            }
        }
        var results: [Result<IntakeOutcome, StoreError>] = []
        for delivery in batch {
            do {
                results.append(.success(try await pool.write { db in try ingest([delivery], db, now: clock())[0] }))
            } catch {
                results.append(.failure(StoreError(.unavailable, "SQLite commit failed: \(describe(error))")))
            }
        }
        return results
    }

    public func ingest(_ delivery: IncomingDelivery) async throws(StoreError) -> IntakeOutcome {
        try await group.submit(delivery).get()
    }

    /// Runs inside the batch transaction: reads the facts `IngestRules` needs (the write lock is
    /// held, so nothing changes under them), then writes its plan.
    static func ingest(_ batch: [IncomingDelivery], _ db: Database, now: Int64) throws -> [IntakeOutcome] {
        let plan = IngestRules.plan(batch, facts: try facts(IngestRules.needs(batch), db, now: now))
        try persist(plan, db)
        return plan.outcomes
    }

    static func facts(_ needs: IngestRules.Needs, _ db: Database, now: Int64) throws -> IngestFacts {
        var facts = IngestFacts(now: now)
        let delivery = try db.cachedStatement(sql: "SELECT 1 FROM deliveries WHERE source = ? AND delivery_id = ?")
        for key in needs.deliveries where try Bool.fetchOne(delivery, arguments: [key.source, key.id]) != nil {
            facts.seenDeliveries.insert(key)
        }
        let event = try db.cachedStatement(sql: "SELECT 1 FROM events WHERE source = ? AND event_id = ?")
        // A delivery id seen before is a duplicate whatever its timeline holds: no probe for it.
        for key in needs.events where !facts.seenDeliveries.contains(key) {
            if try Bool.fetchOne(event, arguments: [key.source, key.id]) != nil {
                facts.storedEvents.insert(key)
            }
        }
        let generation = try db.cachedStatement(sql: "SELECT status FROM generations WHERE generation_id = ? AND source = ?")
        for key in needs.generations {
            if let text = try String.fetchOne(generation, arguments: [key.generationID, key.source]) {
                facts.statuses[key] = try status(text, column: "generations.status")
            }
        }
        let jobs = try db.cachedStatement(sql: "SELECT route FROM jobs WHERE generation_id = ? AND source = ? AND replay = 0")
        for key in needs.jobRoutes where facts.statuses[key] != nil {
            let routes = try String.fetchAll(jobs, arguments: [key.generationID, key.source])
            if !routes.isEmpty { facts.jobRoutes[key] = Set(routes) }
        }
        return facts
    }

    /// Writes exactly what the rules decided.
    static func persist(_ plan: IngestPlan, _ db: Database) throws {
        for seq in plan.reprocessed {
            try db.cachedStatement(sql: "UPDATE unrecognized SET reprocessed_at = ? WHERE seq = ?").execute(arguments: [seq.at, seq.seq])
        }
        for row in plan.deliveries {
            try db.cachedStatement(sql: "INSERT INTO deliveries (source, delivery_id, received_at) VALUES (?, ?, ?)")
                .execute(arguments: [row.source, row.deliveryID, row.receivedAt])
        }
        for row in plan.unrecognized {
            // A delivery id past the dedup window sent again: its raw copy is already kept.
            try db.cachedStatement(sql: """
                INSERT INTO unrecognized (source, delivery_id, received_at, signed_at, reason, raw)
                VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                """).execute(arguments: [row.source, row.deliveryID, row.receivedAt, row.signedAt, row.reason, Data(row.raw)])
        }
        for row in plan.events {
            try db.cachedStatement(sql: """
                INSERT INTO events (event_id, source, origin, event_type, generation_id, status, previous_status, transition,
                                    output_url, error_message, received_at, signed_at, raw)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [
                    row.eventID, row.source, row.origin.rawValue, row.eventType, row.generationID, row.status.rawValue,
                    row.previousStatus?.rawValue, row.transition.rawValue, row.outputURL, row.errorMessage, row.receivedAt,
                    row.signedAt, Data(row.raw),
                ])
        }
        for row in plan.generations {
            try db.cachedStatement(sql: """
                INSERT INTO generations (source, generation_id, status, output_url, error_message, created_at, updated_at, last_event_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (generation_id, source) DO UPDATE SET
                    status = excluded.status, output_url = excluded.output_url, error_message = excluded.error_message,
                    updated_at = excluded.updated_at, last_event_id = excluded.last_event_id
                """).execute(arguments: [
                    row.source, row.generationID, row.status.rawValue, row.outputURL, row.errorMessage, row.createdAt,
                    row.updatedAt, row.lastEventID,
                ])
        }
        for row in plan.finishedPolling {
            // An index probe that finds nothing when the id was never polled.
            try db.cachedStatement(sql: """
                UPDATE polls SET state = 'done', updated_at = ? WHERE generation_id = ? AND source = ? AND state = 'active'
                """).execute(arguments: [row.at, row.key.generationID, row.key.source])
        }
        for route in plan.routeVersions {
            try db.cachedStatement(sql: """
                INSERT INTO route_versions (version, name, definition, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING
                """).execute(arguments: [route.version, route.name, route.definition, plan.jobs.first?.runAt ?? 0])
        }
        for job in plan.jobs {
            try db.cachedStatement(sql: """
                INSERT INTO jobs (id, source, generation_id, route, route_version, event_id, state, run_at, created_at, updated_at, replay)
                VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, 0)
                """).execute(arguments: [
                    job.id, job.source, job.generationID, job.route.name, job.route.isPinned ? job.route.version : nil, job.eventID,
                    job.runAt, job.createdAt, job.createdAt,
                ])
        }
    }

    // MARK: reads

    public func generations(withID id: String) async throws(StoreError) -> [GenerationDetail] {
        try await read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM generations WHERE generation_id = ? ORDER BY source", arguments: [id])
            return try rows.map { row in
                let generation = try Self.generation(row)
                let events = try Row.fetchAll(db, sql: """
                    SELECT * FROM events WHERE source = ? AND generation_id = ? ORDER BY seq
                    """, arguments: [generation.source, id])
                return GenerationDetail(generation: generation, timeline: try events.map(Self.timelineEntry))
            }
        }
    }

    public func events(after seq: Int64, limit: Int) async throws(StoreError) -> [StreamedEvent] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT seq, source, generation_id, event_id, origin, status, previous_status, transition, output_url, error_message,
                       received_at, signed_at
                FROM events WHERE seq > ? ORDER BY seq LIMIT ?
                """), arguments: [seq, limit]).map { row in
                StreamedEvent(seq: row["seq"], source: row["source"], generationID: row["generation_id"], entry: try Self.timelineEntry(row))
            }
        }
    }

    public func lastEventSeq() async throws(StoreError) -> Int64 {
        try await read { db in try Int64.fetchOne(db, sql: "SELECT coalesce(max(seq), 0) FROM events") ?? 0 }
    }

    /// `GenerationQuery`'s order and filters in SQL (BINARY collation: byte order); only the
    /// filters asked for are in the statement, so each can use its index.
    public func generations(_ query: GenerationQuery) async throws(StoreError) -> [GenerationRecord] {
        if query.matchesNothing { return [] }
        var clauses: [String] = []
        var arguments = StatementArguments()
        if let status = query.status {
            clauses.append("status = ?")
            arguments += [status.rawValue]
        }
        if let source = query.source {
            clauses.append("source = ?")
            arguments += [source]
        }
        if let after = query.after {
            // The first term is implied by the second, but with bound values SQLite only turns it,
            // not the OR, into a range of the index: without it, a deep page scans from the top.
            clauses.append("updated_at <= ? AND (updated_at < ? OR (updated_at = ? AND (generation_id > ? OR (generation_id = ? AND source > ?))))")
            arguments += [after.updatedAt, after.updatedAt, after.updatedAt, after.generationID, after.generationID, after.source]
        }
        // The job filters. Jobs waiting (pending, running) or dead are few: read them by the
        // state index (a row-value IN, which SQLite drives from that index) and look their
        // generations up. Any other job filter is checked per generation, newest first, by the
        // jobs_generation index, so the scan stops at one page.
        var jobClauses: [String] = []
        var jobArguments = StatementArguments()
        if let state = query.jobState {
            jobClauses.append("j.state = ?")
            jobArguments += [state.rawValue]
        }
        if let route = query.route {
            jobClauses.append("j.route = ?")
            jobArguments += [route]
        }
        if let state = query.jobState, state != .succeeded {
            clauses.append("(generation_id, source) IN (SELECT j.generation_id, j.source FROM jobs j WHERE " + jobClauses.joined(separator: " AND ") + ")")
            arguments += jobArguments
        } else if query.filtersJobs {
            clauses.append("EXISTS (SELECT 1 FROM jobs j WHERE j.generation_id = generations.generation_id AND j.source = generations.source AND "
                + jobClauses.joined(separator: " AND ") + ")")
            arguments += jobArguments
        }
        arguments += [query.limit]
        let sql = "SELECT * FROM generations" + (clauses.isEmpty ? "" : " WHERE " + clauses.joined(separator: " AND "))
            + " ORDER BY updated_at DESC, generation_id, source LIMIT ?"
        let bound = arguments
        return try await read { db in try Row.fetchAll(db, sql: sql, arguments: bound).map(Self.generation) }
    }

    public func activity(_ window: ActivityWindow, parts: Activity.Parts) async throws(StoreError) -> Activity {
        let since = window.since, until = window.until, width = window.bucketMilliseconds
        return try await read { db in
            var activity = Activity(window: window)
            if parts.contains(.events) {
                // Events by their seq range (no index on received_at: one write less per delivery).
                let range = try Row.fetchOne(db, sql: "SELECT min(seq) AS low, max(seq) AS high FROM events")
                let first: Int64 = range?["low"] ?? 1, last: Int64 = range?["high"] ?? 0
                func probe(_ seq: Int64) throws -> (key: Int64, time: Int64)? {
                    try Row.fetchOne(db.cachedStatement(sql: "SELECT seq, received_at FROM events WHERE seq >= ? ORDER BY seq LIMIT 1"), arguments: [seq])
                        .map { ($0["seq"], $0["received_at"]) }
                }
                let low = try TimeOrderedRows.firstKey(atOrAfter: since - TimeOrderedRows.slack, from: first, to: last, probe: probe)
                let high = try TimeOrderedRows.firstKey(atOrAfter: until + TimeOrderedRows.slack, from: first, to: last, probe: probe)
                for row in try Row.fetchAll(db, sql: """
                    SELECT (received_at - ?) / ? AS bucket, transition, status, count(*) AS n FROM events
                    WHERE seq >= ? AND seq < ? AND received_at >= ? AND received_at < ? GROUP BY bucket, transition, status
                    """, arguments: [since, width, low, high, since, until]) {
                    guard let transition = Transition(rawValue: row["transition"]), let status = GenerationStatus(rawValue: row["status"]) else { continue }
                    activity.events.append(Activity.EventCount(bucket: row["bucket"], transition: transition, status: status, count: row["n"]))
                }
                for row in try Row.fetchAll(db, sql: """
                    SELECT (received_at - ?) / ? AS bucket, count(*) AS n FROM unrecognized
                    WHERE received_at >= ? AND received_at < ? GROUP BY bucket
                    """, arguments: [since, width, since, until]) {
                    let bucket: Int = row["bucket"]
                    if activity.unrecognized.indices.contains(bucket) { activity.unrecognized[bucket] = row["n"] }
                }
            }
            guard parts.contains(.attempts) else { return activity.normalized() }
            for row in try Row.fetchAll(db, sql: """
                SELECT (started_at - ?) / ? AS bucket, outcome, count(*) AS n FROM attempts
                WHERE started_at >= ? AND started_at < ? AND outcome <> 'running' GROUP BY bucket, outcome
                """, arguments: [since, width, since, until]) {
                guard let outcome = AttemptOutcome(rawValue: row["outcome"]) else { continue }
                activity.attempts.append(Activity.AttemptCount(bucket: row["bucket"], outcome: outcome, count: row["n"]))
            }
            activity.attemptDurations = try Int64.fetchAll(db, sql: """
                SELECT ended_at - started_at FROM attempts
                WHERE started_at >= ? AND started_at < ? AND outcome <> 'running' AND ended_at IS NOT NULL
                ORDER BY started_at DESC, id DESC LIMIT ?
                """, arguments: [since, until, Activity.durationLimit])
            return activity.normalized()
        }
    }

    public func counts() async throws(StoreError) -> StoreCounts {
        try await read { db in
            func count(_ table: String) throws -> Int { try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table)") ?? 0 }
            return StoreCounts(
                deliveries: try count("deliveries"), events: try count("events"),
                generations: try count("generations"), unrecognized: try count("unrecognized")
            )
        }
    }

    public func prune(
        nowMilliseconds: Int64, dedupWindowSeconds: Int64, retentionSeconds: Int64, includingDead: Bool
    ) async throws(StoreError) -> PruneReport {
        let rules = RetentionRules(now: nowMilliseconds, dedupWindowSeconds: dedupWindowSeconds, retentionSeconds: retentionSeconds, includingDead: includingDead)
        let dedupCutoff = rules.dedupCutoff, retentionCutoff = rules.retentionCutoff
        let terminal = RetentionRules.terminalStatusesSQL
        let finishedJobs = rules.finishedJobStatesSQL
        let limit = RetentionRules.batchSize
        // Small transactions: each holds the write lock for at most `limit` rows of each kind, so
        // deliveries keep committing between them however much a first prune of a big store has to do.
        var total = PruneReport()
        while true {
            let (report, more): (PruneReport, Bool)
            do {
                (report, more) = try await pool.write { db in
                    var report = PruneReport()
                    try db.execute(sql: """
                        DELETE FROM deliveries WHERE (source, delivery_id) IN (
                            SELECT source, delivery_id FROM deliveries WHERE received_at < ? LIMIT ?)
                        """, arguments: [dedupCutoff, limit])
                    report.deliveries = db.changesCount
                    // Finished jobs past retention go with their attempts; dead ones only on request.
                    let jobs = try String.fetchAll(db, sql: """
                        SELECT id FROM jobs WHERE state IN \(finishedJobs) AND updated_at < ? LIMIT ?
                        """, arguments: [retentionCutoff, limit])
                    for id in jobs {
                        try db.cachedStatement(sql: "DELETE FROM attempts WHERE job_id = ?").execute(arguments: [id])
                        try db.cachedStatement(sql: "DELETE FROM jobs WHERE id = ?").execute(arguments: [id])
                    }
                    report.jobs = jobs.count
                    // A finished generation idle past retention goes with its whole timeline and
                    // polling, unless a job still needs its events (pending, running, or dead and
                    // kept for a retry).
                    let stale = try Row.fetchAll(db, sql: """
                        SELECT g.source, g.generation_id FROM generations g
                        WHERE g.status IN (\(terminal)) AND g.updated_at < ?
                          AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.generation_id = g.generation_id AND j.source = g.source)
                        LIMIT ?
                        """, arguments: [retentionCutoff, limit])
                    for row in stale {
                        let key: StatementArguments = [row["source"], row["generation_id"]]
                        try db.cachedStatement(sql: "DELETE FROM polls WHERE source = ? AND generation_id = ?").execute(arguments: key)
                        try db.cachedStatement(sql: "DELETE FROM events WHERE source = ? AND generation_id = ?").execute(arguments: key)
                        report.events += db.changesCount
                        try db.cachedStatement(sql: "DELETE FROM generations WHERE source = ? AND generation_id = ?").execute(arguments: key)
                    }
                    report.generations = stale.count
                    // Ids the API never knew (404), idle past retention.
                    try db.execute(sql: """
                        DELETE FROM polls WHERE (generation_id, source) IN (
                            SELECT p.generation_id, p.source FROM polls p WHERE p.state = 'stopped' AND p.updated_at < ? AND NOT EXISTS (
                                SELECT 1 FROM generations g WHERE g.generation_id = p.generation_id AND g.source = p.source)
                            LIMIT ?)
                        """, arguments: [retentionCutoff, limit])
                    let polls = db.changesCount
                    try db.execute(sql: """
                        DELETE FROM unrecognized WHERE seq IN (SELECT seq FROM unrecognized WHERE received_at < ? LIMIT ?)
                        """, arguments: [retentionCutoff, limit])
                    report.unrecognized = db.changesCount
                    try db.execute(sql: """
                        DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys WHERE created_at < ? LIMIT ?)
                        """, arguments: [retentionCutoff, limit])
                    let keys = db.changesCount
                    let full = [report.deliveries, report.jobs, report.generations, polls, report.unrecognized, keys].contains(limit)
                    return (report, full)
                }
            } catch {
                throw StoreError(.unavailable, "prune failed: \(Self.describe(error))")
            }
            total.add(report)
            if !more { return total }
        }
    }

    /// Free space below which the store is not ready: a commit appends WAL frames, and a nearly
    /// full disk fails them (SQLITE_FULL) even while the lock is free.
    public static let minimumFreeBytes: Int64 = 1 << 20

    public func isWritable() async -> Bool {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        // A file system remounted read-only still lets an open WAL database take its lock (the
        // lock lives in shared memory); only the commit fails. So the mount is asked directly.
        var info = statvfs()
        if statvfs(directory, &info) == 0 {
            if info.f_flag & UInt(ST_RDONLY) != 0 { return false }
            if Int64(info.f_bavail) * Int64(info.f_frsize) < Self.minimumFreeBytes { return false }
        }
        do {
            try await pool.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                try db.execute(sql: "ROLLBACK")
            }
            return true
        } catch {
            return false
        }
    }

    /// Copies the WAL into the database from a separate connection (PASSIVE: never blocks the
    /// writer) until cancelled. Run by the daemon when `checkpointInBackground` is set.
    public func runCheckpoints(every interval: Duration = .milliseconds(250)) async {
        var configuration = Configuration()
        configuration.busyMode = .timeout(options.busyTimeout)
        configuration.label = "pipehook-checkpoint"
        guard let connection = try? DatabaseQueue(path: path, configuration: configuration) else { return }
        let walPath = path + "-wal"
        while !Task.isCancelled {
            // PASSIVE copies without blocking anyone. Under continuous writes it never catches
            // up completely, so the WAL could not restart and would grow; past 32 MiB a RESTART
            // (only the last few frames are left to copy by then) lets it wrap around.
            let walBytes = (try? FileManager.default.attributesOfItem(atPath: walPath)[.size] as? Int) ?? 0
            let mode: Database.CheckpointMode = walBytes > 32 << 20 ? .restart : .passive
            _ = try? await connection.writeWithoutTransaction { db in try db.checkpoint(.passive) }
            if mode == .restart {
                _ = try? await connection.writeWithoutTransaction { db in try db.checkpoint(.restart) }
            }
            try? await Task.sleep(for: interval)
        }
        _ = try? await connection.writeWithoutTransaction { db in try db.checkpoint(.passive) }
        try? connection.close()
    }

    public func unrecognized(after: Int64, limit: Int) async throws(StoreError) -> [UnrecognizedDelivery] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM unrecognized WHERE reprocessed_at IS NULL AND seq > ? ORDER BY seq LIMIT ?
                """, arguments: [after, limit]).map { row in
                let raw: Data = row["raw"]
                return UnrecognizedDelivery(
                    seq: row["seq"], source: row["source"], deliveryID: row["delivery_id"], receivedAt: row["received_at"],
                    signedAt: row["signed_at"], reason: row["reason"], raw: Array(raw)
                )
            }
        }
    }

    public func replay(eventID: String, source: String?, routes: (GenerationStatus) -> [RoutePin], at: Int64) async throws(StoreError) -> [JobRecord] {
        let events: [StoredEvent] = try await read { db in
            let rows = try source.map {
                try Row.fetchAll(db, sql: "SELECT * FROM events WHERE event_id = ? AND source = ?", arguments: [eventID, $0])
            } ?? Row.fetchAll(db, sql: "SELECT * FROM events WHERE event_id = ?", arguments: [eventID])
            return try rows.map(Self.storedEvent)
        }
        let event = try ReplayRules.event(events, eventID: eventID)
        let names = try ReplayRules.routes(for: event, routes)
        return try await write("replay") { db in
            try names.map { route in
                let id = try Self.insertJob(route: route, source: event.source, generationID: event.generationID,
                                            eventID: event.eventID, at: at, replay: true, db)
                return try Self.job(try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id])!)
            }
        }
    }

    /// One new pending job, due at `at`, pinned to `route`'s version (recorded once per version).
    /// Outbox jobs are one per (generation, route): a second insert is a no-op.
    @discardableResult
    private static func insertJob(
        route: RoutePin, source: String, generationID: String, eventID: String, at: Int64, replay: Bool, _ db: Database
    ) throws -> String {
        if route.isPinned {
            try db.cachedStatement(sql: """
                INSERT INTO route_versions (version, name, definition, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING
                """).execute(arguments: [route.version, route.name, route.definition, at])
        }
        let id = JobID.make()
        try db.cachedStatement(sql: """
            INSERT INTO jobs (id, source, generation_id, route, route_version, event_id, state, run_at, created_at, updated_at, replay)
            VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT DO NOTHING
            """).execute(arguments: [
                id, source, generationID, route.name, route.isPinned ? route.version : nil, eventID, at, at, at, replay,
            ])
        return id
    }

    // MARK: helpers

    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(StoreError) -> T {
        do {
            return try await pool.read(body)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.unavailable, "SQLite read failed: \(Self.describe(error))")
        }
    }

    static func status(_ text: String?, column: String) throws -> GenerationStatus {
        guard let text, let status = GenerationStatus(rawValue: text) else {
            throw StoreError(.invalid, "unknown status '\(text ?? "null")' in column \(column)")
        }
        return status
    }

    private static func generation(_ row: Row) throws -> GenerationRecord {
        GenerationRecord(
            source: row["source"], generationID: row["generation_id"],
            status: try status(row["status"], column: "generations.status"),
            outputURL: row["output_url"], errorMessage: row["error_message"],
            createdAt: row["created_at"], updatedAt: row["updated_at"]
        )
    }

    static func timelineEntry(_ row: Row) throws -> TimelineEntry {
        let previous: String? = row["previous_status"]
        let transitionText: String = row["transition"]
        let originText: String = row["origin"]
        return TimelineEntry(
            eventID: row["event_id"],
            origin: EventOrigin(rawValue: originText) ?? .webhook,
            status: try status(row["status"], column: "events.status"),
            previousStatus: try previous.map { try status($0, column: "events.previous_status") },
            transition: Transition(rawValue: transitionText) ?? .stale,
            outputURL: row["output_url"], errorMessage: row["error_message"],
            receivedAt: row["received_at"], signedAt: row["signed_at"]
        )
    }

    /// The database, its WAL and shared-memory file readable by owner and group only (a store made
    /// by an older version or under a loose umask is tightened when opened for writing).
    static func restrictPermissions(_ path: String) {
        for file in [path, path + "-wal", path + "-shm"] {
            var info = stat()
            guard stat(file, &info) == 0, info.st_mode & 0o137 != 0 else { continue }
            chmod(file, info.st_mode & 0o640)
        }
    }

    /// Failures that are about the database as a whole rather than one batch's rows.
    static func isEnvironmental(_ error: any Error) -> Bool {
        guard let error = error as? DatabaseError else { return false }
        return [.SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_FULL, .SQLITE_READONLY, .SQLITE_IOERR, .SQLITE_CANTOPEN, .SQLITE_PERM]
            .contains(error.resultCode)
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError {
            return "\(error.resultCode)\(error.message.map { ": \($0)" } ?? "")"
        }
        return String(describing: error)
    }
}
