import Foundation
import Logging
import PipehookFormats
import PipehookLifecycle
import PipehookMetrics
import PipehookStore
import ServiceLifecycle
import Synchronization

/// Polls the provider for generations that webhooks may have missed (SPEC §7): tracked ids,
/// and generations the store has seen that stay non-terminal longer than `poll_after`. Each
/// snapshot goes through `ingest` like a webhook (origin `poll`), so the state machine, the
/// timeline and the jobs it creates are exactly the same; a webhook and a poll racing for the
/// same transition produce one set of jobs because both are serialised by the store.
public final class Reconciler: Service {
    public struct Configuration: Sendable {
        /// Sources the API knows (format pipevideo); candidates from other sources are not polled.
        public var sources: Set<String>
        public var pollAfterMilliseconds: Int64
        /// Route names by the status that starts them.
        public var routes: @Sendable (GenerationStatus) -> [RoutePin]

        public init(sources: Set<String>, pollAfterMilliseconds: Int64, routes: @escaping @Sendable (GenerationStatus) -> [RoutePin]) {
            self.sources = sources
            self.pollAfterMilliseconds = pollAfterMilliseconds
            self.routes = routes
        }
    }

    let store: any WebhookStore & PollStore
    let api: PipevideoAPI
    let logger: Logger
    let now: @Sendable () -> Int64
    let scanInterval: Duration
    let onJobsCreated: @Sendable () -> Void
    let metrics: PipehookMetrics
    /// Each generation's own backoff after failed polls (2 s doubling to 5 min by default).
    let backoff: APIBackoff
    private let configuration: Mutex<Configuration>
    /// Wake-ups for the current (or next) `run()`. Replaced when a run ends: a stream ends for
    /// good when its reader is cancelled, and with a shared store the reconciler may run again
    /// later on the same instance (each time it holds the reconciliation lock).
    private let wakeups: Mutex<(AsyncStream<Void>, AsyncStream<Void>.Continuation)>
    private var signaller: AsyncStream<Void>.Continuation { wakeups.withLock { $0.1 } }

    public init(
        store: any WebhookStore & PollStore, api: PipevideoAPI, configuration: Configuration, logger: Logger,
        scanInterval: Duration = .seconds(1), onJobsCreated: @escaping @Sendable () -> Void = {},
        metrics: PipehookMetrics = .discarding, backoff: APIBackoff = APIBackoff(),
        now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.backoff = backoff
        self.store = store
        self.api = api
        self.configuration = Mutex(configuration)
        self.logger = logger
        self.scanInterval = scanInterval
        self.onJobsCreated = onJobsCreated
        self.metrics = metrics
        self.now = now
        let (signals, signaller) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wakeups = Mutex((signals, signaller))
    }

    /// Sources being polled (a reload may change them).
    public var sources: Set<String> { configuration.withLock { $0.sources } }

    /// Look for due work now (a generation was just tracked).
    public func notify() { signaller.yield() }

    /// A reload: new sources, `poll_after` or routes apply from the next poll.
    public func update(_ next: Configuration) { configuration.withLock { $0 = next } }

    public func run() async throws {
        let (signals, signaller) = wakeups.withLock { $0 }
        defer {
            let (signals, signaller) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            wakeups.withLock { $0 = (signals, signaller) }
        }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                let interval = self.scanInterval
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        signaller.yield()
                    }
                }
                for await _ in signals {
                    if Task.isCancelled { break }
                    await self.pollDue()
                }
                group.cancelAll()
            }
        }
    }

    static let batch = 32

    /// Polls one batch of due generations; asks for another round when the batch was full. The
    /// API client paces the requests, so a long backlog drains at `requests_per_minute`.
    func pollDue() async {
        let configuration = self.configuration.withLock { $0 }
        let current = now()
        let candidates: [PollCandidate]
        do {
            candidates = try await store.pollCandidates(
                now: current, idleSince: current - configuration.pollAfterMilliseconds, limit: Self.batch
            )
        } catch {
            logger.error("cannot read generations to reconcile", metadata: ["error": .string(error.message)])
            return
        }
        for candidate in candidates {
            if Task.isCancelled { return }
            await poll(candidate, configuration)
        }
        if candidates.count == Self.batch { signaller.yield() }
    }

    func poll(_ candidate: PollCandidate, _ configuration: Configuration) async {
        var metadata: Logger.Metadata = ["source": .string(candidate.source), "generation_id": .string(candidate.generationID)]
        guard configuration.sources.contains(candidate.source) else {
            await record(candidate, PollResult(summary: "not polled: source \(candidate.source) is not a Pipevideo source", next: .stop, failed: false), metadata)
            return
        }
        let answer = await api.fetch(candidate.generationID)
        let polledAt = now()
        let again = polledAt + configuration.pollAfterMilliseconds
        // After a failure this generation waits by its own count of failures in a row: an id the
        // API keeps failing on backs off to 5 minutes even while every other id succeeds.
        let retry = polledAt + backoff.delay(failures: candidate.failures + 1, unit: Double.random(in: 0..<1))
        switch answer {
        case .snapshot(let snapshot, let raw):
            guard snapshot.generationID == candidate.generationID else {
                logger.error("Pipevideo API answered for another id; ignored", metadata: metadata)
                await record(candidate, PollResult(summary: "HTTP 200 for another id (\(snapshot.generationID.prefix(64)))", next: .pollAt(max(again, retry)), failed: true), metadata)
                return
            }
            let event = GenerationEvent(
                eventType: PipevideoAPIFormat.snapshotEventType, generationID: snapshot.generationID, status: snapshot.status,
                outputURL: snapshot.outputURL, errorMessage: snapshot.errorMessage
            )
            // One event per status seen: polling the same status again is a no-op in the store.
            let delivery = IncomingDelivery(
                source: candidate.source, deliveryID: "poll:\(snapshot.generationID):\(snapshot.status.rawValue)", origin: .poll,
                receivedAt: polledAt, signedAt: polledAt / 1000, body: raw, content: .event(event),
                routes: configuration.routes(snapshot.status)
            )
            metadata["event_id"] = .string(delivery.deliveryID)
            metadata["status"] = .string(snapshot.status.rawValue)
            do {
                let outcome = try await store.ingest(delivery)
                if case .accepted(_, let status, let transition, let previous) = outcome {
                    metrics.event(source: candidate.source, transition: transition, from: previous, to: status)
                    metadata["transition"] = .string(transition.rawValue)
                    if transition == .applied {
                        if !delivery.routes.isEmpty { onJobsCreated() }
                        logger.info("poll applied a status the webhooks had not", metadata: metadata)
                    }
                }
            } catch {
                metadata["error"] = .string(error.message)
                logger.error("cannot store polled status", metadata: metadata)
                await record(candidate, PollResult(summary: "store failed: \(error.message)", next: .pollAt(retry), failed: true), metadata)
                return
            }
            await record(candidate, PollResult(summary: "HTTP 200 \(snapshot.status.rawValue)", next: .pollAt(again), failed: false), metadata)
        case .notFound:
            logger.notice("Pipevideo API does not know this generation; polling stopped", metadata: metadata)
            await record(candidate, PollResult(summary: "HTTP 404: unknown to the Pipevideo API; polling stopped", next: .stop, failed: false), metadata)
        // Failures the client pauses for: due again soon, so a fixed key or a recovered API
        // picks it up first; the client's pause decides when the request is actually sent.
        case .unauthorized:
            await record(candidate, PollResult(summary: "HTTP 401: the API key was rejected", next: .pollAt(polledAt + 1_000), failed: true), metadata)
        case .rateLimited(let wait):
            await record(candidate, PollResult(summary: "HTTP 429: rate limited for \(wait) ms", next: .pollAt(polledAt + wait), failed: true), metadata)
        case .unavailable(let reason):
            await record(candidate, PollResult(summary: reason, next: .pollAt(retry), failed: true), metadata)
        case .rejected(let status):
            await record(candidate, PollResult(summary: "HTTP \(status)", next: .pollAt(max(again, retry)), failed: true), metadata)
        case .throttled:
            // Shutting down while waiting for a slot: nothing was asked.
            return
        }
    }

    private func record(_ candidate: PollCandidate, _ result: PollResult, _ metadata: Logger.Metadata) async {
        do {
            try await store.recordPoll(candidate, result: result, at: now())
        } catch {
            logger.error("cannot record poll", metadata: metadata.merging(["error": .string(error.message)]) { a, _ in a })
        }
    }
}
