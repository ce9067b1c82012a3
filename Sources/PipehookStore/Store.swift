import PipehookFormats
import PipehookLifecycle

/// Where an event came from: a signed webhook, a snapshot polled from the provider's API, or
/// pipehook's own call to that API (a create answered `queued`, a cancel answered `cancelled`).
public enum EventOrigin: String, Sendable, Codable, CaseIterable {
    case webhook
    case poll
    case api
}

/// A verified request on its way into the store. Nothing unverified is ever built into one.
public struct IncomingDelivery: Sendable {
    public enum Content: Sendable {
        /// The format understood the body.
        case event(GenerationEvent)
        /// Signed but not interpretable: kept raw so it can be reprocessed later (SPEC §3.6).
        case unrecognized(reason: String)
    }

    public var source: String
    /// The sender's message id (`svix-id` / `webhook-id`): the dedup key and the event id.
    public var deliveryID: String
    public var origin: EventOrigin
    /// Unix milliseconds when pipehook received it.
    public var receivedAt: Int64
    /// The signed timestamp (Unix seconds).
    public var signedAt: Int64
    public var body: [UInt8]
    public var content: Content
    /// Routes to start (one job each, pinned to these versions) if this event raises the status.
    public var routes: [RoutePin]
    /// Set when an `unrecognized` delivery is read again: its delivery id is already recorded.
    public var reprocessing: Int64?

    public init(
        source: String, deliveryID: String, origin: EventOrigin = .webhook, receivedAt: Int64, signedAt: Int64,
        body: [UInt8], content: Content, routes: [RoutePin] = []
    ) {
        self.routes = routes
        self.reprocessing = nil
        self.source = source
        self.deliveryID = deliveryID
        self.origin = origin
        self.receivedAt = receivedAt
        self.signedAt = signedAt
        self.body = body
        self.content = content
    }
}

/// What the store did with a delivery; the HTTP answer follows from it.
public enum IntakeOutcome: Sendable, Equatable {
    case accepted(generationID: String, status: GenerationStatus, transition: Transition, previous: GenerationStatus?)
    case duplicate
    case unrecognized
}

/// The store could not do what was asked. `unavailable` maps to 503 so the sender retries.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        case unavailable, notFound, invalid
        /// A write under a lease that another claim has taken since: nothing was recorded.
        case fenced
    }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { message }
}

public struct GenerationRecord: Sendable, Equatable, Codable {
    public var source: String
    public var generationID: String
    public var status: GenerationStatus
    public var outputURL: String?
    public var errorMessage: String?
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(
        source: String, generationID: String, status: GenerationStatus, outputURL: String?, errorMessage: String?,
        createdAt: Int64, updatedAt: Int64
    ) {
        self.source = source
        self.generationID = generationID
        self.status = status
        self.outputURL = outputURL
        self.errorMessage = errorMessage
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// One received event in a generation's timeline, whatever it did.
public struct TimelineEntry: Sendable, Equatable, Codable {
    public var eventID: String
    public var origin: EventOrigin
    public var status: GenerationStatus
    public var previousStatus: GenerationStatus?
    public var transition: Transition
    public var outputURL: String?
    public var errorMessage: String?
    public var receivedAt: Int64
    public var signedAt: Int64

    public init(
        eventID: String, origin: EventOrigin, status: GenerationStatus, previousStatus: GenerationStatus?,
        transition: Transition, outputURL: String?, errorMessage: String?, receivedAt: Int64, signedAt: Int64
    ) {
        self.eventID = eventID
        self.origin = origin
        self.status = status
        self.previousStatus = previousStatus
        self.transition = transition
        self.outputURL = outputURL
        self.errorMessage = errorMessage
        self.receivedAt = receivedAt
        self.signedAt = signedAt
    }
}

public struct GenerationDetail: Sendable, Equatable {
    public var generation: GenerationRecord
    public var timeline: [TimelineEntry]
    public init(generation: GenerationRecord, timeline: [TimelineEntry]) {
        self.generation = generation
        self.timeline = timeline
    }
}

public struct PruneReport: Sendable, Equatable, Codable {
    /// Adds another pass's counts.
    public mutating func add(_ other: PruneReport) {
        deliveries += other.deliveries
        events += other.events
        generations += other.generations
        unrecognized += other.unrecognized
        jobs += other.jobs
    }

    public var deliveries: Int
    public var events: Int
    public var generations: Int
    public var unrecognized: Int
    public var jobs: Int
    public init(deliveries: Int = 0, events: Int = 0, generations: Int = 0, unrecognized: Int = 0, jobs: Int = 0) {
        self.jobs = jobs
        self.deliveries = deliveries
        self.events = events
        self.generations = generations
        self.unrecognized = unrecognized
    }
}

public struct StoreCounts: Sendable, Equatable, Codable {
    public var deliveries: Int
    public var events: Int
    public var generations: Int
    public var unrecognized: Int
    public init(deliveries: Int, events: Int, generations: Int, unrecognized: Int) {
        self.deliveries = deliveries
        self.events = events
        self.generations = generations
        self.unrecognized = unrecognized
    }
}

/// The one storage contract; SQLite now, PostgreSQL later. Each method is one transaction.
public protocol WebhookStore: Sendable {
    /// Dedups, applies the one-way transition and records the event, durably, before returning.
    /// Concurrent callers may share one commit.
    func ingest(_ delivery: IncomingDelivery) async throws(StoreError) -> IntakeOutcome

    /// Every generation with this id (one per source that reported it).
    func generations(withID id: String) async throws(StoreError) -> [GenerationDetail]

    /// The generation each stored event with this id is about, one per source that has it
    /// (search by delivery id, issue 14), in source byte order.
    func eventGenerations(eventID: String) async throws(StoreError) -> [GenerationKey]

    /// A generation's stored events with their raw payloads, in the order they were stored (the
    /// generation's page, issue 14).
    func events(source: String, generationID: String) async throws(StoreError) -> [StoredEvent]

    /// One page of generations in `GenerationQuery`'s order.
    func generations(_ query: GenerationQuery) async throws(StoreError) -> [GenerationRecord]

    /// Deletes delivery ids past the dedup window, and finished jobs and generations past
    /// retention. Dead jobs (and what they need) are kept unless `includingDead`.
    func prune(nowMilliseconds: Int64, dedupWindowSeconds: Int64, retentionSeconds: Int64, includingDead: Bool) async throws(StoreError) -> PruneReport

    func counts() async throws(StoreError) -> StoreCounts

    /// What happened in `window` (the status page's charts), read by time indexes only.
    func activity(_ window: ActivityWindow, parts: Activity.Parts) async throws(StoreError) -> Activity

    /// True when a write transaction can be started now.
    func isWritable() async -> Bool

    /// Signed deliveries no format could read, oldest first, not yet reprocessed.
    /// `after` pages through them: only those with a larger `seq`.
    func unrecognized(after: Int64, limit: Int) async throws(StoreError) -> [UnrecognizedDelivery]

    /// Timeline entries of every generation in commit order (`seq`), oldest first, for the event
    /// stream (`GET /api/events`). Only entries with a larger `seq` than `after`.
    func events(after seq: Int64, limit: Int) async throws(StoreError) -> [StreamedEvent]

    /// The largest `seq` so far (0 when the store has no event): where a new stream starts.
    func lastEventSeq() async throws(StoreError) -> Int64

    /// New jobs for a stored event's routes, even if they ran before (`pipehook replay`).
    func replay(eventID: String, source: String?, routes: (GenerationStatus) -> [RoutePin], at: Int64) async throws(StoreError) -> [JobRecord]
}


extension WebhookStore {
    /// Everything of `window`.
    public func activity(_ window: ActivityWindow) async throws(StoreError) -> Activity { try await activity(window, parts: .all) }
}

/// One timeline entry with its place in the store's order, for the event stream.
public struct StreamedEvent: Sendable, Equatable {
    public var seq: Int64
    public var source: String
    public var generationID: String
    public var entry: TimelineEntry
    public init(seq: Int64, source: String, generationID: String, entry: TimelineEntry) {
        self.seq = seq
        self.source = source
        self.generationID = generationID
        self.entry = entry
    }
}

public struct UnrecognizedDelivery: Sendable, Equatable {
    public var seq: Int64
    public var source: String
    public var deliveryID: String
    public var receivedAt: Int64
    public var signedAt: Int64
    public var reason: String
    public var raw: [UInt8]
    public init(seq: Int64, source: String, deliveryID: String, receivedAt: Int64, signedAt: Int64, reason: String, raw: [UInt8]) {
        self.seq = seq
        self.source = source
        self.deliveryID = deliveryID
        self.receivedAt = receivedAt
        self.signedAt = signedAt
        self.reason = reason
        self.raw = raw
    }
}

extension WebhookStore {
    /// How many unrecognized bodies `reprocess` reads at a time.
    public static var reprocessPage: Int { 200 }

    public func unrecognized(limit: Int) async throws(StoreError) -> [UnrecognizedDelivery] {
        try await unrecognized(after: .min, limit: limit)
    }

    /// Reads every unrecognized delivery again with `decode`; those it now understands go
    /// through the state machine (and routes) like a webhook. Returns (reprocessed, still unrecognized).
    public func reprocess(
        decode: (UnrecognizedDelivery) -> IncomingDelivery.Content?, routes: @escaping (GenerationStatus) -> [RoutePin], at: Int64
    ) async throws(StoreError) -> (recognized: Int, unrecognized: Int) {
        // In pages, oldest first: never more than a page of raw bodies in memory.
        var recognized = 0, unrecognized = 0, cursor: Int64 = .min
        while true {
            let page = try await self.unrecognized(after: cursor, limit: Self.reprocessPage)
            guard let last = page.last else { break }
            cursor = last.seq
            for item in page {
                guard let content = decode(item), case .event(let event) = content else {
                    unrecognized += 1
                    continue
                }
                var delivery = IncomingDelivery(
                    source: item.source, deliveryID: item.deliveryID, receivedAt: item.receivedAt, signedAt: item.signedAt,
                    body: item.raw, content: content, routes: routes(event.status)
                )
                delivery.reprocessing = item.seq
                _ = try await ingest(delivery)
                recognized += 1
            }
        }
        return (recognized, unrecognized)
    }

}

extension WebhookStore {
    /// The first `limit`, most recently updated first.
    public func generations(status: GenerationStatus?, limit: Int) async throws(StoreError) -> [GenerationRecord] {
        try await generations(GenerationQuery(status: status, limit: limit))
    }
}
