import CoreMetrics
import PipehookLifecycle
import Synchronization

/// Every series pipehook exports (SPEC §9), created through an injected `MetricsFactory` so the
/// daemon can use Prometheus and tests a private registry. Labels are bounded: source and route
/// names come from the configuration, never from requests (no generation ids, no event ids).
public final class PipehookMetrics: Sendable {
    private let factory: any MetricsFactory
    private let counters = Mutex<[Key: Counter]>([:])
    private let timers = Mutex<[Key: CoreMetrics.Timer]>([:])
    private let gauges = Mutex<[Key: Gauge]>([:])

    /// Cache key without building a string per call (this runs on every request).
    private struct Key: Hashable {
        var label: String
        var values: [String]
        init(_ label: String, _ dimensions: [(String, String)]) {
            self.label = label
            values = dimensions.map(\.1)
        }
    }

    /// The intake's series of one source, made once: a delivery costs one lookup by source
    /// name, and no label array, key or string is built per request.
    private final class SourceSeries: Sendable {
        let deliveries: [String: Counter]
        let events: [Transition: Counter]
        init(source: String, factory: any MetricsFactory) {
            deliveries = Dictionary(uniqueKeysWithValues: PipehookMetrics.deliveryResults.map { result in
                (result, Counter(label: "pipehook_deliveries_total", dimensions: [("source", source), ("result", result)], factory: factory))
            })
            events = Dictionary(uniqueKeysWithValues: Transition.allCases.map { transition in
                (transition, Counter(label: "pipehook_events_total", dimensions: [("source", source), ("transition", transition.rawValue)], factory: factory))
            })
        }
    }

    static let deliveryResults = ["accepted", "duplicate", "unrecognized", "rejected", "store_unavailable"]
    private let sources = Mutex<[String: SourceSeries]>([:])
    /// `from × to` of applied transitions, made on first use: index `from * count + to`.
    private let transitions: Mutex<[Counter?]>
    private let ingestTimer: CoreMetrics.Timer
    /// Results and latencies since start, readable in process (the status page).
    public let tally = LocalTally(results: PipehookMetrics.deliveryResults)

    public init(factory: any MetricsFactory) {
        self.factory = factory
        transitions = Mutex(Array(repeating: nil, count: (GenerationStatus.allCases.count + 1) * GenerationStatus.allCases.count))
        ingestTimer = CoreMetrics.Timer(label: "pipehook_ingest_duration_seconds", dimensions: [], factory: factory)
    }

    private func series(_ source: String) -> SourceSeries {
        sources.withLock { cache in
            if let existing = cache[source] { return existing }
            let made = SourceSeries(source: source, factory: factory)
            cache[source] = made
            return made
        }
    }

    /// Drops every measurement (for code paths and tests that do not export metrics).
    public static let discarding = PipehookMetrics(factory: NOOPMetricsHandler.instance)

    // MARK: intake

    /// `result`: accepted, duplicate, unrecognized, rejected, store_unavailable.
    public func delivery(source: String, result: String) {
        tally.count(result: result)
        if let counter = series(source).deliveries[result] {
            counter.increment()
        } else {
            counter("pipehook_deliveries_total", [("source", source), ("result", result)]).increment()
        }
    }

    /// `reason`: the error code (invalid_signature, timestamp_too_old, …).
    public func signatureFailure(source: String, reason: String) {
        counter("pipehook_signature_failures_total", [("source", source), ("reason", reason)]).increment()
    }

    public func event(source: String, transition: Transition, from: GenerationStatus?, to: GenerationStatus) {
        series(source).events[transition]?.increment()
        if transition == .applied { transitionCounter(from: from, to: to).increment() }
    }

    private func transitionCounter(from: GenerationStatus?, to: GenerationStatus) -> Counter {
        let statuses = GenerationStatus.allCases
        let fromIndex = from.flatMap { statuses.firstIndex(of: $0) }.map { $0 + 1 } ?? 0
        let index = fromIndex * statuses.count + statuses.firstIndex(of: to)!
        return transitions.withLock { table in
            if let existing = table[index] { return existing }
            let made = Counter(label: "pipehook_transitions_total", dimensions: [("from", from?.rawValue ?? "none"), ("to", to.rawValue)], factory: factory)
            table[index] = made
            return made
        }
    }

    public func ingestLatency(nanoseconds: Int64) {
        ingestTimer.recordNanoseconds(nanoseconds)
        tally.record(nanoseconds: nanoseconds)
    }

    // MARK: jobs

    /// `result`: succeeded, failed (retry scheduled), dead, interrupted.
    public func attempt(route: String, step: String, result: String, nanoseconds: Int64) {
        counter("pipehook_attempts_total", [("route", route), ("step", step), ("result", result)]).increment()
        timer("pipehook_step_duration_seconds", [("route", route), ("step", step)]).recordNanoseconds(nanoseconds)
    }

    /// `result`: succeeded or dead.
    public func jobFinished(route: String, result: String) {
        counter("pipehook_jobs_total", [("route", route), ("result", result)]).increment()
    }

    public func downloaded(route: String, bytes: Int64) {
        counter("pipehook_download_bytes_total", [("route", route)]).increment(by: bytes)
    }

    /// Requests to the provider's API (reconciliation and URL refreshes). `result`: ok,
    /// not_found, unauthorized, rate_limited, unavailable, rejected.
    public func apiRequest(result: String) {
        counter("pipehook_api_requests_total", [("result", result)]).increment()
    }

    public func jobsWaiting(pending: Int, dead: Int) {
        gauge("pipehook_jobs_pending", []).record(pending)
        gauge("pipehook_jobs_dead", []).record(dead)
    }

    // MARK: cache

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        counters.withLock { cache in
            let key = Key(label, dimensions)
            if let existing = cache[key] { return existing }
            let made = Counter(label: label, dimensions: dimensions, factory: factory)
            cache[key] = made
            return made
        }
    }

    private func timer(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        timers.withLock { cache in
            let key = Key(label, dimensions)
            if let existing = cache[key] { return existing }
            let made = CoreMetrics.Timer(label: label, dimensions: dimensions, factory: factory)
            cache[key] = made
            return made
        }
    }

    private func gauge(_ label: String, _ dimensions: [(String, String)]) -> Gauge {
        gauges.withLock { cache in
            let key = Key(label, dimensions)
            if let existing = cache[key] { return existing }
            let made = Gauge(label: label, dimensions: dimensions, factory: factory)
            cache[key] = made
            return made
        }
    }
}
