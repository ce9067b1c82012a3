/// An idempotency key of a create (`Idempotency-Key`, `pipehook submit --idempotency-key`),
/// recorded before the API is called (SPEC §7).
public struct IdempotencyRecord: Sendable, Equatable {
    public enum State: String, Sendable, CaseIterable {
        /// Recorded; the API call is under way, or its outcome was never learnt (crash, timeout).
        case pending
        /// The API created the generation: `generationID` and `answer` hold what it said.
        case created
    }

    public var key: String
    public var state: State
    /// SHA-256 (hex) of the create body the key was first used with.
    public var digest: String
    public var generationID: String?
    public var answer: [UInt8]?
    public var createdAt: Int64

    public init(key: String, state: State, digest: String, generationID: String?, answer: [UInt8]?, createdAt: Int64) {
        self.key = key
        self.state = state
        self.digest = digest
        self.generationID = generationID
        self.answer = answer
        self.createdAt = createdAt
    }
}

/// What claiming an idempotency key found.
public enum IdempotencyClaim: Sendable, Equatable {
    /// New: recorded as pending. Make the call, then `completeIdempotencyKey` or `releaseIdempotencyKey`.
    case fresh
    /// Used before and the generation was created: answer with the first answer, call nothing.
    case created(generationID: String, answer: [UInt8])
    /// Used before, and whether that call created a generation is not known (it was cut short):
    /// refused (409 `outcome_unknown`) rather than risk a second generation.
    case outcomeUnknown(since: Int64)
    /// Used before with a different body: refused (422 `idempotency_key_reused`).
    case mismatch
}

/// The rules of idempotent creation, the same for every store.
public enum IdempotencyRules {
    /// Keys are printable text of 1…255 bytes (Stripe's and the IETF draft's practice).
    public static let maxKeyBytes = 255

    /// Why `key` cannot be used, or nil when it can.
    public static func problem(key: String) -> String? {
        if key.isEmpty { return "the idempotency key is empty" }
        if key.utf8.count > maxKeyBytes { return "the idempotency key is longer than \(maxKeyBytes) bytes" }
        if key.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return "the idempotency key contains a control character"
        }
        return nil
    }

    /// Stores refuse a key the edges should have refused.
    public static func validate(key: String) throws(StoreError) {
        if let problem = problem(key: key) { throw StoreError(.invalid, problem) }
    }

    /// What a claim means given the key's record, if any (nil: insert it as pending, `.fresh`).
    public static func claim(existing: IdempotencyRecord?, digest: String) -> IdempotencyClaim? {
        guard let existing else { return nil }
        guard existing.digest == digest else { return .mismatch }
        switch existing.state {
        case .created:
            guard let id = existing.generationID, let answer = existing.answer else { return .outcomeUnknown(since: existing.createdAt) }
            return .created(generationID: id, answer: answer)
        case .pending: return .outcomeUnknown(since: existing.createdAt)
        }
    }
}

/// The store side of creating generations through pipehook (SPEC §7 "the whole life cycle"). The
/// created generation itself goes through `ingest` like any event, with origin `api`.
public protocol CreationStore: Sendable {
    /// Records `key` as pending for a create with body digest `digest`, or says what it was used for.
    func claimIdempotencyKey(_ key: String, digest: String, at: Int64) async throws(StoreError) -> IdempotencyClaim
    /// The call created `generationID` and answered `answer`: repeats get that answer.
    func completeIdempotencyKey(_ key: String, generationID: String, answer: [UInt8], at: Int64) async throws(StoreError)
    /// The call certainly created nothing (refused, never sent): the key may be used again.
    func releaseIdempotencyKey(_ key: String) async throws(StoreError)
    /// The key's record, if any.
    func idempotencyKey(_ key: String) async throws(StoreError) -> IdempotencyRecord?
}
