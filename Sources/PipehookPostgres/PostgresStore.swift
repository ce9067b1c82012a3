import Foundation
import Logging
import PipehookFormats
import PipehookLifecycle
import PipehookStore
import PostgresNIO
import Synchronization

/// The PostgreSQL store: several pipehook instances share one database with the guarantees of
/// SPEC §3 (SPEC §9).
///
/// - A delivery is accepted once across instances: its id is inserted into `deliveries` with
///   `ON CONFLICT DO NOTHING` in the same transaction as everything it does, so a second
///   instance receiving it waits for the first one's commit and then finds it.
/// - Events of one generation are serialised across instances by a transaction-scoped advisory
///   lock taken before its status is read, so exactly one of two racing events applies a
///   transition, and only that one inserts the route jobs (which a partial unique index backs).
/// - Jobs are claimed with `FOR UPDATE SKIP LOCKED` and leased; a lease that expires (its
///   instance died) is reclaimed by `claimJobs`, never requeued wholesale at start.
///
/// Each method is one transaction. A 200 must mean durable, so every connection starts with
/// `synchronous_commit=on` as a startup parameter: it overrides an `ALTER ROLE/DATABASE … SET
/// synchronous_commit = off` (which would acknowledge commits before their WAL is flushed) at no
/// cost per transaction. The server groups concurrent commits into shared WAL flushes by itself.
///
/// The ingest statements are prepared once per connection; `plan_cache_mode=force_custom_plan`
/// has each execution planned for its own arrays and the tables as they are now. A generic plan,
/// cached when a connection first ran a statement against a young, nearly empty schema, chose
/// sequential scans and hash joins that cost twice the server CPU once the tables had grown.
public final class PostgresStore: Sendable {
    public let client: PostgresClient
    let logger: Logger
    /// How long a call waits for a connection before it fails as `unavailable`.
    let leaseTimeout: Duration
    /// How long a call waits for its queries' answers before it fails as `unavailable`.
    let answerTimeout: Duration
    /// The task running `client.run()`: the client leases no connection without it.
    private let runner = Mutex<Task<Void, Never>?>(nil)
    /// Concurrent ingests share transactions (PostgresStore+Ingest.swift).
    let ingests = LazyGroupCommit<IncomingDelivery, IntakeOutcome>(maxBatch: 128)
    /// Attempt finishes of concurrent jobs share transactions (PostgresStore+Jobs.swift).
    let finishes = LazyGroupCommit<AttemptFinish, FinishedAttempt>()

    /// Creates the store and its client without running the client; see `open` for a ready store.
    public init(location: PostgresLocation, leaseTimeout: Duration = .seconds(10), answerTimeout: Duration = .seconds(60), logger: Logger) {
        var configuration = location.client
        configuration.options.additionalStartupParameters.append(("synchronous_commit", "on"))
        configuration.options.additionalStartupParameters.append(("plan_cache_mode", "force_custom_plan"))
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        self.leaseTimeout = leaseTimeout
        self.answerTimeout = answerTimeout
    }

    /// A ready store: its client runs in a task the store owns until `close()`, and the schema
    /// is migrated (unless `migrate` is false, e.g. for read-only CLI commands).
    public static func open(
        _ location: PostgresLocation, migrate: Bool = true, leaseTimeout: Duration = .seconds(10),
        answerTimeout: Duration = .seconds(60), logger: Logger
    ) async throws(StoreError) -> PostgresStore {
        if let problem = await probe(location, within: leaseTimeout, logger: logger) { throw problem }
        let store = PostgresStore(location: location, leaseTimeout: leaseTimeout, answerTimeout: answerTimeout, logger: logger)
        await store.startClient()
        if migrate {
            do throws(StoreError) {
                try await store.migrate()
            } catch {
                await store.close()
                throw error
            }
        }
        return store
    }

    /// One direct connection with `location.probe`: the error that says why pipehook cannot use the
    /// database (authentication, TLS, a missing database or schema, a refused connection), as soon
    /// as the server or the network says it: milliseconds on a healthy machine (the password
    /// exchange is CPU work on both sides, so `limit` bounds the whole). Nil when it works or
    /// nothing came back in time (the pool's own timeouts then decide).
    static func probe(_ location: PostgresLocation, within limit: Duration, logger: Logger) async -> StoreError? {
        guard let configuration = location.probe else { return nil }
        let answer = await Deadline.within(limit) { () async throws -> String? in
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            do {
                let schema = try await connection.query("SELECT current_schema()", logger: logger).collect().first?.decode(String?.self)
                try? await connection.close()
                return schema ?? nil
            } catch {
                try? await connection.close()
                throw error
            }
        }
        switch answer {
        case nil:
            return nil
        case .success(.some):
            return nil
        case .success(nil):
            return StoreError(.unavailable, "PostgreSQL at \(location): the schema \(location.searchPath ?? "public") does not exist (create it, or fix search_path)")
        case .failure(let error as PSQLError) where error.code == .connectionError && isTimeout(error.underlying):
            // Nothing answered in time (a loaded machine, a slow network): not a verdict.
            return nil
        case .failure(let error):
            return StoreError(.unavailable, "cannot use PostgreSQL at \(location): \(describe(error))")
        }
    }

    private static func isTimeout(_ error: (any Error)?) -> Bool {
        if case .connectTimeout? = error as? ChannelError { return true }
        return false
    }

    /// Runs `body` with a ready store and closes it afterwards, whatever happens.
    public static func withStore<T: Sendable>(
        _ location: PostgresLocation, migrate: Bool = true, logger: Logger, _ body: (PostgresStore) async throws -> T
    ) async throws -> T {
        let store = try await open(location, migrate: migrate, logger: logger)
        do {
            let value = try await body(store)
            await store.close()
            return value
        } catch {
            await store.close()
            throw error
        }
    }

    /// Runs the client in a task of the store's own (idempotent), returning once that task has
    /// entered `client.run()` (a lease before that would log a warning). Unstructured on purpose:
    /// the store serves the CLI and the daemon's set-up before its service group starts;
    /// `PostgresClientService` ties the client's end to the daemon's shutdown.
    public func startClient() async {
        let client = self.client
        await withCheckedContinuation { (started: CheckedContinuation<Void, Never>) in
            let alreadyRunning = runner.withLock { runner -> Bool in
                guard runner == nil else { return true }
                runner = Task {
                    started.resume()
                    await client.run()
                }
                return false
            }
            if alreadyRunning { started.resume() }
        }
    }

    /// Stops the client; queries fail from then on. Waits (at most `answerTimeout`) until its
    /// connections are closed: a call stuck on a dead connection must not hold up a shutdown.
    public func close() async {
        guard let task = runner.withLock({ $0 }) else { return }
        task.cancel()
        _ = await Deadline.within(answerTimeout) { await task.value }
    }

    deinit {
        runner.withLock { $0?.cancel() }
    }

    /// Applies missing migrations; returns their ids. Safe to run from several instances at once.
    @discardableResult
    public func migrate() async throws(StoreError) -> [String] {
        let logger = self.logger
        do {
            // A migration may rewrite a large table, or wait for another instance's.
            return try await leased("migrate", answerTimeout: .seconds(1800)) { connection in
                try await PostgresSchema.migrate(connection, logger: logger, at: Self.nowMilliseconds())
            }
        } catch {
            throw StoreError(error.kind, "cannot migrate the PostgreSQL store: \(error.message)")
        }
    }

    static func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: transactions

    /// One read-write transaction, errors mapped to `StoreError` (a `StoreError` thrown by `body`
    /// rolls back and is rethrown as is). `leased` runs it in a task of its own, so the caller's
    /// cancellation cannot cut a bookkeeping write short (a dispatcher stopping mid-step still
    /// records what happened).
    func write<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws(StoreError) -> T {
        let logger = self.logger
        return try await leased(what) { connection in
            try await connection.withTransaction(logger: logger) { connection in try await body(connection, logger) }
        }
    }

    /// One read-only transaction on a single snapshot (REPEATABLE READ), like a SQLite read.
    func read<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws(StoreError) -> T {
        let logger = self.logger
        return try await leased(what) { connection in
            try await connection.withTransaction(logger: logger) { connection in
                try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", logger: logger)
                return try await body(connection, logger)
            }
        }
    }

    /// Leases a connection for `body`, or fails as `unavailable` when none comes within
    /// `leaseTimeout`: while the server is down the pool would keep a request waiting for a
    /// minute, longer than a webhook sender waits for its answer. Either the lease or the timeout
    /// wins, never both, so a timed-out call has done nothing.
    ///
    /// A query sent on a connection that is closing may never be answered (nor cancelled), so the
    /// caller never waits on the lease or the body itself: they run in a task of their own, and
    /// a body that has no answer within `answerTimeout` fails as `unavailable` and has its
    /// connection closed (which rolls back whatever it had not committed).
    func leased<T: Sendable>(
        _ what: String, answerTimeout: Duration? = nil, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws(StoreError) -> T {
        let leaseTimeout = self.leaseTimeout, answerTimeout = answerTimeout ?? self.answerTimeout
        let result = await leasedResult(answerTimeout: answerTimeout, body)
        switch result {
        case .success(let value): return value
        case .failure(let error): throw Self.describeFailure(error, what, leaseTimeout: leaseTimeout, answerTimeout: answerTimeout).error
        }
    }

    /// `leased` without the mapping: the raw failure, for callers that must know whether it rolled back.
    func leasedResult<T: Sendable>(
        answerTimeout: Duration, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async -> Result<T, any Error> {
        let client = self.client, leaseTimeout = self.leaseTimeout
        return await withCheckedContinuation { continuation in
            let race = LeaseRace(), once = Once()
            let finish: @Sendable (Result<T, any Error>) -> Void = { result in
                if once.claim() { continuation.resume(returning: result) }
            }
            let timer = Task {
                try? await Task.sleep(for: leaseTimeout)
                guard !Task.isCancelled, race.settle(LeaseRace.timedOut) else { return }
                race.cancelWork()
                finish(.failure(LeaseTimeout()))
            }
            race.setWork(Task {
                var won = false
                do {
                    let value = try await client.withConnection { connection in
                        guard race.settle(LeaseRace.leased) else { throw LeaseTimeout() }
                        won = true
                        timer.cancel()
                        let watchdog = Task {
                            try? await Task.sleep(for: answerTimeout)
                            guard !Task.isCancelled else { return }
                            finish(.failure(NoAnswer()))
                            try? await connection.close()
                        }
                        defer { watchdog.cancel() }
                        return try await body(connection)
                    }
                    finish(.success(value))
                } catch {
                    // The lease won (its body failed), or the lease failed at once (pool
                    // closed); otherwise the timer has answered already.
                    if won || race.settle(LeaseRace.failed) {
                        timer.cancel()
                        finish(.failure(error))
                    }
                }
            })
        }
    }

    /// What a failed call means for the caller: its `StoreError`, and whether nothing it did can
    /// have been committed (no connection came, or the server refused a statement and the
    /// transaction was rolled back) — as opposed to an outcome that is unknown (no answer, or the
    /// connection failed around the commit).
    static func describeFailure(
        _ error: any Error, _ what: String, leaseTimeout: Duration, answerTimeout: Duration
    ) -> (error: StoreError, rolledBack: Bool) {
        switch error {
        case is LeaseTimeout:
            return (StoreError(.unavailable, "\(what) failed: no PostgreSQL connection within \(leaseTimeout) (is the server up?)"), true)
        case is NoAnswer:
            return (StoreError(.unavailable, "\(what) failed: no answer from PostgreSQL within \(answerTimeout); connection closed"), false)
        case let transaction as PostgresTransactionError:
            let rolledBack = transaction.beginError != nil
                || (transaction.closureError != nil && transaction.rollbackError == nil && transaction.commitError == nil
                    && ((transaction.closureError as? PSQLError)?.serverInfo != nil || transaction.closureError is StoreError))
            return (storeError(error, what), rolledBack)
        default:
            return (storeError(error, what), false)
        }
    }

    static func storeError(_ error: any Error, _ what: String) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? PostgresTransactionError, let inner = error.closureError as? StoreError { return inner }
        if let error = (error as? PostgresTransactionError)?.closureError ?? error as? PSQLError,
           let error = error as? PSQLError, error.serverInfo?[.sqlState] == "42P01" {
            // undefined_table: a read-only command (no migration) on a database no daemon set up.
            return StoreError(.notFound, "\(what) failed: no pipehook tables here (has `pipehook serve` run with this store and search_path?)")
        }
        return StoreError(.unavailable, "\(what) failed: \(describe(error))")
    }

    /// What went wrong, for logs and `StoreError` messages: the server's code and message, or
    /// the client's reason. Never the query's bound values (payloads) nor the connection's
    /// configuration (the password).
    static func describe(_ error: any Error) -> String {
        if let error = error as? PostgresTransactionError {
            if let inner = error.closureError ?? error.beginError ?? error.commitError { return describe(inner) }
            return "transaction failed"
        }
        if let error = error as? PSQLError {
            if error.code == .sslUnsupported { return "PostgreSQL TLS: the server does not offer TLS, which this sslmode requires" }
            if let underlying = error.underlying, underlying is NIOSSLError || underlying is BoringSSLError {
                return "PostgreSQL TLS failed: \(String(reflecting: underlying))"
            }
            if let info = error.serverInfo {
                let state = info[.sqlState].map { " (\($0))" } ?? ""
                return "PostgreSQL: \(info[.message] ?? "error")\(state)"
            }
            if let underlying = error.underlying { return "PostgreSQL \(error.code): \(String(reflecting: underlying))" }
            return "PostgreSQL \(error.code)"
        }
        return String(reflecting: error)
    }
}

// MARK: WebhookStore

extension PostgresStore: WebhookStore {
    /// Concurrent deliveries share one transaction (see `PostgresStore+Ingest.swift`).
    public func ingest(_ delivery: IncomingDelivery) async throws(StoreError) -> IntakeOutcome {
        // Weak: the batcher lives inside the store it commits to.
        try await ingests.submit(delivery) { [weak self] batch in
            guard let self else { return batch.map { _ in .failure(StoreError(.unavailable, "the store is closed")) } }
            return await self.commit(batch)
        }.get()
    }

    /// One transaction for the batch. A batch the server refused (a deadlock it broke, a bad row)
    /// was rolled back: it is tried again one delivery per transaction, so one cannot fail the
    /// others. A batch whose outcome is unknown (no answer, a connection lost around the commit)
    /// fails whole as `unavailable`: its senders retry, and a delivery that did commit then reads
    /// as the duplicate it is — never accepted twice, never lost.
    func commit(_ batch: [IncomingDelivery]) async -> [Result<IntakeOutcome, StoreError>] {
        let first = await ingestTransaction(batch)
        switch first {
        case .success(let outcomes): return outcomes.map { .success($0) }
        case .failure(let failure):
            if batch.count == 1 || !failure.rolledBack { return batch.map { _ in .failure(failure.error) } }
        }
        var results: [Result<IntakeOutcome, StoreError>] = []
        for delivery in batch {
            switch await ingestTransaction([delivery]) {
            case .success(let outcomes): results.append(.success(outcomes[0]))
            case .failure(let failure): results.append(.failure(failure.error))
            }
        }
        return results
    }

    struct IngestFailure: Error {
        var error: StoreError
        var rolledBack: Bool
    }

    private func ingestTransaction(_ batch: [IncomingDelivery]) async -> Result<[IntakeOutcome], IngestFailure> {
        let logger = self.logger
        let result = await leasedResult(answerTimeout: answerTimeout) { connection in
            try await connection.withTransaction(logger: logger) { connection in try await Self.ingest(batch, connection, logger) }
        }
        return result.mapError { error in
            let (storeError, rolledBack) = Self.describeFailure(error, "ingest", leaseTimeout: leaseTimeout, answerTimeout: answerTimeout)
            return IngestFailure(error: storeError, rolledBack: rolledBack)
        }
    }

    /// One new pending job, due now by the server's clock (never by this host's: a clock ahead
    /// would delay it), pinned to `route`'s version, which is recorded once.
    @discardableResult
    static func insertJob(
        route: RoutePin, source: String, generationID: String, eventID: String, at: Int64, replay: Bool,
        _ db: PostgresConnection, _ logger: Logger
    ) async throws -> [PostgresRow] {
        if route.isPinned {
            try await db.query("""
                INSERT INTO route_versions (version, name, definition, created_at)
                VALUES (\(route.version), \(route.name), \(route.definition), \(at)) ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        let version: String? = route.isPinned ? route.version : nil
        return try await db.query("""
            INSERT INTO jobs (id, source, generation_id, route, route_version, event_id, state, run_at, created_at, updated_at, replay)
            VALUES (\(JobID.make()), \(source), \(generationID), \(route.name), \(version), \(eventID), 'pending',
                    \(unescaped: serverNow), \(at), \(at), \(replay))
            ON CONFLICT DO NOTHING
            RETURNING \(unescaped: jobColumns())
            """, logger: logger).collect()
    }

    /// The per-generation transaction lock that `ingest`, `track` and `recordPoll` share.
    static func lockGeneration(source: String, generationID: String, _ db: PostgresConnection, _ logger: Logger) async throws {
        try await db.query(
            "SELECT pg_advisory_xact_lock(hashtextextended(\(source) || ':' || \(generationID), 0))", logger: logger
        )
    }

    // MARK: reads

    public func events(after seq: Int64, limit: Int) async throws(StoreError) -> [StreamedEvent] {
        try await read("read events") { db, logger in
            try await db.query("""
                SELECT seq, source, generation_id, event_id, origin, status, previous_status, transition, output_url, error_message,
                       received_at, signed_at
                FROM events WHERE seq > \(seq) ORDER BY seq LIMIT \(limit)
                """, logger: logger).collect().map { row in
                let (seq, source, generationID, eventID, origin, status, previous, transition, outputURL, errorMessage, receivedAt, signedAt) =
                    try row.decode((Int64, String, String, String, String, String, String?, String, String?, String?, Int64, Int64).self)
                return StreamedEvent(seq: seq, source: source, generationID: generationID, entry: TimelineEntry(
                    eventID: eventID, origin: EventOrigin(rawValue: origin) ?? .webhook, status: try Self.status(status, column: "events.status"),
                    previousStatus: try previous.map { try Self.status($0, column: "events.previous_status") },
                    transition: Transition(rawValue: transition) ?? .stale, outputURL: outputURL, errorMessage: errorMessage,
                    receivedAt: receivedAt, signedAt: signedAt
                ))
            }
        }
    }

    public func lastEventSeq() async throws(StoreError) -> Int64 {
        try await read("read last event") { db, logger in
            try await db.query("SELECT coalesce(max(seq), 0)::bigint FROM events", logger: logger).collect().first?.decode(Int64.self) ?? 0
        }
    }

    public func generations(withID id: String) async throws(StoreError) -> [GenerationDetail] {
        try await read("read generation") { db, logger in
            let generations = try await db.query(
                "SELECT \(unescaped: Self.generationColumns) FROM generations WHERE generation_id = \(id) ORDER BY source", logger: logger
            ).collect().map(Self.generation)
            var details: [GenerationDetail] = []
            for generation in generations {
                let events = try await db.query("""
                    SELECT \(unescaped: Self.eventColumns) FROM events WHERE source = \(generation.source) AND generation_id = \(id) ORDER BY seq
                    """, logger: logger).collect()
                details.append(GenerationDetail(generation: generation, timeline: try events.map(Self.timelineEntry)))
            }
            return details
        }
    }

    /// `GenerationQuery`'s order and filters in SQL; `COLLATE "C"` compares ids by their bytes,
    /// as the other stores do, whatever the database's collation.
    public func generations(_ query: GenerationQuery) async throws(StoreError) -> [GenerationRecord] {
        if query.matchesNothing { return [] }
        var sql = PostgresQuery.StringInterpolation(literalCapacity: 256, interpolationCount: 8)
        if let state = query.jobState, state != .succeeded {
            // Waiting and dead jobs are few: read them first (the state index), then their
            // generations. Left to itself the planner, counting on the LIMIT, walks generations
            // newest first and probes each for such a job: 180,000 probes for a page of 50 on a
            // store of 1,000,000.
            sql.appendLiteral("WITH matching AS MATERIALIZED (SELECT DISTINCT j.generation_id AS g_id, j.source AS g_source FROM jobs j WHERE j.state = ")
            sql.appendInterpolation(state.rawValue)
            if let route = query.route {
                sql.appendLiteral(" AND j.route = ")
                sql.appendInterpolation(route)
            }
            sql.appendLiteral(") SELECT \(Self.generationColumns) FROM generations JOIN matching ON generation_id = g_id AND source = g_source WHERE true")
        } else {
            sql.appendLiteral("SELECT \(Self.generationColumns) FROM generations WHERE true")
        }
        if let status = query.status {
            sql.appendLiteral(" AND status = ")
            sql.appendInterpolation(status.rawValue)
        }
        if let source = query.source {
            sql.appendLiteral(" AND source = ")
            sql.appendInterpolation(source)
        }
        if let after = query.after {
            // Implied by what follows; stated so the planner has a range of the index to start from.
            sql.appendLiteral(" AND updated_at <= ")
            sql.appendInterpolation(after.updatedAt)
            sql.appendLiteral(" AND (updated_at < ")
            sql.appendInterpolation(after.updatedAt)
            sql.appendLiteral(" OR (updated_at = ")
            sql.appendInterpolation(after.updatedAt)
            sql.appendLiteral(" AND (generation_id COLLATE \"C\" > ")
            sql.appendInterpolation(after.generationID)
            sql.appendLiteral(" OR (generation_id = ")
            sql.appendInterpolation(after.generationID)
            sql.appendLiteral(" AND source COLLATE \"C\" > ")
            sql.appendInterpolation(after.source)
            sql.appendLiteral("))))")
        }
        if query.filtersJobs, query.jobState == nil || query.jobState == .succeeded {
            // A semi-join, probed per generation newest first: most jobs succeed, so a page is
            // found after a few probes.
            sql.appendLiteral(" AND EXISTS (SELECT 1 FROM jobs j WHERE j.generation_id = generations.generation_id AND j.source = generations.source")
            if let state = query.jobState {
                sql.appendLiteral(" AND j.state = ")
                sql.appendInterpolation(state.rawValue)
            }
            if let route = query.route {
                sql.appendLiteral(" AND j.route = ")
                sql.appendInterpolation(route)
            }
            sql.appendLiteral(")")
        }
        sql.appendLiteral(" ORDER BY updated_at DESC, generation_id COLLATE \"C\", source COLLATE \"C\" LIMIT ")
        sql.appendInterpolation(query.limit)
        let statement = PostgresQuery(stringInterpolation: sql)
        return try await read("list generations") { db, logger in
            try await db.query(statement, logger: logger).collect().map(Self.generation)
        }
    }

    public func activity(_ window: ActivityWindow, parts: Activity.Parts) async throws(StoreError) -> Activity {
        let since = window.since, until = window.until, width = window.bucketMilliseconds
        return try await read("read activity") { db, logger in
            var activity = Activity(window: window)
            if parts.contains(.events) {
                for try await (bucket, transition, status, count) in try await db.query("""
                    SELECT ((received_at - \(since)) / \(width))::int, transition, status, count(*)::int FROM events
                    WHERE received_at >= \(since) AND received_at < \(until) GROUP BY 1, 2, 3
                    """, logger: logger).decode((Int, String, String, Int).self) {
                    guard let transition = Transition(rawValue: transition), let status = GenerationStatus(rawValue: status) else { continue }
                    activity.events.append(Activity.EventCount(bucket: bucket, transition: transition, status: status, count: count))
                }
                for try await (bucket, count) in try await db.query("""
                    SELECT ((received_at - \(since)) / \(width))::int, count(*)::int FROM unrecognized
                    WHERE received_at >= \(since) AND received_at < \(until) GROUP BY 1
                    """, logger: logger).decode((Int, Int).self) where activity.unrecognized.indices.contains(bucket) {
                    activity.unrecognized[bucket] = count
                }
            }
            guard parts.contains(.attempts) else { return activity.normalized() }
            for try await (bucket, outcome, count) in try await db.query("""
                SELECT ((started_at - \(since)) / \(width))::int, outcome, count(*)::int FROM attempts
                WHERE started_at >= \(since) AND started_at < \(until) AND outcome <> 'running' GROUP BY 1, 2
                """, logger: logger).decode((Int, String, Int).self) {
                guard let outcome = AttemptOutcome(rawValue: outcome) else { continue }
                activity.attempts.append(Activity.AttemptCount(bucket: bucket, outcome: outcome, count: count))
            }
            for try await duration in try await db.query("""
                SELECT ended_at - started_at FROM attempts
                WHERE started_at >= \(since) AND started_at < \(until) AND outcome <> 'running' AND ended_at IS NOT NULL
                ORDER BY started_at DESC, id DESC LIMIT \(Activity.durationLimit)
                """, logger: logger).decode(Int64.self) {
                activity.attemptDurations.append(duration)
            }
            return activity.normalized()
        }
    }

    public func counts() async throws(StoreError) -> StoreCounts {
        try await read("count rows") { db, logger in
            let row = try await db.query("""
                SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM events),
                       (SELECT count(*) FROM generations), (SELECT count(*) FROM unrecognized)
                """, logger: logger).collect()
            let (deliveries, events, generations, unrecognized) = try row[0].decode((Int, Int, Int, Int).self)
            return StoreCounts(deliveries: deliveries, events: events, generations: generations, unrecognized: unrecognized)
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
        // Small transactions: each deletes at most `limit` rows of each kind, so ingest and claims
        // keep committing between them however much a first prune of a big store has to do.
        var total = PruneReport()
        while true {
            let (report, more) = try await write("prune") { db, logger -> (PruneReport, Bool) in
                // Every instance's retention service prunes; one at a time, so that two prunes
                // deleting the same rows in different orders cannot deadlock.
                try await db.query(
                    "SELECT pg_advisory_xact_lock(hashtextextended('pipehook:prune:' || coalesce(current_schema(), ''), 0))", logger: logger
                )
                func count(_ query: PostgresQuery) async throws -> Int {
                    try await db.query(query, logger: logger).collect().first?.decode(Int.self) ?? 0
                }
                var report = PruneReport()
                report.deliveries = try await count("""
                    WITH gone AS (DELETE FROM deliveries WHERE (source, delivery_id) IN (
                        SELECT source, delivery_id FROM deliveries WHERE received_at < \(dedupCutoff) LIMIT \(limit)) RETURNING 1)
                    SELECT count(*) FROM gone
                    """)
                // Finished jobs past retention go with their attempts; dead ones only on request.
                report.jobs = try await count("""
                    WITH doomed AS (
                        SELECT id FROM jobs WHERE state IN \(unescaped: finishedJobs) AND updated_at < \(retentionCutoff) LIMIT \(limit)),
                    attempts_gone AS (DELETE FROM attempts USING doomed WHERE attempts.job_id = doomed.id RETURNING 1),
                    jobs_gone AS (DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id RETURNING 1)
                    SELECT count(*) FROM jobs_gone
                    """)
                // A finished generation idle past retention goes with its whole timeline and
                // polling, unless a job still needs its events (pending, running, or dead and kept
                // for a retry). One statement, so all three deletes agree on the same generations.
                let (events, generations) = try await db.query("""
                    WITH stale AS (
                        SELECT g.source, g.generation_id FROM generations g
                        WHERE g.status IN (\(unescaped: terminal)) AND g.updated_at < \(retentionCutoff)
                          AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.generation_id = g.generation_id AND j.source = g.source)
                        LIMIT \(limit)),
                    polls_gone AS (DELETE FROM polls USING stale
                        WHERE polls.source = stale.source AND polls.generation_id = stale.generation_id RETURNING 1),
                    events_gone AS (DELETE FROM events USING stale
                        WHERE events.source = stale.source AND events.generation_id = stale.generation_id RETURNING 1),
                    generations_gone AS (DELETE FROM generations USING stale
                        WHERE generations.source = stale.source AND generations.generation_id = stale.generation_id RETURNING 1)
                    SELECT (SELECT count(*) FROM events_gone), (SELECT count(*) FROM generations_gone)
                    """, logger: logger).collect().first?.decode((Int, Int).self) ?? (0, 0)
                report.events = events
                report.generations = generations
                // Ids the API never knew (404), idle past retention.
                let polls = try await count("""
                    WITH gone AS (DELETE FROM polls WHERE (generation_id, source) IN (
                        SELECT p.generation_id, p.source FROM polls p WHERE p.state = 'stopped' AND p.updated_at < \(retentionCutoff)
                          AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.generation_id = p.generation_id AND g.source = p.source)
                        LIMIT \(limit)) RETURNING 1)
                    SELECT count(*) FROM gone
                    """)
                report.unrecognized = try await count("""
                    WITH gone AS (DELETE FROM unrecognized WHERE seq IN (
                        SELECT seq FROM unrecognized WHERE received_at < \(retentionCutoff) LIMIT \(limit)) RETURNING 1)
                    SELECT count(*) FROM gone
                    """)
                let keys = try await count("""
                    WITH gone AS (DELETE FROM idempotency_keys WHERE key IN (
                        SELECT key FROM idempotency_keys WHERE created_at < \(retentionCutoff) LIMIT \(limit)) RETURNING 1)
                    SELECT count(*) FROM gone
                    """)
                return (report, [report.deliveries, report.jobs, report.generations, polls, report.unrecognized, keys].contains(limit))
            }
            total.add(report)
            if !more { return total }
        }
    }

    /// True when the server answers within two seconds and takes writes (not a standby, not
    /// read-only): `/readyz`.
    public func isWritable() async -> Bool {
        let client = self.client, logger = self.logger
        let answer = await Deadline.within(.seconds(2)) {
            try await client.query(
                "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'", logger: logger
            ).collect().first?.decode(Bool.self)
        }
        return (try? answer?.get()) == true
    }

    public func unrecognized(after: Int64, limit: Int) async throws(StoreError) -> [UnrecognizedDelivery] {
        try await read("read unrecognized deliveries") { db, logger in
            try await db.query("""
                SELECT seq, source, delivery_id, received_at, signed_at, reason, raw FROM unrecognized
                WHERE reprocessed_at IS NULL AND seq > \(after) ORDER BY seq LIMIT \(limit)
                """, logger: logger).collect().map { row in
                let (seq, source, deliveryID, receivedAt, signedAt, reason, raw) =
                    try row.decode((Int64, String, String, Int64, Int64, String, ByteBuffer).self)
                return UnrecognizedDelivery(
                    seq: seq, source: source, deliveryID: deliveryID, receivedAt: receivedAt, signedAt: signedAt, reason: reason,
                    raw: Array(raw.readableBytesView)
                )
            }
        }
    }

    public func replay(eventID: String, source: String?, routes: (GenerationStatus) -> [RoutePin], at: Int64) async throws(StoreError) -> [JobRecord] {
        let events: [StoredEvent] = try await read("read event") { db, logger in
            let rows: [PostgresRow]
            if let source {
                rows = try await db.query(
                    "SELECT \(unescaped: Self.eventColumns) FROM events WHERE event_id = \(eventID) AND source = \(source)", logger: logger
                ).collect()
            } else {
                rows = try await db.query(
                    "SELECT \(unescaped: Self.eventColumns) FROM events WHERE event_id = \(eventID)", logger: logger
                ).collect()
            }
            return try rows.map(Self.storedEvent)
        }
        let event = try ReplayRules.event(events, eventID: eventID)
        let names = try ReplayRules.routes(for: event, routes)
        return try await write("replay") { db, logger in
            var jobs: [JobRecord] = []
            for route in names {
                let rows = try await Self.insertJob(route: route, source: event.source, generationID: event.generationID,
                                                    eventID: event.eventID, at: at, replay: true, db, logger)
                jobs.append(contentsOf: try rows.map(Self.job))
            }
            return jobs
        }
    }

    // MARK: rows

    static let generationColumns = "source, generation_id, status, output_url, error_message, created_at, updated_at"

    static let eventColumns = """
        event_id, source, origin, event_type, generation_id, status, previous_status, transition, output_url, error_message, \
        received_at, signed_at, raw
        """

    static func status(_ text: String?, column: String) throws -> GenerationStatus {
        guard let text, let status = GenerationStatus(rawValue: text) else {
            throw StoreError(.invalid, "unknown status '\(text ?? "null")' in column \(column)")
        }
        return status
    }

    private static func generation(_ row: PostgresRow) throws -> GenerationRecord {
        let (source, generationID, status, outputURL, errorMessage, createdAt, updatedAt) =
            try row.decode((String, String, String, String?, String?, Int64, Int64).self)
        return GenerationRecord(
            source: source, generationID: generationID, status: try Self.status(status, column: "generations.status"),
            outputURL: outputURL, errorMessage: errorMessage, createdAt: createdAt, updatedAt: updatedAt
        )
    }

    static func timelineEntry(_ row: PostgresRow) throws -> TimelineEntry {
        let event = try storedEvent(row)
        let (transition, signedAt) = try row.makeRandomAccess().decodeColumns(transition: "transition", signedAt: "signed_at")
        return TimelineEntry(
            eventID: event.eventID, origin: event.origin, status: event.status, previousStatus: event.previousStatus,
            transition: Transition(rawValue: transition) ?? .stale, outputURL: event.outputURL, errorMessage: event.errorMessage,
            receivedAt: event.receivedAt, signedAt: signedAt
        )
    }

    static func storedEvent(_ row: PostgresRow) throws -> StoredEvent {
        let (eventID, source, origin, eventType, generationID, status, previous, _, outputURL, errorMessage, receivedAt, _, raw) =
            try row.decode((String, String, String, String, String, String, String?, String, String?, String?, Int64, Int64, ByteBuffer).self)
        return StoredEvent(
            eventID: eventID, source: source, origin: EventOrigin(rawValue: origin) ?? .webhook, eventType: eventType,
            generationID: generationID, status: try Self.status(status, column: "events.status"),
            previousStatus: try previous.map { try Self.status($0, column: "events.previous_status") },
            outputURL: outputURL, errorMessage: errorMessage, receivedAt: receivedAt, raw: Array(raw.readableBytesView)
        )
    }
}

extension PostgresRandomAccessRow {
    fileprivate func decodeColumns(transition: String, signedAt: String) throws -> (String, Int64) {
        (try self[transition].decode(String.self), try self[signedAt].decode(Int64.self))
    }
}

/// Who won between a connection lease and its timeout.
private final class LeaseRace: Sendable {
    static let waiting = 0, leased = 1, timedOut = 2, failed = 3
    private let state = Atomic<Int>(LeaseRace.waiting)
    private let work = Mutex<Task<Void, Never>?>(nil)

    /// True for the first outcome only.
    func settle(_ outcome: Int) -> Bool {
        state.compareExchange(expected: Self.waiting, desired: outcome, ordering: .acquiringAndReleasing).exchanged
    }

    func setWork(_ task: Task<Void, Never>) {
        let cancelled = work.withLock { work -> Bool in
            work = task
            return state.load(ordering: .acquiring) == Self.timedOut
        }
        if cancelled { task.cancel() }
    }

    func cancelWork() { work.withLock { $0 }?.cancel() }
}

private struct LeaseTimeout: Error {}
private struct NoAnswer: Error {}

/// True for the first caller only.
final class Once: Sendable {
    private let done = Atomic<Bool>(false)
    func claim() -> Bool { !done.exchange(true, ordering: .acquiringAndReleasing) }
}
