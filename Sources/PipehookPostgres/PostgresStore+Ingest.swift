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
            let rows = try await db.execute(ClaimDeliveries(
                sources: deliveries.map(\.source), ids: deliveries.map(\.id), receivedAt: deliveries.map { receivedAt[$0] ?? 0 }
            ), logger: logger)
            for try await (source, id) in rows {
                fresh.insert(MessageKey(source: source, id: id))
            }
            facts.seenDeliveries = Set(deliveries).subtracting(fresh)
        }

        // 2. Lock the generations.
        let generations = needs.generations
        if !generations.isEmpty {
            let locked = try await db.execute(
                LockGenerations(sources: generations.map(\.source), ids: generations.map(\.generationID)), logger: logger
            )
            for try await _ in locked {}
        }

        // 3. Read the facts (and the server's clock, by which new jobs are due).
        let events = needs.events, jobs = needs.jobRoutes
        let rows = try await db.execute(ReadFacts(
            eventSources: events.map(\.source), eventIDs: events.map(\.id),
            generationSources: generations.map(\.source), generationIDs: generations.map(\.generationID),
            jobSources: jobs.map(\.source), jobGenerationIDs: jobs.map(\.generationID)
        ), logger: logger)
        for try await (kind, source, id, value) in rows {
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
        let written = try await db.execute(PersistPlan(plan), logger: logger)
        for try await _ in written {}
    }

    /// Byte order, the order every instance inserts delivery ids in (no two wait for each other).
    static func byBytes(_ a: MessageKey, _ b: MessageKey) -> Bool {
        if !a.source.sameBytes(as: b.source) { return a.source.utf8.lexicographicallyPrecedes(b.source.utf8) }
        return a.id.utf8.lexicographicallyPrecedes(b.id.utf8)
    }
}

// MARK: - The ingest statements, prepared once per connection
//
// Their text is fixed (a batch's rows travel as arrays), so each connection parses and plans
// them once: parsing, analysing and planning the batch's statements were ~40% of the server's
// CPU per batch when they were sent as text each time.

/// 1. The batch's delivery ids, inserted in byte order; those returned were not seen before.
struct ClaimDeliveries: PostgresPreparedStatement {
    static let sql = """
        INSERT INTO deliveries (source, delivery_id, received_at)
        SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
        ON CONFLICT DO NOTHING RETURNING source, delivery_id
        """
    typealias Row = (String, String)
    var sources: [String], ids: [String], receivedAt: [Int64]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 3)
        bindings.append(sources)
        bindings.append(ids)
        bindings.append(receivedAt)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// 2. Transaction advisory locks on the batch's generations, in key order.
struct LockGenerations: PostgresPreparedStatement {
    static let sql = """
        SELECT count(pg_advisory_xact_lock(k)) FROM (
            SELECT DISTINCT hashtextextended(s || ':' || g, 0) AS k
            FROM unnest($1::text[], $2::text[]) AS t(s, g)
            ORDER BY 1
        ) AS keys
        """
    typealias Row = Int64
    var sources: [String], ids: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(sources)
        bindings.append(ids)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

/// 3. The facts the rules need, and the server's clock (by which new jobs are due).
struct ReadFacts: PostgresPreparedStatement {
    static let sql = """
        SELECT 0, e.source, e.event_id, NULL::text FROM events e
            JOIN unnest($1::text[], $2::text[]) AS k(s, i) ON e.source = k.s AND e.event_id = k.i
        UNION ALL
        SELECT 1, g.source, g.generation_id, g.status FROM generations g
            JOIN unnest($3::text[], $4::text[]) AS k(s, i) ON g.generation_id = k.i AND g.source = k.s
        UNION ALL
        SELECT 2, j.source, j.generation_id, j.route FROM jobs j
            JOIN unnest($5::text[], $6::text[]) AS k(s, i) ON j.generation_id = k.i AND j.source = k.s AND NOT j.replay
        UNION ALL
        SELECT 3, '', '', \(PostgresStore.serverNow)::text
        """
    typealias Row = (Int, String, String, String?)
    var eventSources: [String], eventIDs: [String]
    var generationSources: [String], generationIDs: [String]
    var jobSources: [String], jobGenerationIDs: [String]

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 6)
        for values in [eventSources, eventIDs, generationSources, generationIDs, jobSources, jobGenerationIDs] {
            bindings.append(values)
        }
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// 4. Everything else the plan writes, in one statement of data-modifying CTEs.
struct PersistPlan: PostgresPreparedStatement {
    static let sql = """
        WITH reprocessed AS (
            UPDATE unrecognized u SET reprocessed_at = x.at
            FROM unnest($1::bigint[], $2::bigint[]) AS x(seq, at) WHERE u.seq = x.seq
        ), unrecognized_rows AS (
            INSERT INTO unrecognized (source, delivery_id, received_at, signed_at, reason, raw)
            SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bytea[])
            ON CONFLICT DO NOTHING
        ), event_rows AS (
            INSERT INTO events (event_id, source, origin, event_type, generation_id, status, previous_status, transition,
                                output_url, error_message, received_at, signed_at, raw)
            SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                                 $16::text[], $17::text[], $18::text[], $19::bigint[], $20::bigint[], $21::bytea[])
        ), generation_rows AS (
            INSERT INTO generations (source, generation_id, status, output_url, error_message, created_at, updated_at, last_event_id)
            SELECT * FROM unnest($22::text[], $23::text[], $24::text[], $25::text[], $26::text[], $27::bigint[], $28::bigint[], $29::text[])
            ON CONFLICT (generation_id, source) DO UPDATE SET
                status = excluded.status, output_url = excluded.output_url, error_message = excluded.error_message,
                updated_at = excluded.updated_at, last_event_id = excluded.last_event_id
        ), finished_polls AS (
            UPDATE polls SET state = 'done', updated_at = x.at
            FROM unnest($30::text[], $31::text[], $32::bigint[]) AS x(s, i, at)
            WHERE polls.generation_id = x.i AND polls.source = x.s AND polls.state = 'active'
        ), route_rows AS (
            INSERT INTO route_versions (version, name, definition, created_at)
            SELECT v, n, d, $33::bigint FROM unnest($34::text[], $35::text[], $36::text[]) AS x(v, n, d)
            ON CONFLICT DO NOTHING
        ), job_rows AS (
            INSERT INTO jobs (id, source, generation_id, route, route_version, event_id, state, run_at, created_at, updated_at, replay)
            SELECT i, s, g, r, nullif(v, ''), e, 'pending', run, c, c, false
            FROM unnest($37::text[], $38::text[], $39::text[], $40::text[], $41::text[], $42::text[], $43::bigint[], $44::bigint[])
                AS x(i, s, g, r, v, e, run, c)
            ON CONFLICT DO NOTHING
        )
        SELECT 1
        """
    typealias Row = Int
    let plan: IngestPlan
    init(_ plan: IngestPlan) { self.plan = plan }

    func makeBindings() throws -> PostgresBindings {
        let u = plan.unrecognized, e = plan.events, g = plan.generations, p = plan.finishedPolling
        let r = plan.routeVersions, j = plan.jobs, rp = plan.reprocessed
        var b = PostgresBindings(capacity: 44)
        b.append(rp.map(\.seq)); b.append(rp.map(\.at))
        b.append(u.map(\.source)); b.append(u.map(\.deliveryID)); b.append(u.map(\.receivedAt)); b.append(u.map(\.signedAt))
        b.append(u.map(\.reason)); b.append(u.map { ByteBuffer(bytes: $0.raw) })
        b.append(e.map(\.eventID)); b.append(e.map(\.source)); b.append(e.map(\.origin.rawValue)); b.append(e.map(\.eventType))
        b.append(e.map(\.generationID)); b.append(e.map(\.status.rawValue)); b.append(NullableTextArray(e.map { $0.previousStatus?.rawValue }))
        b.append(e.map(\.transition.rawValue)); b.append(NullableTextArray(e.map(\.outputURL))); b.append(NullableTextArray(e.map(\.errorMessage)))
        b.append(e.map(\.receivedAt)); b.append(e.map(\.signedAt)); b.append(e.map { ByteBuffer(bytes: $0.raw) })
        b.append(g.map(\.source)); b.append(g.map(\.generationID)); b.append(g.map(\.status.rawValue))
        b.append(NullableTextArray(g.map(\.outputURL))); b.append(NullableTextArray(g.map(\.errorMessage)))
        b.append(g.map(\.createdAt)); b.append(g.map(\.updatedAt)); b.append(g.map(\.lastEventID))
        b.append(p.map(\.key.source)); b.append(p.map(\.key.generationID)); b.append(p.map(\.at))
        b.append(j.first?.runAt ?? 0); b.append(r.map(\.version)); b.append(r.map(\.name)); b.append(r.map(\.definition))
        b.append(j.map(\.id)); b.append(j.map(\.source)); b.append(j.map(\.generationID)); b.append(j.map(\.route.name))
        b.append(j.map(\.route.version)); b.append(j.map(\.eventID)); b.append(j.map(\.runAt)); b.append(j.map(\.createdAt))
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int.self) }
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
