import GRDB
import PipehookLifecycle
import PipehookStore

extension SQLiteStore: PollStore {
    private static let openStatuses = PollRules.openStatusesSQL

    public func track(source: String, generationID: String, at: Int64) async throws(StoreError) -> TrackOutcome {
        try await write("track generation") { db in
            let statusText = try String.fetchOne(
                db, sql: "SELECT status FROM generations WHERE generation_id = ? AND source = ?", arguments: [generationID, source]
            )
            let status = try statusText.map { try Self.status($0, column: "generations.status") }
            let existing = try Row.fetchOne(
                db, sql: "SELECT tracked, state FROM polls WHERE generation_id = ? AND source = ?", arguments: [generationID, source]
            )
            let result = PollRules.track(
                status: status, trackedAndActive: existing.map { $0["tracked"] == true && $0["state"] == PollRecord.State.active.rawValue } ?? false
            )
            guard result == .tracked else { return TrackOutcome(result: result, source: source, status: status) }
            // New, or found stuck before, or stopped after a 404: (re)start polling now.
            try db.execute(sql: """
                INSERT INTO polls (source, generation_id, tracked, state, next_poll_at, failures, created_at, updated_at)
                VALUES (?, ?, 1, 'active', ?, 0, ?, ?)
                ON CONFLICT (generation_id, source) DO UPDATE SET
                    tracked = 1, state = 'active', next_poll_at = excluded.next_poll_at, failures = 0, updated_at = excluded.updated_at
                """, arguments: [source, generationID, at, at, at])
            return TrackOutcome(result: .tracked, source: source, status: status)
        }
    }

    public func pollCandidates(now: Int64, idleSince: Int64, limit: Int) async throws(StoreError) -> [PollCandidate] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT source, generation_id, failures, due FROM (
                    SELECT p.source, p.generation_id, p.failures, p.next_poll_at AS due FROM polls p
                    LEFT JOIN generations g ON g.generation_id = p.generation_id AND g.source = p.source
                    WHERE p.state = 'active' AND p.next_poll_at <= ?
                      AND (g.status IS NULL OR g.status IN \(Self.openStatuses))
                    UNION ALL
                    SELECT g.source, g.generation_id, 0 AS failures, g.updated_at AS due FROM generations g
                    WHERE g.status IN \(Self.openStatuses) AND g.updated_at <= ?
                      AND NOT EXISTS (SELECT 1 FROM polls p WHERE p.generation_id = g.generation_id AND p.source = g.source)
                ) ORDER BY due LIMIT ?
                """, arguments: [now, idleSince, limit]
            ).map { PollCandidate(source: $0["source"], generationID: $0["generation_id"], failures: $0["failures"]) }
        }
    }

    public func recordPoll(_ candidate: PollCandidate, result: PollResult, at: Int64) async throws(StoreError) {
        let (state, next): (PollRecord.State, Int64) = switch result.next {
        case .pollAt(let time): (.active, time)
        case .stop: (.stopped, at)
        }
        try await write("record poll") { db in
            try db.execute(sql: """
                INSERT INTO polls (source, generation_id, tracked, state, next_poll_at, last_polled_at, last_result, failures,
                                   created_at, updated_at)
                VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (generation_id, source) DO UPDATE SET
                    state = CASE WHEN polls.state = 'done' THEN 'done' ELSE excluded.state END, next_poll_at = excluded.next_poll_at, last_polled_at = excluded.last_polled_at,
                    last_result = excluded.last_result,
                    failures = CASE WHEN ? THEN polls.failures + 1 ELSE 0 END, updated_at = excluded.updated_at
                """, arguments: [
                    candidate.source, candidate.generationID, state.rawValue, next, at, result.summary, result.failed ? 1 : 0,
                    at, at, result.failed,
                ])
        }
    }

    public func polling(generationID: String) async throws(StoreError) -> [PollRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM polls WHERE generation_id = ? ORDER BY source", arguments: [generationID]).map { row in
                let state: String = row["state"]
                return PollRecord(
                    source: row["source"], generationID: row["generation_id"], tracked: row["tracked"],
                    state: PollRecord.State(rawValue: state) ?? .active, nextPollAt: row["next_poll_at"],
                    lastPolledAt: row["last_polled_at"], lastResult: row["last_result"], failures: row["failures"],
                    createdAt: row["created_at"]
                )
            }
        }
    }
}
