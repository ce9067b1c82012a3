import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Logging
import PipehookFormats
import PipehookLifecycle
import PipehookMetrics
import PipehookSignature
import PipehookStore
import Synchronization

/// What the intake needs to know about one source: how to verify and how to read its bodies.
public struct IntakeSource: Sendable {
    public var name: String
    public var format: any EventFormat
    public var verifier: SignatureVerifier

    public init(name: String, format: any EventFormat, verifier: SignatureVerifier) {
        self.name = name
        self.format = format
        self.verifier = verifier
    }
}

public struct IntakeConfiguration: Sendable {
    public var sources: [String: IntakeSource]
    public var maxBodyBytes: Int
    /// The routes (pinned to their current versions) by the status that starts them.
    public var routesByStatus: [GenerationStatus: [RoutePin]]
    /// The download steps' folders (the archive), for the status page's media.
    public var archiveDirectories: [String] = []

    public init(sources: [IntakeSource], maxBodyBytes: Int, routesByStatus: [GenerationStatus: [RoutePin]] = [:]) {
        self.sources = Dictionary(sources.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.maxBodyBytes = maxBodyBytes
        self.routesByStatus = routesByStatus
    }

    public func routes(for status: GenerationStatus) -> [RoutePin] { routesByStatus[status] ?? [] }
}

/// The live intake configuration; swapped whole on reload so a request sees one consistent view.
public final class IntakeConfigurationBox: Sendable {
    private let value: Mutex<IntakeConfiguration>
    public init(_ configuration: IntakeConfiguration) { value = Mutex(configuration) }
    public var current: IntakeConfiguration { value.withLock { $0 } }
    public func replace(_ configuration: IntakeConfiguration) { value.withLock { $0 = configuration } }
}

/// Verify, decode, commit, answer (SPEC §3–4). Nothing reaches the store before verification.
public struct WebhookIntake: Sendable {
    public let store: any WebhookStore
    public let configuration: IntakeConfigurationBox
    public let logger: Logger
    /// Unix milliseconds; injectable so tests can pin the clock to a vector's timestamp.
    public let now: @Sendable () -> Int64
    /// Called after a commit that created jobs, to wake the dispatcher.
    public let onJobsCreated: @Sendable () -> Void
    public let metrics: PipehookMetrics
    /// The longest a delivery waits for the store (`store_timeout`), queued or committing: then 503.
    public let storeTimeout: Duration

    public init(
        store: any WebhookStore, configuration: IntakeConfigurationBox, logger: Logger,
        metrics: PipehookMetrics = .discarding, storeTimeout: Duration = .seconds(5),
        now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) },
        onJobsCreated: @escaping @Sendable () -> Void = {}
    ) {
        self.storeTimeout = storeTimeout
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.now = now
        self.onJobsCreated = onJobsCreated
    }

    func handle(_ request: Request, sourceName: String) async throws -> Response {
        let started = ContinuousClock.now
        let configuration = configuration.current
        guard let source = configuration.sources[sourceName] else {
            logger.notice("rejected delivery", metadata: ["source": .string(String(sourceName.prefix(64))), "code": "unknown_source"])
            // The label is fixed: the path segment is chosen by whoever sends the request.
            metrics.delivery(source: "_unknown", result: "rejected")
            throw APIError.unknownSource
        }
        let headers: SignedHeaders
        do throws(VerificationFailure) {
            headers = try SignedHeaders.extract { name in
                Self.signatureFields[name].flatMap { request.headers[$0] }
            }
        } catch {
            throw rejection(error, source: source.name, eventID: nil)
        }
        let limit = configuration.maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            metrics.delivery(source: source.name, result: "rejected")
            logger.notice("rejected delivery", metadata: ["source": .string(source.name), "event_id": .string(LogText.clip(headers.id)), "code": "body_too_large"])
            throw APIError.bodyTooLarge(limit)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            metrics.delivery(source: source.name, result: "rejected")
            logger.notice("rejected delivery", metadata: ["source": .string(source.name), "event_id": .string(LogText.clip(headers.id)), "code": "body_too_large"])
            throw APIError.bodyTooLarge(limit)
        }
        let receivedAt = now()
        let signedAt: Int64
        do throws(VerificationFailure) {
            signedAt = try buffer.withUnsafeReadableBytes { raw in
                Result { () throws(VerificationFailure) in
                    try source.verifier.verify(headers: headers, body: raw, now: receivedAt / 1000)
                }
            }.get()
        } catch {
            throw rejection(error, source: source.name, eventID: headers.id)
        }
        let body = Array(buffer.readableBytesView)
        let content: IncomingDelivery.Content
        var decoded: GenerationEvent?
        do {
            let event = try source.format.decode(body)
            decoded = event
            content = .event(event)
        } catch {
            content = .unrecognized(reason: error.reason)
        }
        let delivery = IncomingDelivery(
            source: source.name, deliveryID: headers.id, receivedAt: receivedAt, signedAt: signedAt, body: body, content: content,
            routes: decoded.map { configuration.routes(for: $0.status) } ?? []
        )
        func eventMetadata() -> Logger.Metadata {
            var metadata: Logger.Metadata = ["source": .string(source.name), "event_id": .string(LogText.clip(headers.id))]
            if let decoded { metadata["generation_id"] = .string(LogText.clip(decoded.generationID, maxBytes: 256)) }
            return metadata
        }
        // Built only when a line will be written: this runs on every request.
        var metadata: Logger.Metadata = logger.logLevel <= .warning ? eventMetadata() : [:]
        let outcome: IntakeOutcome
        // However long the queue or the lock: a 503 after `storeTimeout`, which the sender retries.
        // A commit already under way may still land; the retry is then answered `duplicate`.
        let store = self.store
        switch await Deadline.within(storeTimeout, { try await store.ingest(delivery) }) {
        case .success(let value):
            outcome = value
        case let failure:
            metrics.delivery(source: source.name, result: "store_unavailable")
            metadata = eventMetadata()
            switch failure {
            case .failure(let error as StoreError): metadata["error"] = .string(error.message)
            case .failure(let error): metadata["error"] = .string(String(describing: error))
            default: metadata["error"] = .string("no commit within store_timeout (\(storeTimeout))")
            }
            logger.error("store could not commit delivery", metadata: metadata)
            throw APIError.storeUnavailable
        }
        defer {
            let elapsed = ContinuousClock.now - started
            metrics.ingestLatency(nanoseconds: elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
        }
        switch outcome {
        case .accepted(let generationID, let status, let transition, let previous):
            metrics.delivery(source: source.name, result: "accepted")
            metrics.event(source: source.name, transition: transition, from: previous, to: status)
            if transition == .applied, !delivery.routes.isEmpty { onJobsCreated() }
            metadata["status"] = .string(status.rawValue)
            metadata["transition"] = .string(transition.rawValue)
            logger.info("accepted delivery", metadata: metadata)
            return JSONResponse.make(
                status: .ok,
                json: #"{"result":"accepted","generation_id":"# + JSONText.quote(generationID)
                    + #","status":""# + status.rawValue + #"","transition":""# + transition.rawValue + #""}"#
            )
        case .duplicate:
            metrics.delivery(source: source.name, result: "duplicate")
            logger.info("duplicate delivery", metadata: metadata)
            return JSONResponse.make(status: .ok, json: #"{"result":"duplicate"}"#)
        case .unrecognized:
            metrics.delivery(source: source.name, result: "unrecognized")
            if case .unrecognized(let reason) = content { metadata["reason"] = .string(reason) }
            logger.warning("unrecognized delivery stored raw", metadata: metadata)
            return JSONResponse.make(status: .accepted, json: #"{"result":"unrecognized"}"#)
        }
    }

    /// Built once: validating a field name on every request showed up in profiles.
    private static let signatureFields: [String: HTTPField.Name] = Dictionary(
        uniqueKeysWithValues: ["svix", "webhook"].flatMap { prefix in
            ["id", "timestamp", "signature"].map { suffix in ("\(prefix)-\(suffix)", HTTPField.Name("\(prefix)-\(suffix)")!) }
        }
    )

    /// Logs a verification failure (code only: never the signature) and maps it to its answer.
    private func rejection(_ failure: VerificationFailure, source: String, eventID: String?) -> APIError {
        metrics.delivery(source: source, result: "rejected")
        metrics.signatureFailure(source: source, reason: failure.code)
        var metadata: Logger.Metadata = ["source": .string(source), "code": .string(failure.code)]
        if let eventID { metadata["event_id"] = .string(LogText.clip(eventID)) }
        logger.notice("rejected delivery", metadata: metadata)
        return APIError(failure.isMissingHeaders ? .badRequest : .unauthorized, code: failure.code, message: failure.message)
    }
}
