import PipehookLifecycle
import PipehookStore
import PostgresNIO

extension PostgresStore: PollStore {
    private static let openStatuses = PollRules.openStatusesSQL

    /// Under the generation's lock, like `ingest`: a terminal event committing meanwhile is seen.
    public func track(source: String, generationID: String, at: Int64) async throws(StoreError) -> TrackOutcome {
        try await write("track generation") { db, logger in
            try await Self.lockGeneration(source: source, generationID: generationID, db, logger)
            let statusText = try await db.query(
                "SELECT status FROM generations WHERE generation_id = \(generationID) AND source = \(source)", logger: logger
            ).collect().first?.decode(String.self)
            let status = try statusText.map { try Self.status($0, column: "generations.status") }
            let existing = try await db.query(
                "SELECT tracked, state FROM polls WHERE generation_id = \(generationID) AND source = \(source)", logger: logger
            ).collect().first?.decode((Bool, String).self)
            let result = PollRules.track(status: status, trackedAndActive: existing.map { $0.0 && $0.1 == PollRecord.State.active.rawValue } ?? false)
            guard result == .tracked else { return TrackOutcome(result: result, source: source, status: status) }
            // New, or found stuck before, or stopped after a 404: (re)start polling now.
            try await db.query("""
                INSERT INTO polls (source, generation_id, tracked, state, next_poll_at, failures, created_at, updated_at)
                VALUES (\(source), \(generationID), true, 'active', \(at), 0, \(at), \(at))
                ON CONFLICT (generation_id, source) DO UPDATE SET
                    tracked = true, state = 'active', next_poll_at = excluded.next_poll_at, failures = 0, updated_at = excluded.updated_at
                """, logger: logger)
            return TrackOutcome(result: .tracked, source: source, status: status)
        }
    }

    public func pollCandidates(now: Int64, idleSince: Int64, limit: Int) async throws(StoreError) -> [PollCandidate] {
        try await read("read poll candidates") { db, logger in
            try await db.query("""
                SELECT source, generation_id, failures FROM (
                    SELECT p.source, p.generation_id, p.failures, p.next_poll_at AS due FROM polls p
                    LEFT JOIN generations g ON g.generation_id = p.generation_id AND g.source = p.source
                    WHERE p.state = 'active' AND p.next_poll_at <= \(now)
                      AND (g.status IS NULL OR g.status IN \(unescaped: Self.openStatuses))
                    UNION ALL
                    SELECT g.source, g.generation_id, 0 AS failures, g.updated_at AS due FROM generations g
                    WHERE g.status IN \(unescaped: Self.openStatuses) AND g.updated_at <= \(idleSince)
                      AND NOT EXISTS (SELECT 1 FROM polls p WHERE p.generation_id = g.generation_id AND p.source = g.source)
                ) AS candidates ORDER BY due LIMIT \(limit)
                """, logger: logger).collect().map { row in
                let (source, generationID, failures) = try row.decode((String, String, Int).self)
                return PollCandidate(source: source, generationID: generationID, failures: failures)
            }
        }
    }

    public func recordPoll(_ candidate: PollCandidate, result: PollResult, at: Int64) async throws(StoreError) {
        let (state, next): (PollRecord.State, Int64) = switch result.next {
        case .pollAt(let time): (.active, time)
        case .stop: (.stopped, at)
        }
        try await write("record poll") { db, logger in
            try await Self.lockGeneration(source: candidate.source, generationID: candidate.generationID, db, logger)
            try await db.query("""
                INSERT INTO polls (source, generation_id, tracked, state, next_poll_at, last_polled_at, last_result, failures,
                                   created_at, updated_at)
                VALUES (\(candidate.source), \(candidate.generationID), false, \(state.rawValue), \(next), \(at), \(result.summary),
                        \(result.failed ? 1 : 0), \(at), \(at))
                ON CONFLICT (generation_id, source) DO UPDATE SET
                    state = CASE WHEN polls.state = 'done' THEN 'done' ELSE excluded.state END,
                    next_poll_at = excluded.next_poll_at, last_polled_at = excluded.last_polled_at,
                    last_result = excluded.last_result,
                    failures = CASE WHEN \(result.failed) THEN polls.failures + 1 ELSE 0 END, updated_at = excluded.updated_at
                """, logger: logger)
        }
    }

    public func polling(generationID: String) async throws(StoreError) -> [PollRecord] {
        try await read("read polling") { db, logger in
            try await db.query("""
                SELECT source, generation_id, tracked, state, next_poll_at, last_polled_at, last_result, failures, created_at
                FROM polls WHERE generation_id = \(generationID) ORDER BY source
                """, logger: logger).collect().map { row in
                let (source, generationID, tracked, state, nextPollAt, lastPolledAt, lastResult, failures, createdAt) =
                    try row.decode((String, String, Bool, String, Int64, Int64?, String?, Int, Int64).self)
                return PollRecord(
                    source: source, generationID: generationID, tracked: tracked, state: PollRecord.State(rawValue: state) ?? .active,
                    nextPollAt: nextPollAt, lastPolledAt: lastPolledAt, lastResult: lastResult, failures: failures, createdAt: createdAt
                )
            }
        }
    }
}
