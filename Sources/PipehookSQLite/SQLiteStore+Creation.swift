import Foundation
import GRDB
import PipehookStore

// Idempotency keys of creates through pipehook; `IdempotencyRules` decides, this persists.
extension SQLiteStore: CreationStore {
    public func claimIdempotencyKey(_ key: String, digest: String, at: Int64) async throws(StoreError) -> IdempotencyClaim {
        try IdempotencyRules.validate(key: key)
        return try await write("record idempotency key") { db in
            if let claim = IdempotencyRules.claim(existing: try Self.idempotencyRecord(db, key), digest: digest) { return claim }
            try db.execute(sql: """
                INSERT INTO idempotency_keys (key, state, digest, created_at, updated_at) VALUES (?, 'pending', ?, ?, ?)
                """, arguments: [key, digest, at, at])
            return .fresh
        }
    }

    public func completeIdempotencyKey(_ key: String, generationID: String, answer: [UInt8], at: Int64) async throws(StoreError) {
        try await write("complete idempotency key") { db in
            try db.execute(sql: """
                UPDATE idempotency_keys SET state = 'created', generation_id = ?, answer = ?, updated_at = ? WHERE key = ?
                """, arguments: [generationID, Data(answer), at, key])
            guard db.changesCount == 1 else { throw StoreError(.notFound, "no idempotency key \(key)") }
        }
    }

    public func releaseIdempotencyKey(_ key: String) async throws(StoreError) {
        try await write("release idempotency key") { db in
            try db.execute(sql: "DELETE FROM idempotency_keys WHERE key = ? AND state = 'pending'", arguments: [key])
        }
    }

    public func idempotencyKey(_ key: String) async throws(StoreError) -> IdempotencyRecord? {
        try await read { db in try Self.idempotencyRecord(db, key) }
    }

    static func idempotencyRecord(_ db: Database, _ key: String) throws -> IdempotencyRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM idempotency_keys WHERE key = ?", arguments: [key]) else { return nil }
        let stateText: String = row["state"]
        guard let state = IdempotencyRecord.State(rawValue: stateText) else {
            throw StoreError(.invalid, "unknown state '\(stateText)' in column idempotency_keys.state")
        }
        let answer: Data? = row["answer"]
        return IdempotencyRecord(
            key: row["key"], state: state, digest: row["digest"], generationID: row["generation_id"], answer: answer.map { Array($0) },
            createdAt: row["created_at"]
        )
    }
}
