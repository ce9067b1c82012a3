import Foundation
import Logging
import PipehookFormats
import PipehookLifecycle
import PipehookSignature
import PipehookStore

/// Creating and cancelling generations through pipehook (SPEC §7 "the whole life cycle"), shared by
/// `pipehook submit`/`cancel` and the gateway. What the API answers goes through `ingest` like any
/// event (origin `api`), so the state machine, the timeline and the routes are the same as for a
/// webhook; a create is then polled like every generation that stays open past `poll_after`.
public struct GenerationControl: Sendable {
    public let store: any Storage
    public let api: PipevideoAPI
    /// The source the generations are recorded under (the configuration's Pipevideo source).
    public let source: String
    public let routes: @Sendable (GenerationStatus) -> [RoutePin]
    public let logger: Logger
    public let now: @Sendable () -> Int64

    public init(
        store: any Storage, api: PipevideoAPI, source: String, routes: @escaping @Sendable (GenerationStatus) -> [RoutePin], logger: Logger,
        now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.store = store
        self.api = api
        self.source = source
        self.routes = routes
        self.logger = logger
        self.now = now
    }

    public enum CreateOutcome: Sendable, Equatable {
        /// Created (or, for a repeated idempotency key, created before): Pipevideo's answer.
        case created(generationID: String, answer: [UInt8], repeated: Bool)
        /// Pipevideo refused it (400 bad input or credits, 401, 429…): nothing was recorded.
        case refused(status: Int, message: String)
        /// The key's first create was cut short and its outcome is unknown: not sent again.
        case outcomeUnknown(key: String)
        /// The key was used for a different body.
        case keyReused(key: String)
        /// The key cannot be used (empty, too long, a control character): nothing was sent.
        case invalidKey(String)
        /// This call's outcome is unknown (timeout, 5xx): with a key, a repeat says `outcomeUnknown`.
        case unknown(reason: String)
    }

    /// Creates a generation from a create body. With `idempotencyKey`, the key is recorded durably
    /// before the call, so a repeat never creates a second generation.
    public func create(_ body: [UInt8], idempotencyKey: String?) async throws(StoreError) -> CreateOutcome {
        if let key = idempotencyKey {
            if let problem = IdempotencyRules.problem(key: key) { return .invalidKey(problem) }
            let digest = body.withUnsafeBytes { Crypto.sha256($0) }.hexString
            switch try await store.claimIdempotencyKey(key, digest: digest, at: now()) {
            case .fresh: break
            case .created(let id, let answer): return .created(generationID: id, answer: answer, repeated: true)
            case .outcomeUnknown: return .outcomeUnknown(key: key)
            case .mismatch: return .keyReused(key: key)
            }
        }
        switch await api.create(body) {
        case .refused(let status, let message):
            if let key = idempotencyKey { try await store.releaseIdempotencyKey(key) }
            logger.notice("Pipevideo refused the create", metadata: ["http_status": .stringConvertible(status), "error": .string(message)])
            return .refused(status: status, message: message)
        case .unknown(let reason):
            logger.error(
                "create outcome unknown: Pipevideo may or may not have created the generation",
                metadata: ["error": .string(reason)].merging(idempotencyKey.map { ["idempotency_key": .string(LogText.clip($0))] } ?? [:]) { a, _ in a }
            )
            return .unknown(reason: reason)
        case .created(let snapshot, let raw):
            let at = now()
            _ = try await store.ingest(IncomingDelivery(
                source: source, deliveryID: "api:create:\(snapshot.generationID)", origin: .api, receivedAt: at, signedAt: at / 1000,
                body: raw, content: .event(GenerationEvent(
                    eventType: PipevideoAPIFormat.createdEventType, generationID: snapshot.generationID, status: snapshot.status,
                    outputURL: snapshot.outputURL, errorMessage: snapshot.errorMessage
                )),
                routes: routes(snapshot.status)
            ))
            if let key = idempotencyKey {
                try await store.completeIdempotencyKey(key, generationID: snapshot.generationID, answer: raw, at: now())
            }
            logger.info("generation created", metadata: [
                "generation_id": .string(snapshot.generationID), "status": .string(snapshot.status.rawValue),
            ])
            return .created(generationID: snapshot.generationID, answer: raw, repeated: false)
        }
    }

    public enum CancelOutcome: Sendable, Equatable {
        /// Pipevideo cancelled it; the store's transition to `cancelled` (`.conflict` when another
        /// terminal status had arrived first).
        case cancelled(transition: Transition)
        /// Already terminal in the store: no API call was made.
        case alreadyFinished(GenerationStatus)
        case refused(status: Int, message: String)
        /// No usable answer; nothing recorded.
        case unavailable(String)
    }

    public func cancel(_ generationID: String) async throws(StoreError) -> CancelOutcome {
        let known = try await store.generations(withID: generationID).first { $0.generation.source == source }
        if let status = known?.generation.status, status.isTerminal { return .alreadyFinished(status) }
        switch await api.cancel(generationID) {
        case .refused(let status, let message): return .refused(status: status, message: message)
        case .unavailable(let reason): return .unavailable(reason)
        case .cancelled(let raw):
            let at = now()
            let outcome = try await store.ingest(IncomingDelivery(
                source: source, deliveryID: "api:cancel:\(generationID)", origin: .api, receivedAt: at, signedAt: at / 1000, body: raw,
                content: .event(GenerationEvent(eventType: PipevideoAPIFormat.cancelledEventType, generationID: generationID, status: .cancelled)),
                routes: routes(.cancelled)
            ))
            logger.info("generation cancelled", metadata: ["generation_id": .string(generationID)])
            if case .accepted(_, _, let transition, _) = outcome { return .cancelled(transition: transition) }
            return .cancelled(transition: .same)  // the same cancel recorded before
        }
    }
}
