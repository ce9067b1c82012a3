#if canImport(Glibc)
import Glibc
#endif
import PipehookFormats
import PipehookLifecycle

/// A generation's identity: the same id under two sources is two generations. Compared by UTF-8
/// bytes, as the databases compare their keys (Swift's `==` would equate canonically equivalent
/// strings that the store keeps apart).
public struct GenerationKey: Hashable, Sendable {
    public var source: String
    public var generationID: String
    public init(source: String, generationID: String) {
        self.source = source
        self.generationID = generationID
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.source.sameBytes(as: b.source) && a.generationID.sameBytes(as: b.generationID)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytesOf: source)
        hasher.combine(bytesOf: generationID)
    }
}

/// A delivery id or an event id, per source; compared by UTF-8 bytes like `GenerationKey`.
public struct MessageKey: Hashable, Sendable {
    public var source: String
    public var id: String
    public init(source: String, id: String) {
        self.source = source
        self.id = id
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.source.sameBytes(as: b.source) && a.id.sameBytes(as: b.id)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytesOf: source)
        hasher.combine(bytesOf: id)
    }
}

extension String {
    /// Byte-for-byte equality of the UTF-8 forms: one `memcmp` (the generic `elementsEqual` over
    /// `utf8` walks byte by byte and showed up in ingest profiles).
    public func sameBytes(as other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        var a = self, b = other
        return a.withUTF8 { x in b.withUTF8 { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }
}

extension Hasher {
    /// The string's UTF-8 bytes and their count (so ("ab","c") and ("a","bc") differ).
    mutating func combine(bytesOf text: String) {
        var text = text
        text.withUTF8 { combine(bytes: UnsafeRawBufferPointer($0)) }
        combine(text.utf8.count)
    }
}

/// What a store read, under its locks, about the rows a batch of deliveries touches. Everything the
/// ingest rules decide on; nothing else is read.
public struct IngestFacts: Sendable, Equatable {
    /// The store's clock (Unix ms): when new jobs are due.
    public var now: Int64
    /// Delivery ids already recorded (within the dedup window).
    public var seenDeliveries: Set<MessageKey>
    /// Event ids already in a timeline (a replay after its delivery id was pruned).
    public var storedEvents: Set<MessageKey>
    public var statuses: [GenerationKey: GenerationStatus]
    /// Routes whose outbox job a generation already has (replays aside).
    public var jobRoutes: [GenerationKey: Set<String>]

    public init(
        now: Int64, seenDeliveries: Set<MessageKey> = [], storedEvents: Set<MessageKey> = [],
        statuses: [GenerationKey: GenerationStatus] = [:], jobRoutes: [GenerationKey: Set<String>] = [:]
    ) {
        self.now = now
        self.seenDeliveries = seenDeliveries
        self.storedEvents = storedEvents
        self.statuses = statuses
        self.jobRoutes = jobRoutes
    }
}

/// The rows a batch writes, decided by `IngestRules.plan`; a store persists exactly these.
public struct IngestPlan: Sendable, Equatable {
    public struct Delivery: Sendable, Equatable {
        public var source: String
        public var deliveryID: String
        public var receivedAt: Int64
    }

    public struct Unrecognized: Sendable, Equatable {
        public var source: String
        public var deliveryID: String
        public var receivedAt: Int64
        public var signedAt: Int64
        public var reason: String
        public var raw: [UInt8]
    }

    public struct Reprocessed: Sendable, Equatable {
        public var seq: Int64
        public var at: Int64
    }

    public struct Event: Sendable, Equatable {
        public var eventID: String
        public var source: String
        public var origin: EventOrigin
        public var eventType: String
        public var generationID: String
        public var status: GenerationStatus
        public var previousStatus: GenerationStatus?
        public var transition: Transition
        public var outputURL: String?
        public var errorMessage: String?
        public var receivedAt: Int64
        public var signedAt: Int64
        public var raw: [UInt8]
    }

    /// A generation's row after the batch: inserted, or updated (all but `createdAt`).
    public struct Generation: Sendable, Equatable {
        public var source: String
        public var generationID: String
        public var status: GenerationStatus
        public var outputURL: String?
        public var errorMessage: String?
        /// Used only when the row is new.
        public var createdAt: Int64
        public var updatedAt: Int64
        public var lastEventID: String
    }

    public struct Job: Sendable, Equatable {
        public var id: String
        public var source: String
        public var generationID: String
        public var route: RoutePin
        public var eventID: String
        /// Due at the store's time of the batch.
        public var runAt: Int64
        /// When the event was received (the job's created/updated time).
        public var createdAt: Int64
    }

    public struct FinishedPolling: Sendable, Equatable {
        public var key: GenerationKey
        public var at: Int64
    }

    /// One per delivery, in order.
    public var outcomes: [IntakeOutcome] = []
    public var deliveries: [Delivery] = []
    public var reprocessed: [Reprocessed] = []
    public var unrecognized: [Unrecognized] = []
    public var events: [Event] = []
    /// One per generation, in first-touched order.
    public var generations: [Generation] = []
    /// Polls of generations that became terminal: `active` ones become `done`.
    public var finishedPolling: [FinishedPolling] = []
    /// Route versions the new jobs are pinned to, each once.
    public var routeVersions: [RoutePin] = []
    public var jobs: [Job] = []

    public init() {}
}

/// SPEC §3.2–3.6 for a batch of deliveries, decided in one place for every store: duplicate or
/// new, the one-way transition (`Lifecycle`), the timeline entry, the generation's row, the end
/// of polling, and the outbox jobs. Pure: facts in, rows out. A store reads the facts under its
/// locks, calls this, and writes the plan in the same transaction.
public enum IngestRules {
    /// The keys whose facts `plan` needs for `batch`.
    public struct Needs: Sendable, Equatable {
        /// Delivery ids to look up in the dedup table (webhooks only: polls and reprocessing skip it).
        public var deliveries: [MessageKey] = []
        public var events: [MessageKey] = []
        public var generations: [GenerationKey] = []
        /// Generations an event with routes is about: their existing outbox jobs matter.
        public var jobRoutes: [GenerationKey] = []
    }

    public static func needs(_ batch: [IncomingDelivery]) -> Needs {
        var needs = Needs()
        var seenDeliveries = Set<MessageKey>(), seenEvents = Set<MessageKey>(), seenGenerations = Set<GenerationKey>()
        var seenJobs = Set<GenerationKey>()
        for delivery in batch {
            let message = MessageKey(source: delivery.source, id: delivery.deliveryID)
            if delivery.reprocessing == nil, delivery.origin == .webhook, seenDeliveries.insert(message).inserted {
                needs.deliveries.append(message)
            }
            guard case .event(let event) = delivery.content else { continue }
            if seenEvents.insert(message).inserted { needs.events.append(message) }
            let generation = GenerationKey(source: delivery.source, generationID: event.generationID)
            if seenGenerations.insert(generation).inserted { needs.generations.append(generation) }
            if !delivery.routes.isEmpty, seenJobs.insert(generation).inserted { needs.jobRoutes.append(generation) }
        }
        return needs
    }

    /// Decides every row the batch writes, as if its deliveries were ingested one after another.
    public static func plan(
        _ batch: [IncomingDelivery], facts: IngestFacts, makeJobID: () -> String = { JobID.make() }
    ) -> IngestPlan {
        var plan = IngestPlan()
        var seenDeliveries = facts.seenDeliveries
        var storedEvents = facts.storedEvents
        var statuses = facts.statuses
        var jobRoutes = facts.jobRoutes
        var generationIndex: [GenerationKey: Int] = [:]
        var pinned = Set<String>()
        plan.outcomes.reserveCapacity(batch.count)

        for delivery in batch {
            let message = MessageKey(source: delivery.source, id: delivery.deliveryID)
            if let seq = delivery.reprocessing {
                plan.reprocessed.append(.init(seq: seq, at: delivery.receivedAt))
                if case .unrecognized = delivery.content {
                    plan.outcomes.append(.unrecognized)
                    continue
                }
            } else if delivery.origin == .webhook {
                // SPEC §3.3a: a delivery id seen before does nothing else.
                guard seenDeliveries.insert(message).inserted else {
                    plan.outcomes.append(.duplicate)
                    continue
                }
                plan.deliveries.append(.init(source: delivery.source, deliveryID: delivery.deliveryID, receivedAt: delivery.receivedAt))
            }
            switch delivery.content {
            case .unrecognized(let reason):
                // SPEC §3.6: signed but not interpretable is kept raw.
                plan.unrecognized.append(.init(
                    source: delivery.source, deliveryID: delivery.deliveryID, receivedAt: delivery.receivedAt,
                    signedAt: delivery.signedAt, reason: reason, raw: delivery.body
                ))
                plan.outcomes.append(.unrecognized)
            case .event(let event):
                // An event id still in the timeline after its delivery id was pruned: a replay.
                guard storedEvents.insert(message).inserted else {
                    plan.outcomes.append(.duplicate)
                    continue
                }
                let key = GenerationKey(source: delivery.source, generationID: event.generationID)
                let current = statuses[key]
                let transition = Lifecycle.transition(from: current, to: event.status)
                // SPEC §3.4: every received event is kept in the timeline, whatever it did.
                plan.events.append(.init(
                    eventID: delivery.deliveryID, source: delivery.source, origin: delivery.origin, eventType: event.eventType,
                    generationID: event.generationID, status: event.status, previousStatus: current, transition: transition,
                    outputURL: event.outputURL, errorMessage: event.errorMessage, receivedAt: delivery.receivedAt,
                    signedAt: delivery.signedAt, raw: delivery.body
                ))
                plan.outcomes.append(.accepted(generationID: event.generationID, status: event.status, transition: transition, previous: current))
                guard transition.changesState else { continue }
                statuses[key] = event.status
                let row = IngestPlan.Generation(
                    source: delivery.source, generationID: event.generationID, status: event.status, outputURL: event.outputURL,
                    errorMessage: event.errorMessage, createdAt: delivery.receivedAt, updatedAt: delivery.receivedAt,
                    lastEventID: delivery.deliveryID
                )
                if let index = generationIndex[key] {
                    let createdAt = plan.generations[index].createdAt
                    plan.generations[index] = row
                    plan.generations[index].createdAt = createdAt
                } else {
                    generationIndex[key] = plan.generations.count
                    plan.generations.append(row)
                }
                // A generation that ended needs no more polling.
                if event.status.isTerminal { plan.finishedPolling.append(.init(key: key, at: delivery.receivedAt)) }
                // SPEC §3.5: the outbox jobs commit with the transition, one per (generation, route).
                for route in delivery.routes {
                    guard jobRoutes[key, default: []].insert(route.name).inserted else { continue }
                    if route.isPinned, pinned.insert(route.version).inserted { plan.routeVersions.append(route) }
                    plan.jobs.append(.init(
                        id: makeJobID(), source: delivery.source, generationID: event.generationID, route: route,
                        eventID: delivery.deliveryID, runAt: facts.now, createdAt: delivery.receivedAt
                    ))
                }
            }
        }
        return plan
    }
}
