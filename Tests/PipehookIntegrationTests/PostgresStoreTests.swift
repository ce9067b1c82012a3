import Foundation
import Logging
import PipehookDispatch
import PipehookFormats
import PipehookHandlers
import PipehookLifecycle
import PipehookPostgres
import PipehookSettings
import PipehookStore
import ServiceLifecycle
import Synchronization
import Testing

/// The URL parser: no database needed.
@Suite struct PostgresLocationTests {
    @Test func parsesTheURLAndChoosesTLSByHost() throws {
        let local = try PostgresLocation(url: "postgres://pipe%40hook:s3cr%2Ft@127.0.0.1:6543/pipehook?search_path=tenant_a&pool_max=4")
        #expect(local.client.host == "127.0.0.1" && local.client.port == 6543)
        #expect(local.client.username == "pipe@hook" && local.client.password == "s3cr/t" && local.client.database == "pipehook")
        #expect(local.searchPath == "tenant_a" && local.client.options.maximumConnections == 4)
        #expect(local.client.options.additionalStartupParameters.contains { $0 == ("search_path", "tenant_a") })
        #expect("\(local.client.tls)".contains("disable"))
        let remote = try PostgresLocation(url: "postgresql://u:p@db.internal/pipehook")
        #expect(remote.client.port == 5432 && !"\(remote.client.tls)".contains("disable"))
        let socket = try PostgresLocation(url: "postgres://u@localhost/db?host=/var/run/postgresql")
        #expect(socket.client.unixSocketPath == "/var/run/postgresql/.s.PGSQL.5432")
        for text in ["\(local)", String(reflecting: local), "\(Mirror(reflecting: local).children.map(\.value))"] {
            #expect(!text.contains("s3cr") && text.contains("<redacted>"), "\(text)")
        }
    }

    @Test func rejectsBadURLsWithoutQuotingThePassword() {
        for url in [
            "postgres://u:hunter2@host", "postgres://:hunter2@host/db", "postgres://u:hunter2@/db",
            "postgres://u:hunter2@host/db?sslmode=sometimes", "postgres://u:hunter2@host/db?pool_max=0",
            "postgres://u:hunter2@host/db?password=x",
        ] {
            let error = #expect(throws: StoreError.self) { try PostgresLocation(url: url) }
            #expect(error?.message.contains("hunter2") == false, "\(error?.message ?? "")")
            #expect(error?.message.hasPrefix("store: the postgres URL") == true)
        }
    }
}

/// The same cases as `SQLiteStoreTests`, `DispatcherTests` and the polling bookkeeping, against a
/// real PostgreSQL: one implementation of the store protocols must behave like the other.
@Suite(.enabled(if: PostgresTestDatabase.url != nil, PostgresTestDatabase.note))
struct PostgresStoreTests {
    @Test func transitionsDedupAndTimelineAreDurable() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
            #expect(try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) == .accepted(generationID: "g1", status: .queued, transition: .applied, previous: nil))
            #expect(try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) == .duplicate)
            #expect(try await store.ingest(Fixture.delivery(id: "m2", generation: "g1", status: .completed)) == .accepted(generationID: "g1", status: .completed, transition: .applied, previous: .queued))
            #expect(try await store.ingest(Fixture.delivery(id: "m3", generation: "g1", status: .in_progress)) == .accepted(generationID: "g1", status: .inProgress, transition: .stale, previous: .completed))
            #expect(try await store.ingest(Fixture.delivery(id: "m4", generation: "g1", status: .completed)) == .accepted(generationID: "g1", status: .completed, transition: .same, previous: .completed))
            #expect(try await store.ingest(Fixture.delivery(id: "m5", generation: "g1", status: .failed)) == .accepted(generationID: "g1", status: .failed, transition: .conflict, previous: .completed))
            let unrecognized = IncomingDelivery(source: "pipevideo", deliveryID: "m6", receivedAt: 1, signedAt: 1, body: Array("??".utf8), content: .unrecognized(reason: "not JSON"))
            #expect(try await store.ingest(unrecognized) == .unrecognized)
            #expect(try await store.ingest(unrecognized) == .duplicate)
            await store.close()

            // Another client (a restarted instance): everything acknowledged is there.
            let reopened = try await schema.open()
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
            await reopened.close()
        }
    }

    /// Read-only commands do not migrate: on an empty schema they say so instead of failing obscurely.
    @Test func unmigratedSchemaReadsAsNotFound() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open(migrate: false)
            let error = await #expect(throws: StoreError.self) { try await store.generations(withID: "g1") }
            #expect(error?.kind == .notFound && error?.message.contains("pipehook serve") == true, "\(error?.message ?? "")")
            await store.close()
        }
    }

    @Test func sameGenerationIdUnderTwoSourcesIsTwoGenerations() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
            var other = Fixture.delivery(id: "m1", generation: "g1", status: .failed)
            other.source = "other"
            _ = try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .completed))
            #expect(try await store.ingest(other) == .accepted(generationID: "g1", status: .failed, transition: .applied, previous: nil))
            #expect(try await store.generations(withID: "g1").map(\.generation.source) == ["other", "pipevideo"])
            await store.close()
        }
    }

    @Test func pruneRemovesExactlyWhatIsPastItsWindow() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
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
            await store.close()
        }
    }

    @Test func pruneKeepsDeadJobsAndWhatTheyNeedUnlessAsked() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
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
            await store.close()
        }
    }

    @Test func pollingBookkeepingCandidatesAndRetention() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
            let day: Int64 = 86_400_000
            let now = 100 * day
            _ = try await store.ingest(Fixture.delivery(id: "m-stuck", generation: "g-stuck", status: .in_progress, at: now - 2 * day))
            _ = try await store.ingest(Fixture.delivery(id: "m-fresh", generation: "g-fresh", status: .queued, at: now - 1_000))
            _ = try await store.ingest(Fixture.delivery(id: "m-done", generation: "g-done", status: .completed, at: now - 2 * day))
            #expect(try await store.track(source: "pipevideo", generationID: "g-tracked", at: now).result == .tracked)
            #expect(try await store.track(source: "pipevideo", generationID: "g-tracked", at: now).result == .alreadyTracked)
            #expect(try await store.track(source: "pipevideo", generationID: "g-done", at: now).result == .alreadyFinished)
            let idleSince = now - 600_000
            #expect(Set(try await store.pollCandidates(now: now, idleSince: idleSince, limit: 10).map(\.generationID)) == ["g-stuck", "g-tracked"])

            for id in ["g-stuck", "g-tracked"] {
                try await store.recordPoll(PollCandidate(source: "pipevideo", generationID: id), result: PollResult(summary: "HTTP 200 in_progress", next: .pollAt(now + 600_000), failed: false), at: now)
            }
            #expect(try await store.pollCandidates(now: now, idleSince: idleSince, limit: 10).isEmpty)
            #expect(try await store.pollCandidates(now: now + 600_000, idleSince: idleSince, limit: 10).count == 2)
            let stuck = PollCandidate(source: "pipevideo", generationID: "g-stuck")
            try await store.recordPoll(stuck, result: PollResult(summary: "HTTP 500", next: .pollAt(now + 1), failed: true), at: now)
            try await store.recordPoll(stuck, result: PollResult(summary: "HTTP 500", next: .pollAt(now + 1), failed: true), at: now)
            #expect(try await store.polling(generationID: "g-stuck").first?.failures == 2)
            try await store.recordPoll(stuck, result: PollResult(summary: "HTTP 404", next: .stop, failed: false), at: now)
            let stopped = try #require(try await store.polling(generationID: "g-stuck").first)
            #expect(stopped.state == .stopped && stopped.failures == 0 && stopped.lastResult == "HTTP 404" && !stopped.tracked)
            #expect(try await store.pollCandidates(now: now + 600_000, idleSince: idleSince, limit: 10).map(\.generationID) == ["g-tracked"])

            _ = try await store.ingest(Fixture.delivery(id: "m-tracked", generation: "g-tracked", status: .failed, at: now + 10))
            #expect(try await store.polling(generationID: "g-tracked").first?.state == .done)
            try await store.recordPoll(PollCandidate(source: "pipevideo", generationID: "g-tracked"), result: PollResult(summary: "HTTP 200 failed", next: .pollAt(now + 600_000), failed: false), at: now + 20)
            #expect(try await store.polling(generationID: "g-tracked").first?.state == .done)
            #expect(try await store.pollCandidates(now: now + 10 * day, idleSince: idleSince, limit: 10).isEmpty)

            _ = try await store.track(source: "pipevideo", generationID: "g-ghost", at: now)
            try await store.recordPoll(PollCandidate(source: "pipevideo", generationID: "g-ghost"), result: PollResult(summary: "HTTP 404", next: .stop, failed: false), at: now)
            _ = try await store.prune(nowMilliseconds: now + 40 * day, dedupWindowSeconds: 7 * 86_400, retentionSeconds: 30 * 86_400, includingDead: false)
            #expect(try await store.polling(generationID: "g-tracked").isEmpty)
            #expect(try await store.polling(generationID: "g-ghost").isEmpty)
            #expect(try await store.polling(generationID: "g-stuck").count == 1, "its generation is still open, so it stays")
            await store.close()
        }
    }

    /// Outbox jobs, claims, attempts, retries and their messages, replay and reprocess.
    @Test func jobsLifecycleReplayAndReprocess() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed, at: 1_000)
            delivery.routes = ["r", "s"]
            _ = try await store.ingest(delivery)
            // A second completed event and a stale one create no further job.
            var again = Fixture.delivery(id: "m2", generation: "g1", status: .completed, at: 1_100)
            again.routes = ["r", "s"]
            _ = try await store.ingest(again)
            #expect(try await store.jobs(state: nil, limit: 10).count == 2)
            #expect(try await store.jobCounts() == [.pending: 2, .running: 0, .succeeded: 0, .dead: 0])
            #expect(try await store.nextJobDue() == 1_000)
            #expect(try await store.claimJobs(owner: "a", now: 999, leaseMilliseconds: 100, limit: 10).isEmpty)

            let claimed = try await store.claimJobs(owner: "a", now: 1_000, leaseMilliseconds: 100, limit: 1)
            #expect(claimed.count == 1 && claimed[0].job.state == .running && claimed[0].job.leaseOwner == "a" && claimed[0].job.leaseUntil == 1_100)
            #expect(claimed[0].event.eventID == "m1" && claimed[0].event.status == .completed && claimed[0].event.raw == delivery.body)
            let job = claimed[0].job
            #expect(try await store.renewLease(jobID: job.id, owner: "a", until: 1_500))
            #expect(try await store.renewLease(jobID: job.id, owner: "b", until: 1_500) == false)
            #expect(try await store.nextJobDue() == 1_000)
            await #expect(throws: StoreError.self) { try await store.retry(jobID: job.id, at: 1_000) }
            #expect(try await store.requeueRunning(at: 1_000) == 0)
            #expect(try await store.jobs(state: .running, limit: 10).map(\.id) == [job.id], "a shared store never requeues running jobs at start")

            let attempt = try await store.startAttempt(jobID: job.id, step: 0, stepKind: "download", attempt: 1, at: 1_010)
            let artifact = JobArtifact(file: "/tmp/v.mp4", sha256: "ab", bytes: 42)
            let advanced = try await store.finishAttempt(
                attempt, jobID: job.id, owner: "a", result: AttemptResult(outcome: .succeeded, summary: "saved", httpStatus: 200, output: [1, 2]),
                disposition: .advance(artifact: artifact, done: false), at: 1_020
            )
            #expect(advanced.state == .running && advanced.nextStep == 1 && advanced.artifact == artifact)
            let second = try await store.startAttempt(jobID: job.id, step: 1, stepKind: "exec", attempt: 1, at: 1_030)
            let retried = try await store.finishAttempt(
                second, jobID: job.id, owner: "a", result: AttemptResult(outcome: .failed, summary: "exit 3", exitCode: 3),
                disposition: .retry(runAt: 5_000, error: "exit 3"), at: 1_040
            )
            #expect(retried.state == .pending && retried.attempts == 1 && retried.lastError == "exit 3" && retried.leaseOwner == nil && retried.artifact == artifact)
            let notOurs = await #expect(throws: StoreError.self) {
                try await store.finishAttempt(second, jobID: job.id, owner: "a", result: AttemptResult(outcome: .succeeded, summary: "x"), disposition: .advance(artifact: nil, done: true), at: 1_050)
            }
            #expect(notOurs?.message == "job \(job.id) is no longer leased by this process")
            let attempts = try await store.attempts(jobID: job.id)
            #expect(attempts.map(\.outcome) == [.succeeded, .failed])
            #expect(attempts[0].httpStatus == 200 && attempts[0].output == [1, 2] && attempts[1].exitCode == 3 && attempts[1].endedAt == 1_040)

            let restarted = try await store.retry(jobID: job.id, at: 2_000)
            #expect(restarted.state == .pending && restarted.attempts == 0 && restarted.runAt == 2_000 && restarted.nextStep == 1)
            let missing = await #expect(throws: StoreError.self) { try await store.retry(jobID: "job_nope", at: 0) }
            #expect(missing?.kind == .notFound && missing?.message == "no job job_nope")

            // Released on shutdown: back to pending, its running attempt interrupted.
            let reclaimed = try await store.claimJobs(owner: "a", now: 2_000, leaseMilliseconds: 100, limit: 10)
            #expect(Set(reclaimed.map(\.job.route)) == ["r", "s"])
            let third = try await store.startAttempt(jobID: job.id, step: 1, stepKind: "exec", attempt: 1, at: 2_010)
            try await store.releaseJob(jobID: job.id, owner: "b", at: 2_020)
            #expect(try await store.attempts(jobID: job.id).last?.outcome == .running, "another owner's release changes nothing")
            try await store.releaseJob(jobID: job.id, owner: "a", at: 2_020)
            let interrupted = try await store.attempts(jobID: job.id).last
            #expect(interrupted?.id == third && interrupted?.outcome == .interrupted)
            #expect(try await store.jobs(generationID: "g1", source: "pipevideo").map(\.route) == ["r", "s"])

            // Dead jobs: retried all at once; a succeeded one cannot be retried.
            let other = try #require(reclaimed.first { $0.job.id != job.id })
            let lastAttempt = try await store.startAttempt(jobID: other.job.id, step: 0, stepKind: "exec", attempt: 1, at: 2_030)
            _ = try await store.finishAttempt(lastAttempt, jobID: other.job.id, owner: "a", result: AttemptResult(outcome: .dead, summary: "no"), disposition: .dead(error: "no"), at: 2_040)
            #expect(try await store.jobs(state: .dead, limit: 10).map(\.id) == [other.job.id])
            #expect(try await store.retryDead(at: 3_000) == 1)
            #expect(try await store.jobCounts() == [.pending: 2, .running: 0, .succeeded: 0, .dead: 0])
            let finalClaim = try await store.claimJobs(owner: "a", now: 5_000, leaseMilliseconds: 100, limit: 10)
            for claimed in finalClaim {
                let id = try await store.startAttempt(jobID: claimed.job.id, step: claimed.job.nextStep, stepKind: "exec", attempt: 1, at: 5_000)
                _ = try await store.finishAttempt(id, jobID: claimed.job.id, owner: "a", result: AttemptResult(outcome: .succeeded, summary: "ok"), disposition: .advance(artifact: nil, done: true), at: 5_010)
            }
            let done = await #expect(throws: StoreError.self) { try await store.retry(jobID: job.id, at: 6_000) }
            #expect(done?.message == "job \(job.id) already succeeded; use `pipehook replay m1` to run its routes again")

            // Replay: new jobs even though the route ran; reprocess: stored bodies read again.
            let replayed = try await store.replay(eventID: "m1", source: nil, routes: { $0 == .completed ? ["r"] : [] }, at: 7_000)
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
            await store.close()
        }
    }

    /// A job whose event was pruned cannot run: it is dead-lettered when claimed, as in SQLite.
    @Test func claimingAJobWhoseEventIsGoneDeadLettersIt() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
            var delivery = Fixture.delivery(id: "m1", generation: "g1", status: .completed)
            delivery.routes = ["r"]
            _ = try await store.ingest(delivery)
            try await store.client.query("DELETE FROM events", logger: Fixture.logger)
            #expect(try await store.claimJobs(owner: "a", now: 10_000, leaseMilliseconds: 100, limit: 10).isEmpty)
            let dead = try #require(try await store.jobs(state: .dead, limit: 10).first)
            #expect(dead.lastError == "its event is no longer stored (pruned)" && dead.leaseOwner == nil)
            await store.close()
        }
    }

    /// No server, or a client that stopped: every call fails as `unavailable` (HTTP 503), and
    /// the error says why without quoting the URL.
    @Test func unreachableOrClosedStoreIsUnavailable() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
            await store.close()
            let error = await #expect(throws: StoreError.self) { try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) }
            #expect(error?.kind == .unavailable)
            #expect(await store.isWritable() == false)

            // A port nothing listens on: readiness answers false within its own deadline.
            let nowhere = try PostgresLocation(url: "postgres://pipehook:do-not-print@127.0.0.1:1/none")
            let unreachable = PostgresStore(location: nowhere, logger: Fixture.logger)
            await unreachable.startClient()
            let started = ContinuousClock.now
            #expect(await unreachable.isWritable() == false)
            #expect(ContinuousClock.now - started < .seconds(5))
            await unreachable.close()
            let failed = await #expect(throws: StoreError.self) { try await PostgresStore.open(nowhere, leaseTimeout: .seconds(1), logger: Fixture.logger) }
            #expect(failed?.kind == .unavailable && failed?.message.contains("do-not-print") == false)
        }
    }
}
