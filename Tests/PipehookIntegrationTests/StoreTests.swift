import Foundation
import PipehookLifecycle
import PipehookSQLite
import PipehookStore
import Testing

/// What only the SQLite store does; the rules every store shares are in `StoreConformanceTests`.
@Suite struct SQLiteStoreTests {
    @Test func concurrentIngestSharesCommits() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
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
        #expect(store.commitCount < 250, "500 concurrent deliveries took \(store.commitCount) commits: group commit is not grouping")
    }

    @Test func lockedDatabaseFailsFastAsUnavailable() async throws {
        let dir = TempDir()
        let path = dir.path + "/db.sqlite"
        var options = SQLiteStore.Options()
        options.busyTimeout = 0.2
        let store = try SQLiteStore(path: path, options: options)
        #expect(await store.isWritable())
        let lock = try ExclusiveLock(path: path)
        await #expect(throws: StoreError.self) { try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) }
        #expect(await store.isWritable() == false)
        lock.release()
        #expect(await store.isWritable())
        #expect(try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) == .accepted(generationID: "g1", status: .queued, transition: .applied, previous: nil))
    }

    @Test func readOnlyOpenOfMissingFileSaysSo() {
        var options = SQLiteStore.Options()
        options.readOnly = true
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: "/nonexistent/x.sqlite", options: options) }
        #expect(error?.message.contains("no database") == true)
    }

}
