import PipehookLifecycle

/// `pipehook replay`: which stored event it re-runs and which routes it starts. Every store reads
/// the events with the id (of `source`, when given) and asks this.
public enum ReplayRules {
    /// The one event to replay; an id stored under several sources needs `--source`.
    public static func event(_ events: [StoredEvent], eventID: String) throws(StoreError) -> StoredEvent {
        guard let event = events.first else { throw StoreError(.notFound, "no stored event \(eventID)") }
        guard events.count == 1 else {
            throw StoreError(.invalid, "event \(eventID) exists in several sources (\(events.map(\.source).joined(separator: ", "))); pass --source")
        }
        return event
    }

    /// The routes configured for the event's status; none is an error (nothing would run).
    public static func routes(for event: StoredEvent, _ routes: (GenerationStatus) -> [RoutePin]) throws(StoreError) -> [RoutePin] {
        let pins = routes(event.status)
        guard !pins.isEmpty else { throw StoreError(.invalid, "no configured route starts on status \(event.status.rawValue)") }
        return pins
    }
}

/// Reconciliation bookkeeping rules (SPEC §7) shared by the stores.
public enum PollRules {
    /// Statuses a generation is still polled in (every non-terminal one).
    public static let openStatuses: [GenerationStatus] = GenerationStatus.allCases.filter { !$0.isTerminal }

    /// The statuses as an SQL list, `('queued', 'in_progress')`.
    public static let openStatusesSQL = "(" + openStatuses.map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"

    public static func isOpen(_ status: GenerationStatus) -> Bool { !status.isTerminal }

    /// What `track` does given the stored status and whether the id is tracked and still polled:
    /// a finished generation needs nothing, one tracked and active already is left alone, anything
    /// else (new, found stuck before, stopped after a 404) is polled from now on.
    public static func track(status: GenerationStatus?, trackedAndActive: Bool) -> TrackOutcome.Result {
        if let status, status.isTerminal { return .alreadyFinished }
        return trackedAndActive ? .alreadyTracked : .tracked
    }
}

/// Retention (SPEC §3.7): what `prune` deletes, by the cut-offs of one run. Stores express these
/// as their `DELETE`s; the in-memory store calls them row by row.
public struct RetentionRules: Sendable, Equatable {
    /// Delivery ids received before this (Unix ms) leave the dedup table.
    public var dedupCutoff: Int64
    /// Finished rows last touched before this (Unix ms) are deleted.
    public var retentionCutoff: Int64
    /// Rows of each kind one prune transaction deletes at most (stores loop until less remain).
    public static let batchSize = 1_000

    /// Job states deleted past retention: succeeded, and dead only when asked (`--include-dead`).
    public var finishedJobStates: [JobState]

    public init(now: Int64, dedupWindowSeconds: Int64, retentionSeconds: Int64, includingDead: Bool) {
        dedupCutoff = now - dedupWindowSeconds * 1000
        retentionCutoff = now - retentionSeconds * 1000
        finishedJobStates = includingDead ? [.succeeded, .dead] : [.succeeded]
    }

    /// Statuses whose generations retention may delete, as an SQL list (`'completed', 'failed', …`,
    /// without parentheses).
    public static let terminalStatusesSQL = GenerationStatus.terminal.map { "'\($0.rawValue)'" }.joined(separator: ", ")

    /// The job states as an SQL list, `('succeeded', 'dead')`.
    public var finishedJobStatesSQL: String { "(" + finishedJobStates.map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")" }

    public func deliveryExpired(receivedAt: Int64) -> Bool { receivedAt < dedupCutoff }

    /// A finished job past retention (its attempts go with it).
    public func jobExpired(_ job: JobRecord) -> Bool { finishedJobStates.contains(job.state) && job.updatedAt < retentionCutoff }

    /// A terminal generation idle past retention; it goes with its whole timeline and polls unless
    /// a job still refers to it (the caller checks).
    public func generationExpired(_ generation: GenerationRecord) -> Bool {
        generation.status.isTerminal && generation.updatedAt < retentionCutoff
    }

    /// Polling of an id the API never knew (404), idle past retention (when no generation has it).
    public func unknownPollExpired(state: PollRecord.State, updatedAt: Int64) -> Bool { state == .stopped && updatedAt < retentionCutoff }

    public func unrecognizedExpired(receivedAt: Int64) -> Bool { receivedAt < retentionCutoff }

    /// An idempotency key older than retention: a repeat of that create is no longer recognised.
    public func idempotencyKeyExpired(createdAt: Int64) -> Bool { createdAt < retentionCutoff }
}
