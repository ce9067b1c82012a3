import Logging
import PipehookFormats
import PipehookLifecycle
import PipehookStore
import PostgresNIO

/// Batched ingest: concurrent deliveries of one instance share a transaction (`GroupCommit`), in
/// a fixed number of round trips whatever the batch size, and `IngestRules` decides every row.
///
/// 1. The batch's delivery ids are inserted (`ON CONFLICT DO NOTHING`, in byte order): an id
///    another instance is committing makes this wait for it; those not inserted were seen before.
/// 2. The generations the batch is about are locked (transaction advisory locks, in key order, so
///    two batches never wait for each other in a cycle). `track` and `recordPoll` take the same.
/// 3. One query reads the facts: event ids already stored, the generations' statuses, their
///    existing outbox jobs, and the server's clock. A new statement, so it sees every commit made
///    before the locks were granted.
/// 4. One statement writes the plan (data-modifying CTEs over arrays).
extension PostgresStore {
    static func ingest(_ batch: [IncomingDelivery], _ db: PostgresConnection, _ logger: Logger) async throws -> [IntakeOutcome] {
        let needs = IngestRules.needs(batch)
        var facts = IngestFacts(now: 0)

        // 1. Claim the delivery ids.
        let deliveries = needs.deliveries.sorted(by: Self.byBytes)
        var fresh = Set<MessageKey>()
        if !deliveries.isEmpty {
            let receivedAt = Dictionary(batch.map { (MessageKey(source: $0.source, id: $0.deliveryID), $0.receivedAt) }) { a, _ in a }
            let rows = try await db.query("""
                INSERT INTO deliveries (source, delivery_id, received_at)
                SELECT * FROM unnest(\(deliveries.map(\.source))::text[], \(deliveries.map(\.id))::text[],
                                     \(deliveries.map { receivedAt[$0] ?? 0 })::bigint[])
                ON CONFLICT DO NOTHING RETURNING source, delivery_id
                """, logger: logger).collect()
            for row in rows {
                let (source, id) = try row.decode((String, String).self)
                fresh.insert(MessageKey(source: source, id: id))
            }
            facts.seenDeliveries = Set(deliveries).subtracting(fresh)
        }

        // 2. Lock the generations.
        let generations = needs.generations
        if !generations.isEmpty {
            try await db.query("""
                SELECT count(pg_advisory_xact_lock(k)) FROM (
                    SELECT DISTINCT hashtextextended(s || ':' || g, 0) AS k
                    FROM unnest(\(generations.map(\.source))::text[], \(generations.map(\.generationID))::text[]) AS t(s, g)
                    ORDER BY 1
                ) AS keys
                """, logger: logger)
        }

        // 3. Read the facts (and the server's clock, by which new jobs are due).
        let events = needs.events, jobs = needs.jobRoutes
        let rows = try await db.query("""
            SELECT 0, e.source, e.event_id, NULL::text FROM events e
                JOIN unnest(\(events.map(\.source))::text[], \(events.map(\.id))::text[]) AS k(s, i) ON e.source = k.s AND e.event_id = k.i
            UNION ALL
            SELECT 1, g.source, g.generation_id, g.status FROM generations g
                JOIN unnest(\(generations.map(\.source))::text[], \(generations.map(\.generationID))::text[]) AS k(s, i)
                ON g.generation_id = k.i AND g.source = k.s
            UNION ALL
            SELECT 2, j.source, j.generation_id, j.route FROM jobs j
                JOIN unnest(\(jobs.map(\.source))::text[], \(jobs.map(\.generationID))::text[]) AS k(s, i)
                ON j.generation_id = k.i AND j.source = k.s AND NOT j.replay
            UNION ALL
            SELECT 3, '', '', \(unescaped: serverNow)::text
            """, logger: logger).collect()
        for row in rows {
            let (kind, source, id, value) = try row.decode((Int, String, String, String?).self)
            switch kind {
            case 0: facts.storedEvents.insert(MessageKey(source: source, id: id))
            case 1: facts.statuses[GenerationKey(source: source, generationID: id)] = try status(value, column: "generations.status")
            case 2: if let value { facts.jobRoutes[GenerationKey(source: source, generationID: id), default: []].insert(value) }
            default: facts.now = Int64(value ?? "") ?? 0
            }
        }

        let plan = IngestRules.plan(batch, facts: facts)
        // The rules record exactly the ids step 1 inserted; anything else is a bug, never a silent loss.
        guard Set(plan.deliveries.map { MessageKey(source: $0.source, id: $0.deliveryID) }) == fresh else {
            throw StoreError(.unavailable, "internal: the delivery ids inserted and the ones the rules accepted differ")
        }
        try await persist(plan, db, logger)
        return plan.outcomes
    }

    /// 4. Everything else the plan writes, in one statement.
    static func persist(_ plan: IngestPlan, _ db: PostgresConnection, _ logger: Logger) async throws {
        let u = plan.unrecognized, e = plan.events, g = plan.generations, p = plan.finishedPolling
        let r = plan.routeVersions, j = plan.jobs, rp = plan.reprocessed
        guard !(u.isEmpty && e.isEmpty && g.isEmpty && p.isEmpty && r.isEmpty && j.isEmpty && rp.isEmpty) else { return }
        try await db.query("""
            WITH reprocessed AS (
                UPDATE unrecognized u SET reprocessed_at = x.at
                FROM unnest(\(rp.map(\.seq))::bigint[], \(rp.map(\.at))::bigint[]) AS x(seq, at) WHERE u.seq = x.seq
            ), unrecognized_rows AS (
                INSERT INTO unrecognized (source, delivery_id, received_at, signed_at, reason, raw)
                SELECT * FROM unnest(\(u.map(\.source))::text[], \(u.map(\.deliveryID))::text[], \(u.map(\.receivedAt))::bigint[],
                                     \(u.map(\.signedAt))::bigint[], \(u.map(\.reason))::text[], \(u.map { ByteBuffer(bytes: $0.raw) })::bytea[])
                ON CONFLICT DO NOTHING
            ), event_rows AS (
                INSERT INTO events (event_id, source, origin, event_type, generation_id, status, previous_status, transition,
                                    output_url, error_message, received_at, signed_at, raw)
                SELECT * FROM unnest(\(e.map(\.eventID))::text[], \(e.map(\.source))::text[], \(e.map(\.origin.rawValue))::text[],
                                     \(e.map(\.eventType))::text[], \(e.map(\.generationID))::text[], \(e.map(\.status.rawValue))::text[],
                                     \(NullableTextArray(e.map { $0.previousStatus?.rawValue }))::text[], \(e.map(\.transition.rawValue))::text[],
                                     \(NullableTextArray(e.map(\.outputURL)))::text[], \(NullableTextArray(e.map(\.errorMessage)))::text[],
                                     \(e.map(\.receivedAt))::bigint[], \(e.map(\.signedAt))::bigint[], \(e.map { ByteBuffer(bytes: $0.raw) })::bytea[])
            ), generation_rows AS (
                INSERT INTO generations (source, generation_id, status, output_url, error_message, created_at, updated_at, last_event_id)
                SELECT * FROM unnest(\(g.map(\.source))::text[], \(g.map(\.generationID))::text[], \(g.map(\.status.rawValue))::text[],
                                     \(NullableTextArray(g.map(\.outputURL)))::text[], \(NullableTextArray(g.map(\.errorMessage)))::text[],
                                     \(g.map(\.createdAt))::bigint[], \(g.map(\.updatedAt))::bigint[], \(g.map(\.lastEventID))::text[])
                ON CONFLICT (generation_id, source) DO UPDATE SET
                    status = excluded.status, output_url = excluded.output_url, error_message = excluded.error_message,
                    updated_at = excluded.updated_at, last_event_id = excluded.last_event_id
            ), finished_polls AS (
                UPDATE polls SET state = 'done', updated_at = x.at
                FROM unnest(\(p.map(\.key.source))::text[], \(p.map(\.key.generationID))::text[], \(p.map(\.at))::bigint[]) AS x(s, i, at)
                WHERE polls.generation_id = x.i AND polls.source = x.s AND polls.state = 'active'
            ), route_rows AS (
                INSERT INTO route_versions (version, name, definition, created_at)
                SELECT v, n, d, \(j.first?.runAt ?? 0) FROM unnest(\(r.map(\.version))::text[], \(r.map(\.name))::text[], \(r.map(\.definition))::text[]) AS x(v, n, d)
                ON CONFLICT DO NOTHING
            ), job_rows AS (
                INSERT INTO jobs (id, source, generation_id, route, route_version, event_id, state, run_at, created_at, updated_at, replay)
                SELECT i, s, g, r, nullif(v, ''), e, 'pending', run, c, c, false
                FROM unnest(\(j.map(\.id))::text[], \(j.map(\.source))::text[], \(j.map(\.generationID))::text[], \(j.map(\.route.name))::text[],
                            \(j.map(\.route.version))::text[], \(j.map(\.eventID))::text[], \(j.map(\.runAt))::bigint[], \(j.map(\.createdAt))::bigint[])
                    AS x(i, s, g, r, v, e, run, c)
                ON CONFLICT DO NOTHING
            )
            SELECT 1
            """, logger: logger)
    }

    /// Byte order, the order every instance inserts delivery ids in (no two wait for each other).
    static func byBytes(_ a: MessageKey, _ b: MessageKey) -> Bool {
        if !a.source.sameBytes(as: b.source) { return a.source.utf8.lexicographicallyPrecedes(b.source.utf8) }
        return a.id.utf8.lexicographicallyPrecedes(b.id.utf8)
    }
}

/// A `text[]` whose elements may be NULL (PostgresNIO encodes arrays of non-optional values only).
struct NullableTextArray: PostgresNonThrowingEncodable, PostgresDynamicTypeEncodable {
    var values: [String?]
    init(_ values: [String?]) { self.values = values }

    static var psqlType: PostgresDataType { .textArray }
    static var psqlFormat: PostgresFormat { .binary }

    func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        // array_send's layout: dimensions, has-nulls flag, element type, then (length, lower bound)
        // per dimension, then each element as its byte count (-1 for NULL) and bytes.
        buffer.writeInteger(values.isEmpty ? 0 : 1, as: Int32.self)
        buffer.writeInteger(values.contains(nil) ? 1 : 0, as: Int32.self)
        buffer.writeInteger(PostgresDataType.text.rawValue)
        guard !values.isEmpty else { return }
        buffer.writeInteger(Int32(values.count), as: Int32.self)
        buffer.writeInteger(1, as: Int32.self)
        for value in values {
            guard let value else {
                buffer.writeInteger(-1, as: Int32.self)
                continue
            }
            buffer.writeInteger(Int32(value.utf8.count), as: Int32.self)
            buffer.writeString(value)
        }
    }
}
