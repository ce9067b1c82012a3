import NIOCore
import PipehookStore
import PostgresNIO

// Idempotency keys of creates through pipehook; `IdempotencyRules` decides, this persists. A
// claim inserts first (`ON CONFLICT DO NOTHING`): two instances claiming one key at once both
// wait on the same row, and exactly one gets `.fresh`.
extension PostgresStore: CreationStore {
    public func claimIdempotencyKey(_ key: String, digest: String, at: Int64) async throws(StoreError) -> IdempotencyClaim {
        try IdempotencyRules.validate(key: key)
        return try await write("record idempotency key") { db, logger in
            let inserted = try await db.query("""
                INSERT INTO idempotency_keys (key, state, digest, created_at, updated_at) VALUES (\(key), 'pending', \(digest), \(at), \(at))
                ON CONFLICT DO NOTHING RETURNING 1
                """, logger: logger).collect()
            if !inserted.isEmpty { return .fresh }
            return IdempotencyRules.claim(existing: try await Self.idempotencyRecord(db, logger, key), digest: digest) ?? .fresh
        }
    }

    public func completeIdempotencyKey(_ key: String, generationID: String, answer: [UInt8], at: Int64) async throws(StoreError) {
        try await write("complete idempotency key") { db, logger in
            let rows = try await db.query("""
                UPDATE idempotency_keys SET state = 'created', generation_id = \(generationID), answer = \(ByteBuffer(bytes: answer)),
                    updated_at = \(at) WHERE key = \(key) RETURNING 1
                """, logger: logger).collect()
            guard rows.count == 1 else { throw StoreError(.notFound, "no idempotency key \(key)") }
        }
    }

    public func releaseIdempotencyKey(_ key: String) async throws(StoreError) {
        try await write("release idempotency key") { db, logger in
            _ = try await db.query("DELETE FROM idempotency_keys WHERE key = \(key) AND state = 'pending'", logger: logger).collect()
        }
    }

    public func idempotencyKey(_ key: String) async throws(StoreError) -> IdempotencyRecord? {
        try await read("read idempotency key") { db, logger in try await Self.idempotencyRecord(db, logger, key) }
    }

    static func idempotencyRecord(_ db: PostgresConnection, _ logger: Logger, _ key: String) async throws -> IdempotencyRecord? {
        let rows = try await db.query("""
            SELECT key, state, digest, generation_id, answer, created_at FROM idempotency_keys WHERE key = \(key)
            """, logger: logger).collect()
        guard let row = rows.first else { return nil }
        let (key, stateText, digest, generationID, answer, createdAt) = try row.decode((String, String, String, String?, ByteBuffer?, Int64).self)
        guard let state = IdempotencyRecord.State(rawValue: stateText) else {
            throw StoreError(.invalid, "unknown state '\(stateText)' in column idempotency_keys.state")
        }
        return IdempotencyRecord(
            key: key, state: state, digest: digest, generationID: generationID, answer: answer.map { Array(buffer: $0) }, createdAt: createdAt
        )
    }
}
