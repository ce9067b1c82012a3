import PipehookLifecycle

/// What `track` did (`pipehook track`, `POST /api/generations`).
public struct TrackOutcome: Sendable, Equatable {
    public enum Result: Sendable, Equatable {
        /// Now tracked: it is polled at once and then every `poll_after` until it ends.
        case tracked
        case alreadyTracked
        /// The store already has it in a terminal status: nothing to poll.
        case alreadyFinished
    }

    public var result: Result
    public var source: String
    /// The status the store has for it, if any.
    public var status: GenerationStatus?

    public init(result: Result, source: String, status: GenerationStatus?) {
        self.result = result
        self.source = source
        self.status = status
    }
}

/// The reconciler's record of one generation it polls (or has stopped polling).
public struct PollRecord: Sendable, Equatable {
    public enum State: String, Sendable, Codable, CaseIterable {
        /// Polled at `nextPollAt` while the generation is not terminal.
        case active
        /// The API does not know the id (HTTP 404): never polled again.
        case stopped
        /// The generation reached a terminal status.
        case done
    }

    public var source: String
    public var generationID: String
    /// Asked for by `track` (rather than found stuck in the store).
    public var tracked: Bool
    public var state: State
    public var nextPollAt: Int64
    public var lastPolledAt: Int64?
    /// A short human summary of the last answer: "HTTP 200 in_progress", "HTTP 404: unknown id".
    public var lastResult: String?
    /// Failed polls in a row (5xx, timeouts, rate limits).
    public var failures: Int
    public var createdAt: Int64

    public init(
        source: String, generationID: String, tracked: Bool, state: State, nextPollAt: Int64, lastPolledAt: Int64?,
        lastResult: String?, failures: Int, createdAt: Int64
    ) {
        self.source = source
        self.generationID = generationID
        self.tracked = tracked
        self.state = state
        self.nextPollAt = nextPollAt
        self.lastPolledAt = lastPolledAt
        self.lastResult = lastResult
        self.failures = failures
        self.createdAt = createdAt
    }
}

/// A generation the reconciler should fetch now.
public struct PollCandidate: Sendable, Equatable, Hashable {
    public var source: String
    public var generationID: String
    /// Its failed polls in a row so far (0 when never polled): its own backoff, whatever
    /// other generations' polls do.
    public var failures: Int
    public init(source: String, generationID: String, failures: Int = 0) {
        self.source = source
        self.generationID = generationID
        self.failures = failures
    }
}

/// How one poll ended, as the store keeps it.
public struct PollResult: Sendable, Equatable {
    public enum Next: Sendable, Equatable {
        /// Poll again at this time (Unix ms) if still not terminal.
        case pollAt(Int64)
        /// Stop polling for good (404).
        case stop
    }

    public var summary: String
    public var next: Next
    /// True for failures that count toward backoff (5xx, timeouts, 429, 401).
    public var failed: Bool

    public init(summary: String, next: Next, failed: Bool) {
        self.summary = summary
        self.next = next
        self.failed = failed
    }
}

/// Reconciliation bookkeeping (SPEC §7). The snapshots themselves go through `ingest` like
/// webhooks, with origin `poll`.
public protocol PollStore: Sendable {
    /// Marks a generation id to be polled now and until it reaches a terminal status.
    func track(source: String, generationID: String, at: Int64) async throws(StoreError) -> TrackOutcome
    /// Tracked generations that are due, and generations the store has seen that have been
    /// non-terminal since `idleSince` and are due (or never polled). Oldest due first.
    func pollCandidates(now: Int64, idleSince: Int64, limit: Int) async throws(StoreError) -> [PollCandidate]
    func recordPoll(_ candidate: PollCandidate, result: PollResult, at: Int64) async throws(StoreError)
    /// Polling records for a generation id (one per source).
    func polling(generationID: String) async throws(StoreError) -> [PollRecord]
}
