import PipehookStore
import PostgresNIO

/// Leases of the services that run on one instance at a time, set and expired by the server's
/// clock like job leases (`ExclusiveService`).
extension PostgresStore {
    /// Takes `name` for `holder` for `milliseconds` if it is free (never held, released, or
    /// expired by the server's clock) or already this holder's; true when taken.
    public func takeExclusive(_ name: String, holder: String, milliseconds: Int64) async throws(StoreError) -> Bool {
        try await write("take the \(name) lease") { db, logger in
            try await db.query("""
                INSERT INTO exclusive_leases (name, holder, until_ms) VALUES (\(name), \(holder), \(unescaped: Self.serverNow) + \(milliseconds))
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                WHERE exclusive_leases.until_ms < \(unescaped: Self.serverNow) OR exclusive_leases.holder = excluded.holder
                RETURNING 1
                """, logger: logger).collect().count == 1
        }
    }

    /// Extends this holder's lease from the server's now; false when it has expired or another
    /// holder has it (the holder must have stopped already: it stops before the lease can end).
    public func renewExclusive(_ name: String, holder: String, milliseconds: Int64) async throws(StoreError) -> Bool {
        try await write("renew the \(name) lease") { db, logger in
            try await db.query("""
                UPDATE exclusive_leases SET until_ms = \(unescaped: Self.serverNow) + \(milliseconds)
                WHERE name = \(name) AND holder = \(holder) AND until_ms >= \(unescaped: Self.serverNow)
                RETURNING 1
                """, logger: logger).collect().count == 1
        }
    }

    /// Gives the lease up (a graceful stop), so another instance can take it at once.
    public func releaseExclusive(_ name: String, holder: String) async throws(StoreError) {
        _ = try await write("release the \(name) lease") { db, logger in
            try await db.query("DELETE FROM exclusive_leases WHERE name = \(name) AND holder = \(holder)", logger: logger)
        }
    }
}
