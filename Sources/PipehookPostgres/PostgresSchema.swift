import PipehookStore
import PostgresNIO

/// Migrations, applied in order at open under an advisory lock, so instances starting together
/// apply each one exactly once. Same tables, columns and ids as the SQLite store's migrations.
/// Never edit a shipped migration: add a new one.
enum PostgresSchema {
    struct Migration: Sendable {
        var id: String
        /// One statement each: the extended query protocol runs one at a time.
        var statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(id: "v1-intake", statements: [
            // Delivery ids seen within the dedup window (SPEC §3.3a).
            """
            CREATE TABLE deliveries (
                source TEXT NOT NULL,
                delivery_id TEXT NOT NULL,
                received_at BIGINT NOT NULL,
                PRIMARY KEY (source, delivery_id)
            )
            """,
            "CREATE INDEX deliveries_received_at ON deliveries (received_at)",
            """
            CREATE TABLE generations (
                source TEXT NOT NULL,
                generation_id TEXT NOT NULL,
                status TEXT NOT NULL,
                output_url TEXT,
                error_message TEXT,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                last_event_id TEXT NOT NULL,
                PRIMARY KEY (generation_id, source)
            )
            """,
            "CREATE INDEX generations_status_updated ON generations (status, updated_at)",
            "CREATE INDEX generations_updated ON generations (updated_at)",
            // Every received event, whatever it did: the generation's timeline.
            """
            CREATE TABLE events (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id TEXT NOT NULL,
                source TEXT NOT NULL,
                origin TEXT NOT NULL,
                generation_id TEXT NOT NULL,
                status TEXT NOT NULL,
                previous_status TEXT,
                transition TEXT NOT NULL,
                output_url TEXT,
                error_message TEXT,
                received_at BIGINT NOT NULL,
                signed_at BIGINT NOT NULL,
                raw BYTEA NOT NULL,
                UNIQUE (source, event_id)
            )
            """,
            "CREATE INDEX events_generation ON events (source, generation_id, seq)",
            // Signed bodies no format could read, kept raw for `pipehook reprocess`.
            """
            CREATE TABLE unrecognized (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                source TEXT NOT NULL,
                delivery_id TEXT NOT NULL,
                received_at BIGINT NOT NULL,
                signed_at BIGINT NOT NULL,
                reason TEXT NOT NULL,
                raw BYTEA NOT NULL,
                reprocessed_at BIGINT,
                UNIQUE (source, delivery_id)
            )
            """,
        ]),
        Migration(id: "v2-jobs", statements: [
            "ALTER TABLE events ADD COLUMN event_type TEXT NOT NULL DEFAULT ''",
            // One route run per generation (transactional outbox: inserted with the transition).
            """
            CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                generation_id TEXT NOT NULL,
                route TEXT NOT NULL,
                event_id TEXT NOT NULL,
                state TEXT NOT NULL,
                next_step BIGINT NOT NULL DEFAULT 0,
                attempts BIGINT NOT NULL DEFAULT 0,
                run_at BIGINT NOT NULL,
                lease_owner TEXT,
                lease_until BIGINT,
                artifact_file TEXT,
                artifact_sha256 TEXT,
                artifact_bytes BIGINT,
                last_error TEXT,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                replay BOOLEAN NOT NULL DEFAULT false
            )
            """,
            // One job per (generation, route) from transitions, whatever crashes or races;
            // `pipehook replay` adds extra runs on purpose.
            "CREATE UNIQUE INDEX jobs_once ON jobs (generation_id, source, route) WHERE NOT replay",
            "CREATE INDEX jobs_state_run_at ON jobs (state, run_at)",
            // Every attempt of every step, kept with the job.
            """
            CREATE TABLE attempts (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job_id TEXT NOT NULL,
                step BIGINT NOT NULL,
                step_kind TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                started_at BIGINT NOT NULL,
                ended_at BIGINT,
                outcome TEXT NOT NULL,
                summary TEXT,
                exit_code BIGINT,
                http_status BIGINT,
                output BYTEA
            )
            """,
            "CREATE INDEX attempts_job ON attempts (job_id, id)",
        ]),
        Migration(id: "v3-polls", statements: [
            // Reconciliation (SPEC §7): generations tracked or found stuck, and when to poll them.
            """
            CREATE TABLE polls (
                source TEXT NOT NULL,
                generation_id TEXT NOT NULL,
                tracked BOOLEAN NOT NULL DEFAULT false,
                state TEXT NOT NULL DEFAULT 'active',
                next_poll_at BIGINT NOT NULL,
                last_polled_at BIGINT,
                last_result TEXT,
                failures BIGINT NOT NULL DEFAULT 0,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (generation_id, source)
            )
            """,
            "CREATE INDEX polls_due ON polls (state, next_poll_at)",
        ]),
        Migration(id: "v4-fenced-pinned-jobs", statements: [
            // Fencing token: incremented by every claim; a holder's writes carry it (SPEC §3.5).
            "ALTER TABLE jobs ADD COLUMN fence BIGINT NOT NULL DEFAULT 0",
            // The route version the job was created with; NULL for jobs older than this.
            "ALTER TABLE jobs ADD COLUMN route_version TEXT",
            // Every route version a job was pinned to, as written (`${VAR}` unexpanded: no secrets).
            """
            CREATE TABLE route_versions (
                version TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                definition TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
        ]),
        Migration(id: "v5-exclusive-leases", statements: [
            // Services that run on one instance at a time (reconciliation): who holds each, and until
            // when by the server's clock (SPEC §9). A lease, not a session lock: a session the server
            // ends does not free it before its holder has stopped.
            """
            CREATE TABLE exclusive_leases (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                until_ms BIGINT NOT NULL
            )
            """,
        ]),
        Migration(id: "v6-idempotency-keys", statements: [
            // Creates through pipehook (SPEC §7): a key is recorded before the API is called, so a
            // repeat never makes a second generation.
            """
            CREATE TABLE idempotency_keys (
                key TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                digest TEXT NOT NULL,
                generation_id TEXT,
                answer BYTEA,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
        ]),
        // Lists filtered by source, newest first, without scanning the others' rows (issue 14).
        Migration(id: "v7-generations-by-source", statements: [
            "CREATE INDEX generations_source_updated ON generations (source, updated_at)",
        ]),
        // A generation's jobs, and the page's filters by job state and route (issue 14).
        Migration(id: "v8-jobs-by-generation", statements: [
            "CREATE INDEX jobs_generation ON jobs (generation_id, source, state, route)",
        ]),
        // The page's charts read the last hour and day by these (issue 14).
        Migration(id: "v9-activity-by-time", statements: [
            "CREATE INDEX events_received_at ON events (received_at)",
            "CREATE INDEX unrecognized_received_at ON unrecognized (received_at)",
            "CREATE INDEX attempts_started_at ON attempts (started_at)",
        ]),
    ]

    /// Applies what is missing in one transaction. The advisory lock is keyed by the schema, so
    /// deployments in other schemas of the same database do not wait for each other; a second
    /// instance waits here, then finds everything applied.
    static func migrate(_ connection: PostgresConnection, logger: Logger, at now: Int64) async throws -> [String] {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query(
                "SELECT pg_advisory_xact_lock(hashtextextended('pipehook:migrations:' || coalesce(current_schema(), ''), 0))", logger: logger
            )
            try await connection.query("""
                CREATE TABLE IF NOT EXISTS pipehook_migrations (id TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)
                """, logger: logger)
            var applied = Set<String>()
            for try await id in try await connection.query("SELECT id FROM pipehook_migrations", logger: logger).decode(String.self) {
                applied.insert(id)
            }
            try SchemaRules.refuseNewer(applied: applied, known: migrations.map(\.id), store: "the PostgreSQL store")
            var new: [String] = []
            for migration in migrations where !applied.contains(migration.id) {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO pipehook_migrations (id, applied_at) VALUES (\(migration.id), \(now))", logger: logger
                )
                new.append(migration.id)
            }
            return new
        }
    }
}
