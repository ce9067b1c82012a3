/// A generation's status. Ranks only ever go up; all terminal statuses share the top rank.
public enum GenerationStatus: String, Sendable, Hashable, CaseIterable, Codable {
    case queued
    case inProgress = "in_progress"
    case completed
    case failed
    case cancelled
    case incomplete

    /// 0 queued, 1 in progress, 2 terminal.
    public var rank: Int {
        switch self {
        case .queued: 0
        case .inProgress: 1
        case .completed, .failed, .cancelled, .incomplete: 2
        }
    }

    public var isTerminal: Bool { rank == 2 }

    /// Parses a provider's status word, accepting the older names `pending` and `processing`.
    public init?(providerValue: String) {
        switch providerValue {
        case "pending": self = .queued
        case "processing": self = .inProgress
        default: self.init(rawValue: providerValue)
        }
    }

    public static let terminal: [GenerationStatus] = allCases.filter(\.isTerminal)
}

/// What an incoming event did to its generation (SPEC §3.4).
public enum Transition: String, Sendable, Hashable, CaseIterable, Codable {
    /// The status rose (or the generation is new): the state changed and routes may fire.
    case applied
    /// The event is older than the current state: recorded, nothing changes.
    case stale
    /// The generation already has this status: recorded, no new jobs.
    case same
    /// A different terminal status after a terminal one: recorded, first terminal wins.
    case conflict

    /// True when the generation's stored status must change.
    public var changesState: Bool { self == .applied }
}

/// The one-way state machine. Pure: decides, never stores.
public enum Lifecycle {
    public static func transition(from current: GenerationStatus?, to incoming: GenerationStatus) -> Transition {
        guard let current else { return .applied }
        if incoming == current { return .same }
        if incoming.rank > current.rank { return .applied }
        if incoming.rank < current.rank { return .stale }
        // Same rank, different status: only possible between terminal statuses.
        return .conflict
    }

    /// Folds a sequence of statuses the way the store does, for reasoning and tests.
    public static func fold<S: Sequence>(_ statuses: S, from start: GenerationStatus? = nil) -> GenerationStatus?
    where S.Element == GenerationStatus {
        var current = start
        for status in statuses where transition(from: current, to: status).changesState {
            current = status
        }
        return current
    }
}
