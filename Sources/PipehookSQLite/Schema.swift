import GRDB

/// Migrations, applied in order at open. Never edit a shipped migration: add a new one.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-intake") { db in
            // Delivery ids seen within the dedup window (SPEC §3.3a).
            try db.execute(sql: """
                CREATE TABLE deliveries (
                    source TEXT NOT NULL,
                    delivery_id TEXT NOT NULL,
                    received_at INTEGER NOT NULL,
                    PRIMARY KEY (source, delivery_id)
                ) WITHOUT ROWID;
                CREATE INDEX deliveries_received_at ON deliveries (received_at);

                CREATE TABLE generations (
                    source TEXT NOT NULL,
                    generation_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    output_url TEXT,
                    error_message TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    last_event_id TEXT NOT NULL,
                    -- generation_id first: `status GEN_ID` looks up by id alone, and one random
                    -- index per row is cheaper to write than two.
                    PRIMARY KEY (generation_id, source)
                ) WITHOUT ROWID;
                CREATE INDEX generations_status_updated ON generations (status, updated_at);
                CREATE INDEX generations_updated ON generations (updated_at);

                -- Every received event, whatever it did: the generation's timeline.
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    event_id TEXT NOT NULL,
                    source TEXT NOT NULL,
                    origin TEXT NOT NULL,
                    generation_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    previous_status TEXT,
                    transition TEXT NOT NULL,
                    output_url TEXT,
                    error_message TEXT,
                    received_at INTEGER NOT NULL,
                    signed_at INTEGER NOT NULL,
                    raw BLOB NOT NULL,
                    UNIQUE (source, event_id)
                );
                CREATE INDEX events_generation ON events (source, generation_id, seq);

                -- Signed bodies no format could read, kept raw for `pipehook reprocess`.
                CREATE TABLE unrecognized (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    source TEXT NOT NULL,
                    delivery_id TEXT NOT NULL,
                    received_at INTEGER NOT NULL,
                    signed_at INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    raw BLOB NOT NULL,
                    reprocessed_at INTEGER,
                    UNIQUE (source, delivery_id)
                );
                """)
        }
        migrator.registerMigration("v2-jobs") { db in
            try db.execute(sql: """
                ALTER TABLE events ADD COLUMN event_type TEXT NOT NULL DEFAULT '';

                -- One route run per generation (transactional outbox: inserted with the transition).
                CREATE TABLE jobs (
                    id TEXT PRIMARY KEY,
                    source TEXT NOT NULL,
                    generation_id TEXT NOT NULL,
                    route TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    state TEXT NOT NULL,
                    next_step INTEGER NOT NULL DEFAULT 0,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    run_at INTEGER NOT NULL,
                    lease_owner TEXT,
                    lease_until INTEGER,
                    artifact_file TEXT,
                    artifact_sha256 TEXT,
                    artifact_bytes INTEGER,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    -- Set by `pipehook replay`: such jobs are extra runs on purpose.
                    replay INTEGER NOT NULL DEFAULT 0
                ) WITHOUT ROWID;
                -- One job per (generation, route) from transitions, whatever crashes or races.
                CREATE UNIQUE INDEX jobs_once ON jobs (generation_id, source, route) WHERE replay = 0;
                CREATE INDEX jobs_state_run_at ON jobs (state, run_at);

                -- Every attempt of every step, kept with the job.
                CREATE TABLE attempts (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    job_id TEXT NOT NULL,
                    step INTEGER NOT NULL,
                    step_kind TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    started_at INTEGER NOT NULL,
                    ended_at INTEGER,
                    outcome TEXT NOT NULL,
                    summary TEXT,
                    exit_code INTEGER,
                    http_status INTEGER,
                    output BLOB
                );
                CREATE INDEX attempts_job ON attempts (job_id, id);
                """)
        }
        migrator.registerMigration("v3-polls") { db in
            try db.execute(sql: """
                -- Reconciliation (SPEC §7): generations tracked or found stuck, and when to poll them.
                CREATE TABLE polls (
                    source TEXT NOT NULL,
                    generation_id TEXT NOT NULL,
                    tracked INTEGER NOT NULL DEFAULT 0,
                    state TEXT NOT NULL DEFAULT 'active',
                    next_poll_at INTEGER NOT NULL,
                    last_polled_at INTEGER,
                    last_result TEXT,
                    failures INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (generation_id, source)
                ) WITHOUT ROWID;
                CREATE INDEX polls_due ON polls (state, next_poll_at);
                """)
        }
        migrator.registerMigration("v4-fenced-pinned-jobs") { db in
            try db.execute(sql: """
                -- Fencing token: incremented by every claim; a holder's writes carry it (SPEC §3.5).
                ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
                -- The route version the job was created with; NULL for jobs older than this.
                ALTER TABLE jobs ADD COLUMN route_version TEXT;

                -- Every route version a job was pinned to: its configuration as written (no secret
                -- values: `${VAR}` is kept unexpanded), so a reload or restart never strands a job.
                CREATE TABLE route_versions (
                    version TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    definition TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v5-idempotency-keys") { db in
            try db.execute(sql: """
                -- Creates through pipehook (SPEC §7): a key is recorded before the API is called,
                -- so a repeat never makes a second generation.
                CREATE TABLE idempotency_keys (
                    key TEXT PRIMARY KEY,
                    state TEXT NOT NULL,
                    digest TEXT NOT NULL,
                    generation_id TEXT,
                    answer BLOB,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
                """)
        }
        migrator.registerMigration("v6-generations-by-source") { db in
            // Lists filtered by source, newest first, without scanning the others' rows (issue 14).
            try db.execute(sql: "CREATE INDEX generations_source_updated ON generations (source, updated_at)")
        }
        migrator.registerMigration("v7-jobs-by-generation") { db in
            // A generation's jobs, and the page's filters by job state and route, by index: the
            // unique jobs_once covers only jobs that are not replays, so it cannot serve them.
            try db.execute(sql: "CREATE INDEX jobs_generation ON jobs (generation_id, source, state, route)")
        }
        migrator.registerMigration("v8-activity-by-time") { db in
            // The page's charts read the last hour and day by these (issue 14). Times only grow, so
            // each insert appends at the index's end.
            try db.execute(sql: """
                CREATE INDEX events_received_at ON events (received_at);
                CREATE INDEX unrecognized_received_at ON unrecognized (received_at);
                CREATE INDEX attempts_started_at ON attempts (started_at);
                """)
        }
        migrator.registerMigration("v9-events-by-seq") { db in
            // The charts find a window's events by seq (TimeOrderedRows): the index on
            // received_at cost every delivery one more write, 5–9% of its CPU.
            try db.execute(sql: "DROP INDEX events_received_at")
        }
        return migrator
    }
}
