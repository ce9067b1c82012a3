import AsyncHTTPClient
import Foundation
import Logging
import PipehookDaemon
import PipehookDispatch
import PipehookFormats
import PipehookHandlers
import PipehookLifecycle
import PipehookReconcile
import PipehookSettings
import PipehookSQLite
import PipehookStore
import Synchronization
import Testing

/// Log lines kept in memory, to check what reaches the log (and what never does).
final class CapturedLog: Sendable {
    private let lines = Mutex<[(Logger.Level, String)]>([])
    var entries: [(Logger.Level, String)] { lines.withLock { $0 } }
    var all: String { entries.map(\.1).joined(separator: "\n") }

    var logger: Logger {
        Logger(label: "captured") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
            let text = "\(event.message) \(merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
            log.lines.withLock { $0.append((event.level, text)) }
        }
    }
}

@Suite struct ReconcileTests {
    static let key = "pv_test_secret_key_0123456789"

    struct Harness {
        let dir = TempDir()
        let store: SQLiteStore
        init() throws { store = try SQLiteStore(path: dir.path + "/pipehook.sqlite") }
    }

    static func api(
        _ baseURL: String, rpm: Int = 6_000, key: String = key, logger: Logger = Fixture.logger,
        backoff: APIBackoff = APIBackoff(initialMilliseconds: 200, maximumMilliseconds: 1_000), recheck: Int64 = 60_000
    ) -> PipevideoAPI {
        PipevideoAPI(
            settings: API(baseURL: baseURL, key: key, requestsPerMinute: rpm, pollAfterSeconds: 1), httpClient: HTTPClient.shared,
            logger: logger, backoff: backoff, requestTimeout: .seconds(10), unauthorizedRecheckMilliseconds: recheck
        )
    }

    static func reconciler(
        _ store: SQLiteStore, _ api: PipevideoAPI, pollAfter: Int64 = 1_000, logger: Logger = Fixture.logger,
        routes: [GenerationStatus: [RoutePin]] = [.completed: ["archive", "publish"], .cancelled: ["notify"], .incomplete: ["notify"]]
    ) -> Reconciler {
        Reconciler(
            store: store, api: api,
            configuration: .init(sources: ["pipevideo"], pollAfterMilliseconds: pollAfter, routes: { routes[$0] ?? [] }),
            // A failed poll's own backoff, scaled down like the API client's in these tests.
            logger: logger, scanInterval: .milliseconds(100), backoff: APIBackoff(initialMilliseconds: 200, maximumMilliseconds: 1_000)
        )
    }

    /// Runs a reconciler for a while, for checks that nothing more happens.
    static func idle(_ reconciler: Reconciler, seconds: Double) async throws {
        let task = Task { try await reconciler.run() }
        try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
        task.cancel()
        _ = await task.result
    }

    /// Runs the reconciler until `condition` holds (or the timeout), then stops it.
    static func running(_ reconciler: Reconciler, timeout: Double = 60, until condition: @Sendable () async throws -> Bool) async throws {
        let task = Task { try await reconciler.run() }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() {
                task.cancel()
                _ = await task.result
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        task.cancel()
        _ = await task.result
        Issue.record("condition not reached within \(timeout) s")
    }

    static func status(_ store: SQLiteStore, _ id: String) async throws -> GenerationStatus? {
        try await store.generations(withID: id).first?.generation.status
    }

    @Test func trackedGenerationWhoseWebhookNeverComesEndsCompletedWithItsJobsOnce() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.script("gen_t", [.status("queued"), .status("in_progress"), .status("completed", url: "https://cdn.example/t.mp4")])
        try await fake.run { base in
            #expect(try await h.store.track(source: "pipevideo", generationID: "gen_t", at: Fixture.now() * 1000).result == .tracked)
            let reconciler = { Self.reconciler(h.store, Self.api(base), pollAfter: 300) }
            try await Self.running(reconciler()) { try await Self.status(h.store, "gen_t") == .completed }
            let detail = try #require(try await h.store.generations(withID: "gen_t").first)
            #expect(detail.generation.outputURL == "https://cdn.example/t.mp4")
            #expect(detail.timeline.map(\.status) == [.queued, .inProgress, .completed])
            #expect(detail.timeline.allSatisfy { $0.origin == .poll && $0.transition == .applied })
            let jobs = try await h.store.jobs(generationID: "gen_t", source: "pipevideo")
            #expect(jobs.map(\.route).sorted() == ["archive", "publish"])
            // Terminal: never polled again, and the routes never start twice.
            let asked = await fake.requests(for: "gen_t").count
            try await Self.idle(reconciler(), seconds: 1.2)
            #expect(await fake.requests(for: "gen_t").count == asked)
            #expect(try await h.store.jobs(generationID: "gen_t", source: "pipevideo").count == 2)
            #expect(await fake.requests.allSatisfy { $0.authorization == "Bearer \(Self.key)" })
        }
    }

    @Test func stuckGenerationSeenByWebhookIsPolledAfterPollAfterOnly() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.script("gen_s", [.status("completed", url: "https://cdn.example/s.mp4", inContent: true)])
        try await fake.run { base in
            let now = Fixture.now() * 1000
            var fresh = Fixture.delivery(id: "msg_s1", generation: "gen_s", status: .in_progress, at: now)
            _ = try await h.store.ingest(fresh)
            let reconciler = { Self.reconciler(h.store, Self.api(base), pollAfter: 1_500) }
            try await Self.running(reconciler()) { try await Self.status(h.store, "gen_s") == .completed }
            // Left alone while younger than poll_after, then polled once.
            let asked = await fake.requests(for: "gen_s").map(\.at)
            #expect(asked.count == 1)
            #expect(asked.allSatisfy { $0 >= now + 1_500 }, "polled \(asked.map { $0 - now }) ms after the webhook")
            #expect(try await h.store.generations(withID: "gen_s").first?.generation.outputURL == "https://cdn.example/s.mp4")
            // The late webhook for the same completion changes nothing and starts nothing.
            fresh = Fixture.delivery(id: "msg_s2", generation: "gen_s", status: .completed, at: now + 5_000)
            fresh.routes = ["archive", "publish"]
            guard case .accepted(_, _, let transition, _) = try await h.store.ingest(fresh) else { Issue.record("not accepted"); return }
            #expect(transition == .same)
            #expect(try await h.store.jobs(generationID: "gen_s", source: "pipevideo").count == 2)
        }
    }

    @Test func webhookAndPollRacingForTheSameTransitionMakeOneSetOfJobs() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        let ids = (0..<40).map { "gen_race_\($0)" }
        for id in ids { await fake.script(id, [.status("completed", url: "https://cdn.example/\(id).mp4")]) }
        try await fake.run { base in
            let now = Fixture.now() * 1000
            for id in ids { _ = try await h.store.track(source: "pipevideo", generationID: id, at: now) }
            let store = h.store
            // Each webhook lands while its poll is in flight: for half the ids it commits before
            // the API answers, for the other half it races the poll's own commit.
            await fake.beforeAnswering { id in
                var delivery = Fixture.delivery(id: "msg_\(id)", generation: id, status: .completed, at: now)
                delivery.routes = ["archive", "publish"]
                if Int(id.split(separator: "_").last!)! % 2 == 0 {
                    _ = try? await store.ingest(delivery)
                } else {
                    Task { _ = try? await store.ingest(delivery) }
                }
            }
            let reconciler = { Self.reconciler(h.store, Self.api(base)) }
            // Forty polls, each racing a commit: seconds on an idle machine, much longer when the
            // whole suite shares two cores.
            try await Self.running(reconciler(), timeout: 90) {
                var settled = 0
                for id in ids where try await store.generations(withID: id).first?.timeline.count == 2 { settled += 1 }
                return settled == ids.count
            }
            for id in ids {
                let jobs = try await h.store.jobs(generationID: id, source: "pipevideo")
                #expect(jobs.map(\.route).sorted() == ["archive", "publish"], "\(id)")
                let timeline = try #require(try await h.store.generations(withID: id).first).timeline
                #expect(timeline.filter { $0.transition == .applied }.count == 1, "\(id)")
                #expect(timeline.count == 2, "\(id): one webhook and one poll event")
            }
        }
    }

    @Test func requestRateNeverExceedsTheBudget() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let now = Fixture.now() * 1000
            for index in 0..<40 {
                await fake.script("gen_rate_\(index)", [.status("in_progress")])
                _ = try await h.store.track(source: "pipevideo", generationID: "gen_rate_\(index)", at: now)
            }
            // 120/min: one request every 500 ms, whatever the backlog.
            let reconciler = { Self.reconciler(h.store, Self.api(base, rpm: 120), pollAfter: 60_000) }
            let started = Int64(Date().timeIntervalSince1970 * 1000)
            // Until six requests were made (a busy machine's first ones can be slow), then stopped.
            try await Self.running(reconciler(), timeout: 40) { await fake.requests.count >= 6 }
            let ended = Int64(Date().timeIntervalSince1970 * 1000)
            let times = await fake.requests.map(\.at).sorted()
            #expect(times.count >= 5, "the backlog was polled")
            #expect(Int64(times.count) <= (ended - started) / 500 + 1)
            for (index, time) in times.enumerated() {
                // Any one-second window holds the two slots it may, plus at most one late arrival.
                let window = times[index...].prefix { $0 < time + 1_000 }.count
                #expect(window <= 3, "\(window) requests within 1 s from \(time)")
            }
        }
    }

    /// Creates and cancels go before polls in the shared budget (issue 11): with polls queued for
    /// slots, a create asked for later is sent at the next slot.
    @Test func createsAndCancelsGoBeforeQueuedPolls() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            for index in 0..<4 { await fake.script("gen_q\(index)", [.status("in_progress")]) }
            // 40/min: one request every 1.5 s (room for a loaded machine's scheduling).
            let api = Self.api(base, rpm: 40)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<4 { group.addTask { _ = await api.fetch("gen_q\(index)") } }
                try await Task.sleep(for: .milliseconds(150))
                group.addTask {
                    let created = await api.create(Array(#"{"model":"m","input":"x"}"#.utf8))
                    guard case .created(let snapshot, _) = created else { Issue.record("create: \(created)"); return }
                    _ = await api.cancel(snapshot.generationID)
                }
                try await group.waitForAll()
            }
            let order = await fake.order
            #expect(order.count == 6, "\(order)")
            // One poll had its slot before the create was asked for; the create and the cancel
            // then take the next slots, ahead of the three polls still waiting (queued in arrival
            // order, as before, they came last). One more poll may slip in on a slow machine.
            let create = try #require(order.firstIndex(of: "POST /v1/responses"))
            let cancel = try #require(order.firstIndex(of: "DELETE /v1/responses/gen_fake1"))
            #expect(create <= 2 && cancel == create + 1 && cancel < order.count - 1, "\(order)")
        }
    }

    @Test func rateLimitPausesForRetryAfterThenPollsAgain() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.script("gen_429", [.rateLimited(retryAfter: 1.5), .status("completed", url: "https://cdn.example/429.mp4")])
        try await fake.run { base in
            _ = try await h.store.track(source: "pipevideo", generationID: "gen_429", at: Fixture.now() * 1000)
            try await Self.running(Self.reconciler(h.store, Self.api(base))) { try await Self.status(h.store, "gen_429") == .completed }
            let times = await fake.requests(for: "gen_429").map(\.at)
            #expect(times.count == 2)
            #expect(times[1] - times[0] >= 1_500, "waited \(times[1] - times[0]) ms after a 429 with retry_after 1.5")
        }
    }

    @Test func serverErrorsBackOffThenRecover() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.script("gen_500", [.serverError, .serverError, .serverError, .status("failed", error: "content policy")])
        try await fake.run { base in
            _ = try await h.store.track(source: "pipevideo", generationID: "gen_500", at: Fixture.now() * 1000)
            // Backoff 200 ms doubling, equal jitter: gaps of at least 100, 200 and 400 ms.
            try await Self.running(Self.reconciler(h.store, Self.api(base))) { try await Self.status(h.store, "gen_500") == .failed }
            let times = await fake.requests(for: "gen_500").map(\.at)
            #expect(times.count == 4)
            let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
            #expect(gaps[0] >= 100 && gaps[1] >= 200 && gaps[2] >= 400, "gaps \(gaps)")
            #expect(try await h.store.generations(withID: "gen_500").first?.generation.errorMessage == "content policy")
        }
    }

    /// Issue 10 item 7: one id the API keeps failing on backs off by its own failures, while
    /// polls of other ids keep succeeding (which reset the client's shared pause).
    @Test func aGenerationThatKeepsFailingBacksOffOnItsOwn() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.script("gen_bad", [.serverError])
        for index in 0..<3 { await fake.script("gen_ok\(index)", [.status("in_progress")]) }
        try await fake.run { base in
            let now = Fixture.now() * 1000
            for id in ["gen_bad", "gen_ok0", "gen_ok1", "gen_ok2"] { _ = try await h.store.track(source: "pipevideo", generationID: id, at: now) }
            // The healthy ids are polled every 200 ms; the failing one waits 300 ms doubling.
            let reconciler = Reconciler(
                store: h.store, api: Self.api(base, backoff: APIBackoff(initialMilliseconds: 20, maximumMilliseconds: 40)),
                configuration: .init(sources: ["pipevideo"], pollAfterMilliseconds: 200, routes: { _ in [] }),
                logger: Fixture.logger, scanInterval: .milliseconds(50),
                backoff: APIBackoff(initialMilliseconds: 300, maximumMilliseconds: 60_000)
            )
            try await Self.running(reconciler, timeout: 30) { await fake.requests(for: "gen_bad").count >= 5 }
            let times = await fake.requests(for: "gen_bad").map(\.at)
            let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
            // Equal jitter: each wait is at least half its step (150, 300, 600, 1200 ms).
            #expect(gaps.count >= 4 && gaps[2] >= 600 && gaps[3] >= 1_200, "gaps \(gaps)")
            // Meanwhile other ids' polls succeeded (each resets the client's shared pause).
            let healthy = await fake.requests(for: "gen_ok0").map(\.at)
            #expect(healthy.contains { $0 > times[0] && $0 < times[times.count - 1] }, "the other ids were polled meanwhile")
            #expect(try await h.store.polling(generationID: "gen_bad").first?.failures ?? 0 >= 4)
        }
    }

    @Test func unknownIdStopsPollingAndShowsInStatus() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            _ = try await h.store.track(source: "pipevideo", generationID: "gen_missing", at: Fixture.now() * 1000)
            let reconciler = { Self.reconciler(h.store, Self.api(base), pollAfter: 200) }
            try await Self.running(reconciler()) { try await h.store.polling(generationID: "gen_missing").first?.state == .stopped }
            try await Self.idle(reconciler(), seconds: 0.8)
            #expect(await fake.requests(for: "gen_missing").count == 1)
            let json = try #require(try await Commands.statusDocument(generationID: "gen_missing", store: h.store))
            let document = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            #expect(document["status"] is NSNull)
            let polling = try #require(document["polling"] as? [String: Any])
            #expect(polling["state"] as? String == "stopped")
            #expect(polling["tracked"] as? Bool == true)
            #expect((polling["last_result"] as? String)?.contains("404") == true)
            let text = try await Commands.status(generationID: "gen_missing", source: nil, store: h.store, json: false)
            #expect(text.contains("polling:  tracked, stopped"))
            // Tracking again restarts it.
            #expect(try await h.store.track(source: "pipevideo", generationID: "gen_missing", at: Fixture.now() * 1000).result == .tracked)
        }
    }

    @Test func rejectedKeyPausesWithOneLogLineAndResumesWithANewKey() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: "pv_the_right_key_000000")
        let log = CapturedLog()
        for index in 0..<3 { await fake.script("gen_key_\(index)", [.status("completed")]) }
        try await fake.run { base in
            for index in 0..<3 { _ = try await h.store.track(source: "pipevideo", generationID: "gen_key_\(index)", at: Fixture.now() * 1000) }
            let api = Self.api(base, logger: log.logger)
            let reconciler = { Self.reconciler(h.store, api, logger: log.logger) }
            // Long enough for the first answer on a busy machine; the next try is a minute away.
            try await Self.idle(reconciler(), seconds: 4)
            #expect(await fake.requests.count == 1, "paused after the first 401")
            let errors = log.entries.filter { $0.0 == .error }
            #expect(errors.count == 1)
            #expect(errors.first?.1.contains("HTTP 401") == true)
            // A reload with the right key resumes at once.
            await api.update(API(baseURL: base, key: "pv_the_right_key_000000", requestsPerMinute: 6_000, pollAfterSeconds: 1))
            try await Self.running(reconciler()) {
                var done = 0
                for index in 0..<3 where try await Self.status(h.store, "gen_key_\(index)") == .completed { done += 1 }
                return done == 3
            }
            #expect(log.all.contains("accepts the key again"))
            #expect(!log.all.contains(Self.key) && !log.all.contains("pv_the_right_key_000000"), "the key never reaches a log")
        }
    }

    @Test func cancelledAndIncompleteAreTerminal() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.script("gen_cancel", [.status("processing"), .status("cancelled")])
        await fake.script("gen_incomplete", [.status("pending"), .status("incomplete", error: "max duration reached")])
        try await fake.run { base in
            for id in ["gen_cancel", "gen_incomplete"] { _ = try await h.store.track(source: "pipevideo", generationID: id, at: Fixture.now() * 1000) }
            let reconciler = { Self.reconciler(h.store, Self.api(base), pollAfter: 200) }
            try await Self.running(reconciler()) {
                let cancelled = try await Self.status(h.store, "gen_cancel"), incomplete = try await Self.status(h.store, "gen_incomplete")
                return cancelled == .cancelled && incomplete == .incomplete
            }
            #expect(try await h.store.generations(withID: "gen_cancel").first?.timeline.map(\.status) == [.inProgress, .cancelled])
            #expect(try await h.store.generations(withID: "gen_incomplete").first?.timeline.map(\.status) == [.queued, .incomplete])
            #expect(try await h.store.jobs(generationID: "gen_cancel", source: "pipevideo").map(\.route) == ["notify"])
            #expect(try await h.store.jobs(generationID: "gen_incomplete", source: "pipevideo").map(\.route) == ["notify"])
            let asked = await fake.requests.count
            try await Self.idle(reconciler(), seconds: 0.8)
            #expect(await fake.requests.count == asked, "terminal generations are not polled")
        }
    }

    @Test func expiredDownloadURLIsRefreshedAndRetriedAtOnce() async throws {
        let h = try Harness()
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            await fake.allowToken("fresh")
            await fake.script("gen_dl", [.status("completed", url: "\(base)/videos/gen_dl.mp4?token=fresh")])
            var delivery = Fixture.delivery(id: "msg_dl", generation: "gen_dl", status: .completed, at: Fixture.now() * 1000)
            delivery.content = .event(GenerationEvent(
                eventType: PipevideoFormat.completedEventType, generationID: "gen_dl", status: .completed,
                outputURL: "\(base)/videos/gen_dl.mp4?token=expired"
            ))
            delivery.routes = ["archive"]
            _ = try await h.store.ingest(delivery)
            let api = Self.api(base)
            let runner = DownloadRunner(httpClient: HTTPClient.shared, logger: Fixture.logger)
            let refreshing = RefreshingDownload(
                download: { await runner.run($0, context: $1) }, api: api, sources: { ["pipevideo"] }, logger: Fixture.logger
            )
            let settings = try SettingsParser.parse(yaml: Fixture.yaml(dir: h.dir.path, extra: """
                routes:
                  - name: archive
                    on: [completed]
                    steps:
                      - download: {dir: "\(h.dir.path)/videos", path: "{generation_id}.{ext}", allow_http: true, retry: {attempts: 3, initial_delay: 60s, max_delay: 60s}}
                """), environment: [:])
            let dispatcher = Dispatcher(
                store: h.store, routes: RouteTable(settings.routes),
                runners: StepRunners(
                    exec: { _, _ in StepOutcome(result: .permanent, summary: "unused") },
                    download: { await refreshing.run($0, context: $1) },
                    post: { _, _ in StepOutcome(result: .permanent, summary: "unused") }
                ),
                logger: Fixture.logger
            )
            let task = Task { try await dispatcher.run() }
            defer { task.cancel() }
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline, try await h.store.jobs(state: .succeeded, limit: 5).isEmpty {
                try await Task.sleep(for: .milliseconds(50))
            }
            let job = try #require(try await h.store.jobs(state: .succeeded, limit: 5).first)
            let attempts = try await h.store.attempts(jobID: job.id)
            #expect(attempts.count == 1, "refreshed within the same attempt")
            #expect(attempts.first?.summary?.contains("output URL refreshed after HTTP 403") == true)
            let saved = try Data(contentsOf: URL(fileURLWithPath: h.dir.path + "/videos/gen_dl.mp4"))
            #expect(Array(saved) == FakePipevideoAPI.video)
            #expect(await fake.requests(for: "gen_dl").count == 1)
        }
    }
}
