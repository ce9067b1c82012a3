import Foundation
import GRDB
import PipehookFormats
import PipehookLifecycle
import PipehookPostgres
import PipehookSQLite
import PipehookStore
import PostgresNIO
import Synchronization
import Testing

/// Every store implementation, as the conformance suite runs it: SQLite and the in-memory store
/// always, PostgreSQL when `PIPEHOOK_TEST_POSTGRES_URL` is set (always on CI).
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres, memory

    static var available: [StoreKind] { PostgresTestDatabase.url == nil ? [.sqlite, .memory] : allCases }

    var testDescription: String { rawValue }

    /// A fresh, empty store for one test (a new file, or a new schema), opened by `open`, which
    /// can be called again to reopen it (a restarted process); everything is removed afterwards.
    func with<T: Sendable>(_ body: (StoreHarness) async throws -> T) async throws -> T {
        switch self {
        case .sqlite:
            let dir = TempDir()
            let path = dir.path + "/db.sqlite"
            let clock = ManualClock()
            let harness = StoreHarness(
                kind: self,
                open: { try SQLiteStore(path: path, options: clock.sqliteOptions) },
                close: { _ in },
                now: { clock.now() },
                elapse: { clock.advance(milliseconds: $0) },
                dropEvents: {
                    let queue = try DatabaseQueue(path: path)
                    try await queue.write { db in try db.execute(sql: "DELETE FROM events") }
                },
                recordMigration: { id in
                    let queue = try DatabaseQueue(path: path)
                    try await queue.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES (?)", arguments: [id]) }
                }
            )
            return try await body(harness)
        case .memory:
            let clock = ManualClock()
            // One store for the whole test: reopening it is a restart that keeps its contents.
            let store = MemoryStore(clock: { clock.now() })
            let harness = StoreHarness(
                kind: self, open: { store }, close: { _ in }, now: { clock.now() },
                elapse: { clock.advance(milliseconds: $0) }, dropEvents: { store.removeAllEvents() }
            )
            return try await body(harness)
        case .postgres:
            return try await TestSchema.with { schema in
                let opened = Opened()
                let harness = StoreHarness(
                    kind: self,
                    open: {
                        let store = try await schema.open()
                        opened.add(store)
                        return store
                    },
                    close: { store in await (store as? PostgresStore)?.close() },
                    now: { nowMilliseconds() },
                    // The server's clock cannot be moved: wait for it.
                    elapse: { try await Task.sleep(for: .milliseconds($0)) },
                    dropEvents: {
                        let store = try await schema.open(migrate: false)
                        defer { Task { await store.close() } }
                        _ = try await store.client.query("DELETE FROM events", logger: Fixture.logger).collect()
                    },
                    recordMigration: { id in
                        let store = try await schema.open(migrate: false)
                        defer { Task { await store.close() } }
                        _ = try await store.client.query(
                            "INSERT INTO pipehook_migrations (id, applied_at) VALUES (\(id), 0)", logger: Fixture.logger
                        ).collect()
                    }
                )
                do {
                    let value = try await body(harness)
                    await opened.closeAll()
                    return value
                } catch {
                    await opened.closeAll()
                    throw error
                }
            }
        }
    }

    /// PostgreSQL stores a test opened, closed at its end whatever happened.
    final class Opened: @unchecked Sendable {
        private let lock = NSLock()
        private var stores: [PostgresStore] = []
        func add(_ store: PostgresStore) { lock.withLock { stores.append(store) } }
        func closeAll() async {
            for store in lock.withLock({ stores }) { await store.close() }
        }
    }
}

struct StoreHarness: Sendable {
    let kind: StoreKind
    let open: @Sendable () async throws -> any Storage
    let close: @Sendable (any Storage) async -> Void
    /// The store's clock now (near enough for the server's).
    let now: @Sendable () -> Int64
    /// Lets `milliseconds` pass on the store's clock.
    let elapse: @Sendable (_ milliseconds: Int64) async throws -> Void
    /// Deletes every stored event behind the store's back (a fault no API call makes: a job's
    /// event pruned).
    let dropEvents: @Sendable () async throws -> Void
    /// Records a migration as applied behind the store's back (a newer version's); nil for the
    /// memory store, which has no schema.
    var recordMigration: (@Sendable (String) async throws -> Void)? = nil
}

func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// The rules of SPEC §3 and every job transition, once, over every store.
@Suite struct StoreConformanceTests {
    /// Issue 14: paging through every generation, filtered or not, in the one order of
    /// `GenerationQuery` — each generation exactly once, ties on `updated_at` broken by id bytes
    /// (non-ASCII included) and then source.
    @Test(arguments: StoreKind.available)
    func generationsPageInOneOrder(_ kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let ids = ["g-a", "g-b", "g-é", "g-z", "G-upper", "g-a2", "g-0"]
            var expected: [GenerationRecord] = []
            for (index, id) in ids.enumerated() {
                for source in ["pipevideo", "other"] where index % 3 != 0 || source == "pipevideo" {
                    // Three distinct times, so most pages break ties.
                    let at = Int64(1_000 + (index % 3) * 10)
                    let status: GenerationStatusText = index % 2 == 0 ? .completed : .queued
                    var delivery = Fixture.delivery(id: "\(source)-\(id)", generation: id, status: status, at: at)
                    delivery.source = source
                    _ = try await store.ingest(delivery)
                    expected.append(GenerationRecord(
                        source: source, generationID: id, status: status == .completed ? .completed : .queued,
                        outputURL: nil, errorMessage: nil, createdAt: at, updatedAt: at
                    ))
                }
            }
            expected.sort(by: GenerationQuery.precedes)
            func pages(_ query: GenerationQuery) async throws -> [[GenerationRecord]] {
                var query = query, pages: [[GenerationRecord]] = []
                while true {
                    let page = try await store.generations(query)
                    if page.isEmpty { return pages }
                    pages.append(page)
                    query.after = GenerationCursor(after: page.last!)
                }
            }
            func keys(_ records: [GenerationRecord]) -> [String] { records.map { "\($0.updatedAt) \($0.generationID) \($0.source)" } }
            let all = try await pages(GenerationQuery(limit: 3))
            #expect(all.dropLast().allSatisfy { $0.count == 3 })
            #expect(keys(all.flatMap { $0 }) == keys(expected))
            for query in [GenerationQuery(status: .completed, limit: 2), GenerationQuery(source: "other", limit: 2), GenerationQuery(status: .queued, source: "pipevideo", limit: 1)] {
                let paged = try await pages(query)
                #expect(keys(paged.flatMap { $0 }) == keys(expected.filter(query.admits)), "\(query)")
            }
            // A cursor survives its trip through a URL.
            let cursor = GenerationCursor(after: expected[4])
            let decoded = try #require(GenerationCursor(token: cursor.token))
            #expect(keys(try await store.generations(GenerationQuery(after: decoded, limit: 100))) == keys(Array(expected.dropFirst(5))))
        }
    }

    /// Issue 14's job filters: generations with a job of a route, in a state, or both, paged in
    /// the one order; the same answer from every store, whichever way it reads them.
    @Test(arguments: StoreKind.available)
    func generationsFilterByTheirJobs(_ kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var all: [GenerationRecord] = []
            for index in 0..<9 {
                var delivery = Fixture.delivery(id: "m\(index)", generation: "g\(index)", status: .completed, at: Int64(10_000 + index / 2))
                // g0, g3, g6 have no jobs; the rest archive, and every other one notifies too.
                if index % 3 != 0 {
                    delivery.routes = [RoutePin(name: "archive", version: "", definition: "")]
                    if index % 2 == 0 { delivery.routes.append(RoutePin(name: "notify", version: "", definition: "")) }
                }
                _ = try await store.ingest(delivery)
            }
            // Some succeed, some die, one stays running; the rest wait. Decided by the job itself, not
            // by the order of the claim (which stores are free to choose).
            let claimed = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 100)
            for job in claimed {
                let attempt = try await store.startAttempt(job.lease, step: 0, stepKind: "exec", attempt: 1)
                switch (Int(job.job.generationID.dropFirst())! + (job.job.route == "notify" ? 1 : 0)) % 4 {
                case 0: _ = try await store.finishAttempt(attempt, lease: job.lease, result: AttemptResult(outcome: .succeeded, summary: "ok"), disposition: .advance(artifact: nil, done: true))
                case 1: _ = try await store.finishAttempt(attempt, lease: job.lease, result: AttemptResult(outcome: .dead, summary: "no"), disposition: .dead(error: "no"))
                case 2: _ = try await store.finishAttempt(attempt, lease: job.lease, result: AttemptResult(outcome: .failed, summary: "later"), disposition: .retry(delayMilliseconds: 60_000, error: "later"))
                default: break  // still running
                }
            }
            for page in [try await store.generations(GenerationQuery(limit: 100))] { all = page }
            var jobsByGeneration: [String: [JobRecord]] = [:]
            for record in all { jobsByGeneration[record.generationID] = try await store.jobs(generationID: record.generationID, source: record.source) }
            let queries: [GenerationQuery] = JobState.allCases.map { GenerationQuery(jobState: $0, limit: 2) }
                + [GenerationQuery(route: "notify", limit: 2), GenerationQuery(route: "archive", jobState: .dead, limit: 2),
                   GenerationQuery(route: "notify", jobState: .succeeded, limit: 2), GenerationQuery(route: "nope", limit: 2),
                   GenerationQuery(route: "notify\u{0}x", limit: 2), GenerationQuery(source: "pipevideo\u{0}x", limit: 2),
                   GenerationQuery(status: .queued, jobState: .pending, limit: 2)]
            var nonEmpty = 0
            for query in queries {
                var paged: [GenerationRecord] = [], cursor = query
                while true {
                    let page = try await store.generations(cursor)
                    if page.isEmpty { break }
                    #expect(page.count <= 2)
                    paged += page
                    cursor.after = GenerationCursor(after: page.last!)
                }
                let expected = all.filter { query.admits($0) && (jobsByGeneration[$0.generationID] ?? []).contains(where: query.admits) }
                #expect(paged.map(\.generationID) == expected.map(\.generationID), "\(query)")
                if !expected.isEmpty { nonEmpty += 1 }
            }
            // The table is not vacuous: most filters match something, some match nothing.
            #expect(nonEmpty >= 6)
        }
    }

    /// Issue 14's charts: what a window of time saw, by bucket, the same from every store.
    @Test(arguments: StoreKind.available)
    func activityCountsEventsUnrecognizedAndAttemptsByBucket(_ kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let now = nowMilliseconds()
            // Two minutes ago (twice: applied, then the same status again), ten minutes ago, two
            // hours ago (outside the hour).
            let times: [(String, String, GenerationStatusText, Int64)] = [
                ("a1", "ga", .queued, now - 120_000), ("a2", "ga", .queued, now - 119_000), ("a3", "ga", .completed, now - 600_000),
                ("b1", "gb", .failed, now - 7_200_000),
            ]
            for (id, generation, status, at) in times {
                var delivery = Fixture.delivery(id: id, generation: generation, status: status, at: at)
                if id == "a3" { delivery.routes = [RoutePin(name: "archive", version: "", definition: ""), RoutePin(name: "notify", version: "", definition: "")] }
                _ = try await store.ingest(delivery)
            }
            _ = try await store.ingest(IncomingDelivery(source: "pipevideo", deliveryID: "u1", receivedAt: now - 61_000, signedAt: 1, body: Array("??".utf8), content: .unrecognized(reason: "not JSON")))
            // One attempt succeeds, one fails (a retry), one is still running.
            let claimed = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 10)
            #expect(claimed.count == 2)
            let first = try await store.startAttempt(claimed[0].lease, step: 0, stepKind: "exec", attempt: 1)
            _ = try await store.finishAttempt(first, lease: claimed[0].lease, result: AttemptResult(outcome: .succeeded, summary: "ok"), disposition: .advance(artifact: nil, done: true))
            let second = try await store.startAttempt(claimed[1].lease, step: 0, stepKind: "exec", attempt: 1)
            _ = try await store.finishAttempt(second, lease: claimed[1].lease, result: AttemptResult(outcome: .failed, summary: "later"), disposition: .retry(delayMilliseconds: 0, error: "later"))
            let again = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 10)
            _ = try await store.startAttempt(try #require(again.first).lease, step: 0, stepKind: "exec", attempt: 2)
            let started = try await store.attempts(jobID: claimed[0].job.id) + store.attempts(jobID: claimed[1].job.id)

            let window = ActivityWindow.last(60, of: 60_000, endingAt: nowMilliseconds())
            let activity = try await store.activity(window)
            func bucket(_ at: Int64) -> Int { window.bucket(of: at)! }
            // One row per bucket, transition and status (two rows even when both fall in one minute).
            let expectedEvents = [
                Activity.EventCount(bucket: bucket(now - 120_000), transition: .applied, status: .queued, count: 1),
                Activity.EventCount(bucket: bucket(now - 119_000), transition: .same, status: .queued, count: 1),
                Activity.EventCount(bucket: bucket(now - 600_000), transition: .applied, status: .completed, count: 1),
            ]
            var unrecognized = Array(repeating: 0, count: 60)
            unrecognized[bucket(now - 61_000)] = 1
            let succeededAt = try #require(started.first { $0.outcome == .succeeded }).startedAt
            let failedAt = try #require(started.first { $0.outcome == .failed }).startedAt
            let expected = Activity(
                window: window, events: expectedEvents, unrecognized: unrecognized,
                attempts: [Activity.AttemptCount(bucket: bucket(succeededAt), outcome: .succeeded, count: 1), Activity.AttemptCount(bucket: bucket(failedAt), outcome: .failed, count: 1)],
                attemptDurations: started.filter { $0.outcome != .running }.map { $0.endedAt! - $0.startedAt }
            ).normalized()
            #expect(activity == expected)
            #expect(activity.eventSeries { $0.transition == .applied }.reduce(0, +) == 2)
            #expect(activity.attemptSeries(.succeeded).reduce(0, +) == 1)
            // The day by hour sees the event two hours ago too.
            let day = try await store.activity(ActivityWindow.last(24, of: 3_600_000, endingAt: nowMilliseconds()))
            #expect(day.events.map(\.count).reduce(0, +) == 4)
        }
    }

    /// The page's histories in one call equal what the one-by-one calls answer, in every store.
    @Test(arguments: StoreKind.available)
    func historiesOfAPageInOneCall(_ kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            for (index, id) in ["h1", "h2", "h3"].enumerated() {
                _ = try await store.ingest(Fixture.delivery(id: "\(id)-q", generation: id, status: .queued, at: Int64(1_000 + index)))
                var done = Fixture.delivery(id: "\(id)-c", generation: id, status: .completed, at: Int64(2_000 + index))
                if id != "h3" { done.routes = [RoutePin(name: "archive", version: "", definition: ""), RoutePin(name: "notify", version: "", definition: "")] }
                _ = try await store.ingest(done)
            }
            var other = Fixture.delivery(id: "o-q", generation: "h1", status: .failed, at: 3_000)
            other.source = "other"
            _ = try await store.ingest(other)
            for claimed in try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 10) {
                let attempt = try await store.startAttempt(claimed.lease, step: 0, stepKind: "exec", attempt: 1)
                _ = try await store.finishAttempt(attempt, lease: claimed.lease, result: AttemptResult(outcome: .failed, summary: "later", output: Array("out".utf8)), disposition: .retry(delayMilliseconds: 0, error: "later"))
            }
            let keys = ["h2", "h1", "h3", "nope", "h1"].map { GenerationKey(source: "pipevideo", generationID: $0) } + [GenerationKey(source: "other", generationID: "h1")]
            let together = try await store.histories(keys)
            #expect(together == (try await store.historiesOneByOne(keys)))
            let h1 = try #require(together[GenerationKey(source: "pipevideo", generationID: "h1")])
            #expect(h1.timeline.map(\.eventID) == ["h1-q", "h1-c"])
            #expect(h1.jobs.map(\.job.route).sorted() == ["archive", "notify"] && h1.jobs.allSatisfy { $0.attempts.map(\.output) == [Array("out".utf8)] })
            #expect(together[GenerationKey(source: "other", generationID: "h1")]?.timeline.map(\.eventID) == ["o-q"])
            #expect(together[GenerationKey(source: "pipevideo", generationID: "nope")] == GenerationHistory(timeline: [], jobs: []))
            #expect(together[GenerationKey(source: "pipevideo", generationID: "h3")]?.jobs.isEmpty == true)
        }
    }

    /// Issue 14's search: a job by its id, and the generation an event id (a delivery id) is
    /// about, one per source that has it.
    @Test(arguments: StoreKind.available)
    func jobsAndEventsAreFoundByTheirIDs(_ kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var delivery = Fixture.delivery(id: "msg_search", generation: "gen_search", status: .completed, at: 5_000)
            delivery.routes = [RoutePin(name: "archive", version: "", definition: "")]
            _ = try await store.ingest(delivery)
            var other = Fixture.delivery(id: "msg_search", generation: "gen_elsewhere", status: .queued, at: 5_001)
            other.source = "other"
            _ = try await store.ingest(other)
            let job = try #require(try await store.jobs(generationID: "gen_search", source: "pipevideo").first)
            #expect(try await store.job(id: job.id) == job)
            #expect(try await store.job(id: "job_0000000000000000") == nil)
            #expect(try await store.eventGenerations(eventID: "msg_search") == [
                GenerationKey(source: "other", generationID: "gen_elsewhere"), GenerationKey(source: "pipevideo", generationID: "gen_search"),
            ])
            #expect(try await store.eventGenerations(eventID: "msg_nowhere").isEmpty)
            // A generation's events with their payloads, in the order they were stored.
            let stale = Fixture.delivery(id: "msg_search_late", generation: "gen_search", status: .queued, at: 5_002)
            _ = try await store.ingest(stale)
            let events = try await store.events(source: "pipevideo", generationID: "gen_search")
            #expect(events.map(\.eventID) == ["msg_search", "msg_search_late"])
            #expect(events.map(\.raw) == [delivery.body, stale.body])
            #expect(try await store.events(source: "other", generationID: "gen_search").isEmpty)
        }
    }

    /// A downgrade is refused: a store a newer pipehook migrated is not opened for writing,
    /// and the message says what to do.
    @Test(arguments: StoreKind.available.filter { $0 != .memory })
    func aStoreMigratedByANewerVersionIsRefused(_ kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            await harness.close(store)
            let record = try #require(harness.recordMigration)
            try await record("v99-from-a-newer-pipehook")
            let error = await #expect(throws: StoreError.self) { _ = try await harness.open() }
            #expect(error?.message.contains("migrated by a newer pipehook (migration v99-from-a-newer-pipehook") == true, "\(error?.message ?? "")")
        }
    }

    @Test(arguments: StoreKind.available)
    func transitionsDedupAndTimelineAreDurable(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            #expect(try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) == .accepted(generationID: "g1", status: .queued, transition: .applied, previous: nil))
            #expect(try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) == .duplicate)
            #expect(try await store.ingest(Fixture.delivery(id: "m2", generation: "g1", status: .completed)) == .accepted(generationID: "g1", status: .completed, transition: .applied, previous: .queued))
            #expect(try await store.ingest(Fixture.delivery(id: "m3", generation: "g1", status: .in_progress)) == .accepted(generationID: "g1", status: .inProgress, transition: .stale, previous: .completed))
            #expect(try await store.ingest(Fixture.delivery(id: "m4", generation: "g1", status: .completed)) == .accepted(generationID: "g1", status: .completed, transition: .same, previous: .completed))
            #expect(try await store.ingest(Fixture.delivery(id: "m5", generation: "g1", status: .failed)) == .accepted(generationID: "g1", status: .failed, transition: .conflict, previous: .completed))
            let unrecognized = IncomingDelivery(source: "pipevideo", deliveryID: "m6", receivedAt: 1, signedAt: 1, body: Array("??".utf8), content: .unrecognized(reason: "not JSON"))
            #expect(try await store.ingest(unrecognized) == .unrecognized)
            #expect(try await store.ingest(unrecognized) == .duplicate)
            await harness.close(store)

            // Reopened (a restarted process): everything acknowledged is there.
            let reopened = try await harness.open()
            let details = try await reopened.generations(withID: "g1")
            #expect(details.count == 1)
            #expect(details[0].generation.status == .completed)
            #expect(details[0].timeline.map(\.eventID) == ["m1", "m2", "m3", "m4", "m5"])
            #expect(details[0].timeline.map(\.transition) == [.applied, .applied, .stale, .same, .conflict])
            #expect(details[0].timeline.map(\.previousStatus) == [nil, .queued, .completed, .completed, .completed])
            #expect(details[0].timeline.map(\.signedAt) == [1, 1, 1, 1, 1])
            #expect(try await reopened.counts() == StoreCounts(deliveries: 6, events: 5, generations: 1, unrecognized: 1))
            #expect(try await reopened.unrecognized(limit: 10).map(\.raw) == [Array("??".utf8)])
            #expect(try await reopened.generations(status: .completed, limit: 10).map(\.generationID) == ["g1"])
            #expect(try await reopened.generations(status: .failed, limit: 10).isEmpty)
            #expect(await reopened.isWritable())
        }
    }

    @Test(arguments: StoreKind.available)
    func sameGenerationIdUnderTwoSourcesIsTwoGenerations(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var other = Fixture.delivery(id: "m1", generation: "g1", status: .failed)
            other.source = "other"
            _ = try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .completed))
            #expect(try await store.ingest(other) == .accepted(generationID: "g1", status: .failed, transition: .applied, previous: nil))
            #expect(try await store.generations(withID: "g1").map(\.generation.source) == ["other", "pipevideo"])
        }
    }

    @Test(arguments: StoreKind.available)
    func concurrentIngestKeepsEveryRowAndAcceptsEachDeliveryOnce(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let statuses: [GenerationStatusText] = [.queued, .in_progress, .completed]
            var deliveries = (0..<300).map { i in Fixture.delivery(id: "m\(i)", generation: "g\(i / 3)", status: statuses[i % 3]) }
            deliveries += deliveries.prefix(200)  // redelivered
            deliveries.shuffle()
            let outcomes = try await withThrowingTaskGroup(of: IntakeOutcome.self) { group in
                for delivery in deliveries { group.addTask { try await store.ingest(delivery) } }
                return try await group.reduce(into: [IntakeOutcome]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 == .duplicate }.count == 200)
            #expect(try await store.counts() == StoreCounts(deliveries: 300, events: 300, generations: 100, unrecognized: 0))
            let all = try await store.generations(status: nil, limit: 1000)
            #expect(all.count == 100 && all.allSatisfy { $0.status == .completed })
        }
    }

    /// Retention works in transactions of `RetentionRules.batchSize` rows of each kind and goes
    /// on until nothing is left past its window.
    @Test(arguments: StoreKind.available)
    func pruneDeletesInSmallTransactionsUntilDone(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let count = RetentionRules.batchSize * 2 + 500
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<count {
                    group.addTask { _ = try await store.ingest(Fixture.delivery(id: "m\(index)", generation: "g\(index)", status: .completed, at: 1_000)) }
                }
                try await group.waitForAll()
            }
            _ = try await store.ingest(Fixture.delivery(id: "fresh", generation: "fresh", status: .completed, at: 400 * 86_400_000))
            let report = try await store.prune(
                nowMilliseconds: 400 * 86_400_000, dedupWindowSeconds: 7 * 86_400, retentionSeconds: 30 * 86_400, includingDead: false
            )
            #expect(report == PruneReport(deliveries: count, events: count, generations: count, unrecognized: 0, jobs: 0))
            #expect(try await store.counts() == StoreCounts(deliveries: 1, events: 1, generations: 1, unrecognized: 0))
        }
    }

    @Test(arguments: StoreKind.available)
    func pruneRemovesExactlyWhatIsPastItsWindow(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let day: Int64 = 86_400_000
            let now = 100 * day
            _ = try await store.ingest(Fixture.delivery(id: "old-done", generation: "g-old", status: .completed, at: now - 40 * day))
            _ = try await store.ingest(Fixture.delivery(id: "old-open", generation: "g-open", status: .in_progress, at: now - 40 * day))
            _ = try await store.ingest(Fixture.delivery(id: "mid", generation: "g-mid", status: .completed, at: now - 8 * day))
            _ = try await store.ingest(Fixture.delivery(id: "new", generation: "g-new", status: .completed, at: now - 1 * day))
            let report = try await store.prune(nowMilliseconds: now, dedupWindowSeconds: 7 * 86_400, retentionSeconds: 30 * 86_400, includingDead: false)
            #expect(report == PruneReport(deliveries: 3, events: 1, generations: 1, unrecognized: 0))
            #expect(try await store.generations(status: nil, limit: 10).map(\.generationID).sorted() == ["g-mid", "g-new", "g-open"])
            // "new" is still inside the dedup window; "mid" is not, but its event still guards it.
            #expect(try await store.ingest(Fixture.delivery(id: "new", generation: "g-new", status: .completed, at: now)) == .duplicate)
            #expect(try await store.ingest(Fixture.delivery(id: "mid", generation: "g-mid", status: .completed, at: now)) == .duplicate)
        }
    }

    @Test(arguments: StoreKind.available)
    func pruneKeepsDeadJobsAndWhatTheyNeedUnlessAsked(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let day: Int64 = 86_400_000
            // Jobs are due by the store's clock: created just now, pruned as if 40 days later.
            let old = harness.now() - 1_000, now = old + 40 * day
            for (generation, ends) in [("g-ok", AttemptDisposition.advance(artifact: nil, done: true)), ("g-dead", .dead(error: "gave up"))] {
                var delivery = Fixture.delivery(id: "m-\(generation)", generation: generation, status: .completed, at: old)
                delivery.routes = ["r"]
                _ = try await store.ingest(delivery)
                let claimed = try await store.claimJobs(owner: "o", leaseMilliseconds: 60_000, limit: 1)
                let attempt = try await store.startAttempt(claimed[0].lease, step: 0, stepKind: "exec", attempt: 1)
                _ = try await store.finishAttempt(attempt, lease: claimed[0].lease, result: AttemptResult(outcome: .succeeded, summary: "x"), disposition: ends)
            }
            let first = try await store.prune(nowMilliseconds: now, dedupWindowSeconds: 7 * 86_400, retentionSeconds: 30 * 86_400, includingDead: false)
            #expect(first.jobs == 1 && first.generations == 1 && first.events == 1)
            #expect(try await store.jobs(state: nil, limit: 10).map(\.state) == [.dead])
            #expect(try await store.generations(withID: "g-dead").count == 1)
            #expect(try await store.generations(withID: "g-ok").isEmpty)
            let second = try await store.prune(nowMilliseconds: now, dedupWindowSeconds: 7 * 86_400, retentionSeconds: 30 * 86_400, includingDead: true)
            #expect(second.jobs == 1 && second.generations == 1 && second.events == 1)
            #expect(try await store.counts() == StoreCounts(deliveries: 0, events: 0, generations: 0, unrecognized: 0))
        }
    }

    @Test(arguments: StoreKind.available)
    func pollingBookkeepingCandidatesAndRetention(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let day: Int64 = 86_400_000
            let now = 100 * day
            // Seen by webhook long ago and still open; seen recently; tracked and never seen; terminal.
            _ = try await store.ingest(Fixture.delivery(id: "m-stuck", generation: "g-stuck", status: .in_progress, at: now - 2 * day))
            _ = try await store.ingest(Fixture.delivery(id: "m-fresh", generation: "g-fresh", status: .queued, at: now - 1_000))
            _ = try await store.ingest(Fixture.delivery(id: "m-done", generation: "g-done", status: .completed, at: now - 2 * day))
            #expect(try await store.track(source: "pipevideo", generationID: "g-tracked", at: now).result == .tracked)
            #expect(try await store.track(source: "pipevideo", generationID: "g-tracked", at: now).result == .alreadyTracked)
            #expect(try await store.track(source: "pipevideo", generationID: "g-done", at: now).result == .alreadyFinished)
            let idleSince = now - 600_000
            #expect(Set(try await store.pollCandidates(now: now, idleSince: idleSince, limit: 10).map(\.generationID)) == ["g-stuck", "g-tracked"])

            // Polled: due again only at the time recorded.
            for id in ["g-stuck", "g-tracked"] {
                try await store.recordPoll(PollCandidate(source: "pipevideo", generationID: id), result: PollResult(summary: "HTTP 200 in_progress", next: .pollAt(now + 600_000), failed: false), at: now)
            }
            #expect(try await store.pollCandidates(now: now, idleSince: idleSince, limit: 10).isEmpty)
            #expect(try await store.pollCandidates(now: now + 600_000, idleSince: idleSince, limit: 10).count == 2)
            // Failures count up and reset on success; a 404 stops for good.
            let stuck = PollCandidate(source: "pipevideo", generationID: "g-stuck")
            try await store.recordPoll(stuck, result: PollResult(summary: "HTTP 500", next: .pollAt(now + 1), failed: true), at: now)
            try await store.recordPoll(stuck, result: PollResult(summary: "HTTP 500", next: .pollAt(now + 1), failed: true), at: now)
            #expect(try await store.polling(generationID: "g-stuck").first?.failures == 2)
            let due = try await store.pollCandidates(now: now + 1, idleSince: idleSince, limit: 10)
            #expect(due == [PollCandidate(source: "pipevideo", generationID: "g-stuck", failures: 2)], "a candidate carries its own failures")
            try await store.recordPoll(stuck, result: PollResult(summary: "HTTP 404", next: .stop, failed: false), at: now)
            let stopped = try #require(try await store.polling(generationID: "g-stuck").first)
            #expect(stopped.state == .stopped && stopped.failures == 0 && stopped.lastResult == "HTTP 404" && !stopped.tracked)
            #expect(try await store.pollCandidates(now: now + 600_000, idleSince: idleSince, limit: 10).map(\.generationID) == ["g-tracked"])

            // A webhook that ends a polled generation ends its polling too, and a late poll record keeps it ended.
            _ = try await store.ingest(Fixture.delivery(id: "m-tracked", generation: "g-tracked", status: .failed, at: now + 10))
            #expect(try await store.polling(generationID: "g-tracked").first?.state == .done)
            try await store.recordPoll(PollCandidate(source: "pipevideo", generationID: "g-tracked"), result: PollResult(summary: "HTTP 200 failed", next: .pollAt(now + 600_000), failed: false), at: now + 20)
            #expect(try await store.polling(generationID: "g-tracked").first?.state == .done)
            #expect(try await store.pollCandidates(now: now + 10 * day, idleSince: idleSince, limit: 10).isEmpty)

            // Retention: the ended generation goes with its polling record; a stopped id nobody reported goes too.
            _ = try await store.track(source: "pipevideo", generationID: "g-ghost", at: now)
            try await store.recordPoll(PollCandidate(source: "pipevideo", generationID: "g-ghost"), result: PollResult(summary: "HTTP 404", next: .stop, failed: false), at: now)
            _ = try await store.prune(nowMilliseconds: now + 40 * day, dedupWindowSeconds: 7 * 86_400, retentionSeconds: 30 * 86_400, includingDead: false)
            #expect(try await store.polling(generationID: "g-tracked").isEmpty)
            #expect(try await store.polling(generationID: "g-ghost").isEmpty)
            #expect(try await store.polling(generationID: "g-stuck").count == 1, "its generation is still open, so it stays")
        }
    }

    /// Outbox jobs, claims, attempts, retries and their messages, replay and reprocess.
    @Test(arguments: StoreKind.available)
    func jobsLifecycleReplayAndReprocess(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed, at: 1_000)
            delivery.routes = ["r", "s"]
            _ = try await store.ingest(delivery)
            // A second completed event and a stale one create no further job.
            var again = Fixture.delivery(id: "m2", generation: "g1", status: .completed, at: 1_100)
            again.routes = ["r", "s"]
            _ = try await store.ingest(again)
            #expect(try await store.jobs(state: nil, limit: 10).count == 2)
            #expect(try await store.jobCounts() == [.pending: 2, .running: 0, .succeeded: 0, .dead: 0])
            #expect(try await store.millisecondsUntilNextJob() == 0, "new jobs are due at once")

            let claimed = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 1)
            #expect(claimed.count == 1 && claimed[0].job.state == .running && claimed[0].job.leaseOwner == "a")
            #expect(claimed[0].lease == JobLease(jobID: claimed[0].job.id, owner: "a", fence: 1))
            #expect(claimed[0].event.eventID == "m1" && claimed[0].event.status == .completed && claimed[0].event.raw == delivery.body)
            let job = claimed[0].job, lease = claimed[0].lease
            #expect(try await store.renewLease(lease, leaseMilliseconds: 60_000))
            #expect(try await store.renewLease(JobLease(jobID: job.id, owner: "b", fence: 1), leaseMilliseconds: 60_000) == false)
            let retryRunning = await #expect(throws: StoreError.self) { try await store.retry(jobID: job.id, at: nowMilliseconds()) }
            #expect(retryRunning?.message == "job \(job.id) is running right now")

            let attempt = try await store.startAttempt(lease, step: 0, stepKind: "download", attempt: 1)
            let artifact = JobArtifact(file: "/tmp/v.mp4", sha256: "ab", bytes: 42)
            let advanced = try await store.finishAttempt(
                attempt, lease: lease, result: AttemptResult(outcome: .succeeded, summary: "saved", httpStatus: 200, output: [1, 2]),
                disposition: .advance(artifact: artifact, done: false)
            )
            #expect(advanced.state == .running && advanced.nextStep == 1 && advanced.artifact == artifact)
            let second = try await store.startAttempt(lease, step: 1, stepKind: "exec", attempt: 1)
            let retried = try await store.finishAttempt(
                second, lease: lease, result: AttemptResult(outcome: .failed, summary: "exit 3", exitCode: 3),
                disposition: .retry(delayMilliseconds: 60_000, error: "exit 3")
            )
            #expect(retried.state == .pending && retried.attempts == 1 && retried.lastError == "exit 3" && retried.leaseOwner == nil && retried.artifact == artifact)
            #expect(retried.runAt >= harness.now() + 50_000, "the retry waits its delay by the store's clock")
            // The lease ended with the retry: the holder can record nothing more.
            let notOurs = await #expect(throws: StoreError.self) {
                try await store.finishAttempt(second, lease: lease, result: AttemptResult(outcome: .succeeded, summary: "x"), disposition: .advance(artifact: nil, done: true))
            }
            #expect(notOurs?.kind == .fenced && notOurs?.message.contains("no longer leased by this process") == true)
            let attempts = try await store.attempts(jobID: job.id)
            #expect(attempts.map(\.outcome) == [.succeeded, .failed])
            #expect(attempts[0].httpStatus == 200 && attempts[0].output == [1, 2] && attempts[1].exitCode == 3 && attempts[1].endedAt != nil)

            let restarted = try await store.retry(jobID: job.id, at: nowMilliseconds())
            #expect(restarted.state == .pending && restarted.attempts == 0 && restarted.nextStep == 1)
            let missing = await #expect(throws: StoreError.self) { try await store.retry(jobID: "job_nope", at: 0) }
            #expect(missing?.kind == .notFound && missing?.message == "no job job_nope")

            // Released on shutdown: back to pending, its running attempt interrupted.
            let reclaimed = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 10)
            #expect(Set(reclaimed.map(\.job.route)) == ["r", "s"])
            let mine = try #require(reclaimed.first { $0.job.id == job.id })
            #expect(mine.lease.fence == 2, "every claim increments the fence")
            let third = try await store.startAttempt(mine.lease, step: 1, stepKind: "exec", attempt: 1)
            try await store.releaseJob(JobLease(jobID: job.id, owner: "b", fence: 2))
            #expect(try await store.attempts(jobID: job.id).last?.outcome == .running, "another owner's release changes nothing")
            try await store.releaseJob(mine.lease)
            let interrupted = try await store.attempts(jobID: job.id).last
            #expect(interrupted?.id == third && interrupted?.outcome == .interrupted && interrupted?.summary == JobRules.interruptedByShutdown)
            #expect(try await store.jobs(generationID: "g1", source: "pipevideo").map(\.route) == ["r", "s"])

            // Dead jobs: retried all at once; a succeeded one cannot be retried.
            let other = try #require(reclaimed.first { $0.job.id != job.id })
            let lastAttempt = try await store.startAttempt(other.lease, step: 0, stepKind: "exec", attempt: 1)
            _ = try await store.finishAttempt(lastAttempt, lease: other.lease, result: AttemptResult(outcome: .dead, summary: "no"), disposition: .dead(error: "no"))
            #expect(try await store.jobs(state: .dead, limit: 10).map(\.id) == [other.job.id])
            #expect(try await store.waitingJobCounts() == WaitingJobs(pending: 1, dead: 1))
            // Of one route only: another route's name, or one that differs after a NUL, retries none.
            #expect(try await store.retryDead(route: other.job.route + "x", at: nowMilliseconds()) == 0)
            #expect(try await store.retryDead(route: other.job.route + "\u{0}x", at: nowMilliseconds()) == 0)
            #expect(try await store.jobCounts()[.dead] == 1)
            #expect(try await store.retryDead(route: other.job.route, at: nowMilliseconds()) == 1)
            #expect(try await store.jobCounts() == [.pending: 2, .running: 0, .succeeded: 0, .dead: 0])
            #expect(try await store.waitingJobCounts() == WaitingJobs(pending: 2, dead: 0))
            let finalClaim = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 10)
            #expect(finalClaim.count == 2)
            for claimed in finalClaim {
                let id = try await store.startAttempt(claimed.lease, step: claimed.job.nextStep, stepKind: "exec", attempt: 1)
                _ = try await store.finishAttempt(id, lease: claimed.lease, result: AttemptResult(outcome: .succeeded, summary: "ok"), disposition: .advance(artifact: nil, done: true))
            }
            #expect(try await store.millisecondsUntilNextJob() == nil)
            let done = await #expect(throws: StoreError.self) { try await store.retry(jobID: job.id, at: nowMilliseconds()) }
            #expect(done?.message == "job \(job.id) already succeeded; use `pipehook replay m1` to run its routes again")

            // Replay: new jobs even though the route ran; reprocess: stored bodies read again.
            let replayed = try await store.replay(eventID: "m1", source: nil, routes: { $0 == .completed ? ["r"] : [] }, at: nowMilliseconds())
            #expect(replayed.count == 1 && replayed[0].state == .pending && replayed[0].eventID == "m1")
            #expect(try await store.jobs(state: .pending, limit: 10).count == 1)
            await #expect(throws: StoreError.self) { try await store.replay(eventID: "nope", source: nil, routes: { _ in ["r"] }, at: 0) }
            let body = Fixture.body(generation: "g2", status: "completed")
            _ = try await store.ingest(IncomingDelivery(source: "pipevideo", deliveryID: "u1", receivedAt: 5, signedAt: 0, body: Array(body.utf8), content: .unrecognized(reason: "format was older")))
            let result = try await store.reprocess(
                decode: { (try? PipevideoFormat().decode($0.raw)).map { .event($0) } }, routes: { _ in ["r"] }, at: 10
            )
            #expect(result.recognized == 1 && result.unrecognized == 0)
            #expect(try await store.generations(withID: "g2").first?.generation.status == .completed)
            #expect(try await store.unrecognized(limit: 10).isEmpty)
            #expect(try await store.jobs(state: .pending, limit: 10).count == 2)
        }
    }

    /// SPEC §3.5: a lease expires by the store's clock; whoever claims the job after that gets a new
    /// fence, the stalled holder's writes are refused, and its running attempt shows interrupted.
    @Test(arguments: StoreKind.available)
    func aStaleLeaseHolderCanRecordNothing(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed)
            delivery.routes = ["r"]
            _ = try await store.ingest(delivery)
            let first = try #require(try await store.claimJobs(owner: "a", leaseMilliseconds: 5_000, limit: 10).first)
            let stalled = try await store.startAttempt(first.lease, step: 0, stepKind: "exec", attempt: 1)
            #expect(try await store.claimJobs(owner: "b", leaseMilliseconds: 5_000, limit: 10).isEmpty, "a live lease is never taken")
            let wait = try #require(try await store.millisecondsUntilNextJob())
            #expect(wait > 0 && wait <= 5_000, "the next thing due is the lease's end")

            try await harness.elapse(5_500)
            let second = try #require(try await store.claimJobs(owner: "b", leaseMilliseconds: 60_000, limit: 10).first)
            #expect(second.job.id == first.job.id && second.lease.fence == first.lease.fence + 1)
            #expect(try await store.attempts(jobID: first.job.id).map(\.outcome) == [.interrupted])
            #expect(try await store.attempts(jobID: first.job.id).first?.summary == JobRules.interruptedByLostLease)

            // The first holder comes back: every write it tries is refused and changes nothing.
            #expect(try await store.renewLease(first.lease, leaseMilliseconds: 60_000) == false)
            let late = await #expect(throws: StoreError.self) {
                try await store.finishAttempt(stalled, lease: first.lease, result: AttemptResult(outcome: .succeeded, summary: "late"), disposition: .advance(artifact: nil, done: true))
            }
            #expect(late?.kind == .fenced)
            let start = await #expect(throws: StoreError.self) { try await store.startAttempt(first.lease, step: 0, stepKind: "exec", attempt: 1) }
            #expect(start?.kind == .fenced)
            try await store.releaseJob(first.lease)
            let job = try #require(try await store.jobs(state: .running, limit: 10).first)
            #expect(job.leaseOwner == "b" && job.fence == second.lease.fence)
            #expect(try await store.attempts(jobID: job.id).map(\.summary) == [JobRules.interruptedByLostLease])

            // The new holder finishes normally.
            let attempt = try await store.startAttempt(second.lease, step: 0, stepKind: "exec", attempt: 1)
            let finished = try await store.finishAttempt(attempt, lease: second.lease, result: AttemptResult(outcome: .succeeded, summary: "ok"), disposition: .advance(artifact: nil, done: true))
            #expect(finished.state == .succeeded && finished.leaseOwner == nil)
        }
    }

    /// A renewed lease lasts from the renewal: a step longer than the lease keeps its job.
    @Test(arguments: StoreKind.available)
    func renewalKeepsTheJobPastTheFirstLease(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed)
            delivery.routes = ["r"]
            _ = try await store.ingest(delivery)
            let claimed = try #require(try await store.claimJobs(owner: "a", leaseMilliseconds: 5_000, limit: 10).first)
            for _ in 0..<3 {
                try await harness.elapse(2_500)
                #expect(try await store.renewLease(claimed.lease, leaseMilliseconds: 5_000))
                #expect(try await store.claimJobs(owner: "b", leaseMilliseconds: 5_000, limit: 10).isEmpty)
            }
            // Past the last renewal's end, it can be taken.
            try await harness.elapse(5_500)
            #expect(try await store.claimJobs(owner: "b", leaseMilliseconds: 5_000, limit: 10).count == 1)
        }
    }

    /// SPEC §3.5: a job keeps the route version it was created with, definition included.
    @Test(arguments: StoreKind.available)
    func jobsArePinnedToTheRouteVersionTheyWereCreatedFor(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let v1 = RoutePin(name: "archive", version: String(repeating: "a", count: 64), definition: #"{"route":{"name":"archive","steps":[1,2,3]}}"#)
            let v2 = RoutePin(name: "archive", version: String(repeating: "b", count: 64), definition: #"{"route":{"name":"archive","steps":[1]}}"#)
            var first = Fixture.delivery(id: "m1", generation: "g1", status: .completed)
            first.routes = [v1, "legacy"]
            _ = try await store.ingest(first)
            var second = Fixture.delivery(id: "m2", generation: "g2", status: .completed)
            second.routes = [v2]
            _ = try await store.ingest(second)
            let claimed = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 10)
            #expect(claimed.count == 3)
            let byGeneration = Dictionary(grouping: claimed, by: \.job.generationID)
            #expect(Set(byGeneration["g1"]?.map(\.route) ?? []) == [v1, "legacy"])
            #expect(byGeneration["g2"]?.map(\.route) == [v2])
            #expect(Set(claimed.map(\.job.routeVersion)) == [v1.version, v2.version, nil])
            let replayed = try await store.replay(eventID: "m2", source: nil, routes: { _ in [v1] }, at: nowMilliseconds())
            #expect(replayed.map(\.routeVersion) == [v1.version])
        }
    }

    /// A job whose event was pruned cannot run: it is dead-lettered when claimed.
    @Test(arguments: StoreKind.available)
    func claimingAJobWhoseEventIsGoneDeadLettersIt(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed)
            delivery.routes = ["r"]
            _ = try await store.ingest(delivery)
            try await harness.dropEvents()
            #expect(try await store.claimJobs(owner: "a", leaseMilliseconds: 100, limit: 10).isEmpty)
            let dead = try #require(try await store.jobs(state: .dead, limit: 10).first)
            #expect(dead.lastError == JobRules.eventGone && dead.leaseOwner == nil)
        }
    }

    /// One write per step: the claim opens the first attempt, a finish that advances opens the
    /// next; a crash mid-step leaves that attempt running, and the next claim marks it interrupted.
    @Test(arguments: StoreKind.available)
    func claimsAndFinishesOpenTheNextAttempt(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed)
            delivery.routes = ["r"]
            _ = try await store.ingest(delivery)
            let asked = Mutex<[String]>([])
            let claimed = try #require(try await store.claimJobs(owner: "a", leaseMilliseconds: 1_000, limit: 10) { job, route in
                asked.withLock { $0.append("\(route.name)#\(job.nextStep)#\(job.state)") }
                return "download"
            }.first)
            #expect(asked.withLock { $0 } == ["r#0#running"], "asked once, about the claimed job")
            let first = try #require(claimed.attemptID)
            var attempts = try await store.attempts(jobID: claimed.job.id)
            #expect(attempts.map(\.id) == [first])
            #expect(attempts.map(\.outcome) == [.running] && attempts[0].step == 0 && attempts[0].stepKind == "download" && attempts[0].attempt == 1)

            let advanced = try await store.finishAttempt(AttemptFinish(
                attemptID: first, lease: claimed.lease, result: AttemptResult(outcome: .succeeded, summary: "saved"),
                disposition: .advance(artifact: nil, done: false), nextStepKind: "exec"
            ))
            #expect(advanced.job.state == .running && advanced.job.nextStep == 1)
            let second = try #require(advanced.nextAttemptID)
            attempts = try await store.attempts(jobID: claimed.job.id)
            #expect(attempts.map(\.id) == [first, second])
            #expect(attempts.map(\.outcome) == [.succeeded, .running] && attempts[1].step == 1 && attempts[1].stepKind == "exec" && attempts[1].attempt == 1)

            // The holder dies mid-step: the next claim marks the attempt interrupted and opens its own.
            try await harness.elapse(1_500)
            let taken = try #require(try await store.claimJobs(owner: "b", leaseMilliseconds: 60_000, limit: 10) { _, _ in "exec" }.first)
            let third = try #require(taken.attemptID)
            attempts = try await store.attempts(jobID: claimed.job.id)
            #expect(attempts.map(\.id) == [first, second, third])
            #expect(attempts.map(\.outcome) == [.succeeded, .interrupted, .running])
            #expect(attempts[1].summary == JobRules.interruptedByLostLease && attempts[2].step == 1)
            let stale = await #expect(throws: StoreError.self) {
                try await store.finishAttempt(AttemptFinish(
                    attemptID: second, lease: claimed.lease, result: AttemptResult(outcome: .succeeded, summary: "late"),
                    disposition: .advance(artifact: nil, done: true)
                ))
            }
            #expect(stale?.kind == .fenced)

            // A retry or the last step opens nothing, whatever the caller names.
            let retried = try await store.finishAttempt(AttemptFinish(
                attemptID: third, lease: taken.lease, result: AttemptResult(outcome: .failed, summary: "exit 1", exitCode: 1),
                disposition: .retry(delayMilliseconds: 0, error: "exit 1"), nextStepKind: "exec"
            ))
            #expect(retried.job.state == .pending && retried.nextAttemptID == nil)
            let again = try #require(try await store.claimJobs(owner: "b", leaseMilliseconds: 60_000, limit: 10) { _, _ in "exec" }.first)
            let fourth = try #require(again.attemptID)
            #expect(try await store.attempts(jobID: claimed.job.id).last.map { [$0.step, $0.attempt] } == [1, 2])
            let done = try await store.finishAttempt(AttemptFinish(
                attemptID: fourth, lease: again.lease, result: AttemptResult(outcome: .succeeded, summary: "ok"),
                disposition: .advance(artifact: nil, done: true), nextStepKind: "exec"
            ))
            #expect(done.job.state == .succeeded && done.nextAttemptID == nil)
            #expect(try await store.attempts(jobID: claimed.job.id).map(\.outcome) == [.succeeded, .interrupted, .failed, .succeeded])

            // A claim told no step kind opens no attempt.
            var next = Fixture.delivery(id: "m2", generation: "g2", status: .completed)
            next.routes = ["r"]
            _ = try await store.ingest(next)
            let bare = try #require(try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 10) { _, _ in nil }.first)
            #expect(bare.attemptID == nil)
            #expect(try await store.attempts(jobID: bare.job.id).isEmpty)
        }
    }

    /// Many jobs finishing at once share transactions; a stale lease in the batch fails alone.
    @Test(arguments: StoreKind.available)
    func concurrentFinishesEachLandOnceAndAStaleOneFailsAlone(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            for index in 0..<24 {
                var delivery = Fixture.delivery(id: "m\(index)", generation: "g\(index)", status: .completed)
                delivery.routes = ["r"]
                _ = try await store.ingest(delivery)
            }
            let claimed = try await store.claimJobs(owner: "a", leaseMilliseconds: 60_000, limit: 50) { _, _ in "exec" }
            #expect(claimed.count == 24 && claimed.allSatisfy { $0.attemptID != nil })
            let victim = claimed[5]
            let results = await withTaskGroup(of: (String, Result<FinishedAttempt, StoreError>).self) { group in
                for job in claimed {
                    group.addTask {
                        let finish = AttemptFinish(
                            attemptID: job.attemptID!, lease: job.lease, result: AttemptResult(outcome: .succeeded, summary: "ok"),
                            disposition: .advance(artifact: nil, done: true)
                        )
                        do throws(StoreError) { return (job.job.id, .success(try await store.finishAttempt(finish))) } catch { return (job.job.id, .failure(error)) }
                    }
                }
                group.addTask {
                    var lease = victim.lease
                    lease.fence -= 1
                    let finish = AttemptFinish(
                        attemptID: victim.attemptID!, lease: lease, result: AttemptResult(outcome: .dead, summary: "stale"),
                        disposition: .dead(error: "stale")
                    )
                    do throws(StoreError) { return ("stale", .success(try await store.finishAttempt(finish))) } catch { return ("stale", .failure(error)) }
                }
                var results: [String: Result<FinishedAttempt, StoreError>] = [:]
                for await (id, result) in group { results[id] = result }
                return results
            }
            #expect(results.count == 25)
            for job in claimed {
                #expect((try? results[job.job.id]?.get())?.job.state == .succeeded, "\(job.job.id)")
            }
            guard case .failure(let error)? = results["stale"] else {
                Issue.record("a stale lease was accepted")
                return
            }
            #expect(error.kind == .fenced)
            #expect(try await store.jobCounts() == [.pending: 0, .running: 0, .succeeded: 24, .dead: 0])
            for job in claimed {
                let attempts = try await store.attempts(jobID: job.job.id)
                #expect(attempts.map(\.outcome) == [.succeeded] && attempts.first?.summary == "ok")
            }
        }
    }
}

extension StoreConformanceTests {
    /// `reprocess` reads unrecognized bodies a page at a time and goes through all of them,
    /// whether they are recognized now or not (issue 10: it loaded up to 100,000 at once).
    @Test(arguments: StoreKind.available)
    func reprocessPagesThroughEveryUnrecognizedBody(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let count = SQLiteStore.reprocessPage * 2 + 7
            for i in 0..<count {
                let body = i.isMultiple(of: 3) ? "not json \(i)" : Fixture.body(generation: "g\(i)", status: "completed")
                _ = try await store.ingest(IncomingDelivery(
                    source: "pipevideo", deliveryID: "u\(i)", receivedAt: 5, signedAt: 0, body: Array(body.utf8),
                    content: .unrecognized(reason: "format was older")
                ))
            }
            let pages = try await store.unrecognized(after: .min, limit: 100)
            #expect(pages.count == 100 && pages.map(\.seq) == pages.map(\.seq).sorted())
            let next = try await store.unrecognized(after: pages.last!.seq, limit: 100)
            #expect(Set(next.map(\.seq)).isDisjoint(with: pages.map(\.seq)) && next.count == 100)
            let result = try await store.reprocess(
                decode: { (try? PipevideoFormat().decode($0.raw)).map { .event($0) } }, routes: { _ in [] }, at: 10
            )
            let unreadable = (0..<count).filter { $0.isMultiple(of: 3) }.count
            #expect(result.recognized == count - unreadable && result.unrecognized == unreadable)
            #expect(try await store.unrecognized(limit: 1_000).count == unreadable, "the unreadable ones stay for later")
        }
    }
}

extension StoreConformanceTests {
    /// Idempotent creation (SPEC §7): a key is recorded before the call; a repeat gets the first
    /// answer, or `outcomeUnknown` while the first call's outcome was never learnt (also after a
    /// restart); a different body under the same key is refused; a released key can be used again;
    /// concurrent claims of one key: exactly one is fresh; retention ends old keys.
    @Test(arguments: StoreKind.available)
    func idempotencyKeysMakeACreateHappenOnce(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            let now = harness.now()
            #expect(try await store.claimIdempotencyKey("k1", digest: "d1", at: now) == .fresh)
            #expect(try await store.claimIdempotencyKey("k1", digest: "d1", at: now + 1) == .outcomeUnknown(since: now))
            #expect(try await store.claimIdempotencyKey("k1", digest: "other", at: now + 1) == .mismatch)
            try await store.completeIdempotencyKey("k1", generationID: "gen_1", answer: Array(#"{"id":"gen_1"}"#.utf8), at: now + 2)
            #expect(try await store.claimIdempotencyKey("k1", digest: "d1", at: now + 3) == .created(generationID: "gen_1", answer: Array(#"{"id":"gen_1"}"#.utf8)))
            // Released only while pending: a created key stays.
            try await store.releaseIdempotencyKey("k1")
            #expect(try await store.idempotencyKey("k1")?.state == .created)

            #expect(try await store.claimIdempotencyKey("k2", digest: "d2", at: now) == .fresh)
            try await store.releaseIdempotencyKey("k2")
            #expect(try await store.idempotencyKey("k2") == nil)
            #expect(try await store.claimIdempotencyKey("k2", digest: "d2", at: now) == .fresh, "a refused create's key can be used again")

            await #expect(throws: StoreError.self) { try await store.claimIdempotencyKey("bad\u{0}key", digest: "d", at: now) }
            await #expect(throws: StoreError.self) { try await store.completeIdempotencyKey("never", generationID: "g", answer: [], at: now) }

            // Many claims of one key at once: exactly one call may go out.
            let claims = try await withThrowingTaskGroup(of: IdempotencyClaim.self) { group in
                for i in 0..<20 { group.addTask { try await store.claimIdempotencyKey("k3", digest: "d3", at: now + Int64(i)) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(claims.filter { $0 == .fresh }.count == 1, "\(claims)")
            #expect(claims.allSatisfy { if case .outcomeUnknown = $0 { true } else { $0 == .fresh } })
            await harness.close(store)

            // A restart (a crash mid-call): still unknown, never a second create.
            let reopened = try await harness.open()
            #expect(try await reopened.claimIdempotencyKey("k2", digest: "d2", at: now + 10) == .outcomeUnknown(since: now))
            #expect(try await reopened.idempotencyKey("k1")?.generationID == "gen_1")
            _ = try await reopened.prune(nowMilliseconds: now + 31 * 86_400_000, dedupWindowSeconds: 7 * 86_400, retentionSeconds: 30 * 86_400, includingDead: false)
            let k1 = try await reopened.idempotencyKey("k1"), k3 = try await reopened.idempotencyKey("k3")
            #expect(k1 == nil && k3 == nil)
        }
    }
}

extension StoreConformanceTests {
    /// The event stream's reads (issue 11): every timeline entry in `seq` order after a point.
    @Test(arguments: StoreKind.available)
    func eventsAfterASeqComeInOrder(kind: StoreKind) async throws {
        try await kind.with { harness in
            let store = try await harness.open()
            #expect(try await store.lastEventSeq() == 0)
            for (i, status) in [GenerationStatusText.queued, .completed, .in_progress].enumerated() {
                _ = try await store.ingest(Fixture.delivery(id: "m\(i)", generation: "g1", status: status))
            }
            let all = try await store.events(after: 0, limit: 10)
            #expect(all.map(\.entry.eventID) == ["m0", "m1", "m2"])
            #expect(all.map(\.entry.transition) == [.applied, .applied, .stale])
            #expect(all.map(\.seq) == all.map(\.seq).sorted() && Set(all.map(\.seq)).count == 3)
            #expect(all.allSatisfy { $0.generationID == "g1" && $0.source == "pipevideo" })
            #expect(try await store.lastEventSeq() == all.last?.seq)
            #expect(try await store.events(after: all[0].seq, limit: 1).map(\.entry.eventID) == ["m1"])
            #expect(try await store.events(after: all[2].seq, limit: 10).isEmpty)
        }
    }
}
