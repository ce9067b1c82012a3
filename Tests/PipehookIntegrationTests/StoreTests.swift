import Foundation
import PipehookLifecycle
import PipehookSQLite
import PipehookStore
import Testing

@Suite struct SQLiteStoreTests {
    @Test func transitionsDedupAndTimelineAreDurable() async throws {
        let dir = TempDir()
        let path = dir.path + "/db.sqlite"
        do {
            let store = try SQLiteStore(path: path)
            #expect(try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) == .accepted(generationID: "g1", status: .queued, transition: .applied, previous: nil))
            #expect(try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) == .duplicate)
            #expect(try await store.ingest(Fixture.delivery(id: "m2", generation: "g1", status: .completed)) == .accepted(generationID: "g1", status: .completed, transition: .applied, previous: .queued))
            #expect(try await store.ingest(Fixture.delivery(id: "m3", generation: "g1", status: .in_progress)) == .accepted(generationID: "g1", status: .inProgress, transition: .stale, previous: .completed))
            #expect(try await store.ingest(Fixture.delivery(id: "m4", generation: "g1", status: .completed)) == .accepted(generationID: "g1", status: .completed, transition: .same, previous: .completed))
            #expect(try await store.ingest(Fixture.delivery(id: "m5", generation: "g1", status: .failed)) == .accepted(generationID: "g1", status: .failed, transition: .conflict, previous: .completed))
            let unrecognized = IncomingDelivery(source: "pipevideo", deliveryID: "m6", receivedAt: 1, signedAt: 1, body: Array("??".utf8), content: .unrecognized(reason: "not JSON"))
            #expect(try await store.ingest(unrecognized) == .unrecognized)
            #expect(try await store.ingest(unrecognized) == .duplicate)
        }
        // Reopen the file: everything acknowledged is there.
        let store = try SQLiteStore(path: path)
        let details = try await store.generations(withID: "g1")
        #expect(details.count == 1)
        #expect(details[0].generation.status == .completed)
        #expect(details[0].timeline.map(\.eventID) == ["m1", "m2", "m3", "m4", "m5"])
        #expect(details[0].timeline.map(\.transition) == [.applied, .applied, .stale, .same, .conflict])
        #expect(details[0].timeline.map(\.previousStatus) == [nil, .queued, .completed, .completed, .completed])
        #expect(try await store.counts() == StoreCounts(deliveries: 6, events: 5, generations: 1, unrecognized: 1))
    }

    @Test func sameGenerationIdUnderTwoSourcesIsTwoGenerations() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        var other = Fixture.delivery(id: "m1", generation: "g1", status: .failed)
        other.source = "other"
        _ = try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .completed))
        #expect(try await store.ingest(other) == .accepted(generationID: "g1", status: .failed, transition: .applied, previous: nil))
        #expect(try await store.generations(withID: "g1").map(\.generation.source) == ["other", "pipevideo"])
    }

    @Test func concurrentIngestSharesCommitsAndKeepsEveryRow() async throws {
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

    @Test func pruneRemovesExactlyWhatIsPastItsWindow() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
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

    @Test func pruneKeepsDeadJobsAndWhatTheyNeedUnlessAsked() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
        let day: Int64 = 86_400_000
        let now = 100 * day, old = now - 40 * day
        for (generation, ends) in [("g-ok", AttemptDisposition.advance(artifact: nil, done: true)), ("g-dead", .dead(error: "gave up"))] {
            var delivery = Fixture.delivery(id: "m-\(generation)", generation: generation, status: .completed, at: old)
            delivery.routes = ["r"]
            _ = try await store.ingest(delivery)
            let claimed = try await store.claimJobs(owner: "o", now: old, leaseMilliseconds: 1000, limit: 1)
            let attempt = try await store.startAttempt(jobID: claimed[0].job.id, step: 0, stepKind: "exec", attempt: 1, at: old)
            _ = try await store.finishAttempt(attempt, jobID: claimed[0].job.id, owner: "o", result: AttemptResult(outcome: .succeeded, summary: "x"), disposition: ends, at: old)
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

    @Test func pollingBookkeepingCandidatesAndRetention() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/db.sqlite")
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
