import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PipehookFormats
import PipehookLifecycle
import PipehookReconcile
import PipehookSettings
import ServiceLifecycle
import PipehookStore

/// The tokens that may use the gateway: `admin_token` and each of `gateway.tokens`, each compared
/// in constant time (every token is checked, so which one matched does not show in the timing).
public struct GatewayAuth: Sendable {
    private let tokens: [AdminAuth]

    public init(adminToken: String?, gatewayTokens: [String]) {
        tokens = ([adminToken].compactMap { $0 } + gatewayTokens).map { AdminAuth(token: $0) }
    }

    public var isEnabled: Bool { !tokens.isEmpty }

    func require(_ request: Request) throws {
        let header = request.headers[.authorization]
        let allowed = tokens.reduce(false) { $0 || $1.check(authorization: header) == .allowed }
        guard allowed else { throw Self.unauthorized }
    }

    /// For API clients: a Bearer challenge (the admin pages' Basic one would make a browser prompt).
    static let unauthorized = APIError(
        .unauthorized, code: "unauthorized", message: "send Authorization: Bearer <token> (admin_token or one of gateway.tokens)",
        headers: [.wwwAuthenticate: #"Bearer realm="pipehook""#]
    )
}

/// What the Responses-compatible gateway needs from the daemon (SPEC §7, issue 11).
public struct GatewayEndpoints: Sendable {
    public var auth: GatewayAuth
    public var control: GenerationControl
    /// `model` and `engine` added to a create body that has none (`api.defaults`).
    public var defaultModel: String?
    public var defaultEngine: String?
    /// Called after a create or cancel committed jobs, to wake the dispatcher.
    public var onJobsCreated: @Sendable () -> Void

    public init(
        auth: GatewayAuth, control: GenerationControl, defaultModel: String?, defaultEngine: String?,
        onJobsCreated: @escaping @Sendable () -> Void = {}
    ) {
        self.auth = auth
        self.control = control
        self.defaultModel = defaultModel
        self.defaultEngine = defaultEngine
        self.onJobsCreated = onJobsCreated
    }
}

/// `POST /v1/responses` (create through pipehook's key, recorded and tracked), `GET
/// /v1/responses/{id}` (answered from the store in Pipevideo's format, no API call; `?wait=30s`
/// returns as soon as the status changes) and `DELETE /v1/responses/{id}` (cancel). An
/// application points its client's base URL at pipehook and keeps working.
enum GatewayRoutes {
    static let maxBodyBytes = 1 << 20
    /// The longest `?wait=` honoured.
    static let maxWaitMilliseconds: Int64 = 60_000
    static let waitInterval: Duration = .milliseconds(200)

    static func register(on router: Router<BasicRequestContext>, _ gateway: GatewayEndpoints) {
        let control = gateway.control
        router.post("/v1/responses") { request, _ in
            try gateway.auth.require(request)
            let buffer: ByteBuffer
            do {
                buffer = try await request.body.collect(upTo: maxBodyBytes)
            } catch is NIOTooManyBytesError {
                throw APIError.bodyTooLarge(maxBodyBytes)
            }
            let body: [UInt8]
            do throws(FormatError) {
                body = try CreateRequest.complete(Array(buffer.readableBytesView), defaultModel: gateway.defaultModel, defaultEngine: gateway.defaultEngine)
            } catch {
                throw APIError(.badRequest, code: "invalid_request", message: error.reason)
            }
            let key = request.headers[HTTPField.Name("Idempotency-Key")!]
            let outcome: GenerationControl.CreateOutcome
            do throws(StoreError) {
                outcome = try await control.create(body, idempotencyKey: key)
            } catch {
                throw APIError.storeUnavailable
            }
            switch outcome {
            case .created(_, let answer, let repeated):
                if !repeated { gateway.onJobsCreated() }
                var headers: HTTPFields = [.contentType: "application/json"]
                if repeated { headers[HTTPField.Name("Idempotent-Replayed")!] = "true" }
                return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer)))
            case .refused(let status, let message):
                throw refusal(status, message)
            case .outcomeUnknown(let key):
                throw APIError(
                    .conflict, code: "outcome_unknown",
                    message: "the first create with idempotency key \(LogText.clip(key)) was cut short and its outcome is unknown; it is not sent again"
                )
            case .keyReused:
                throw APIError(.unprocessableContent, code: "idempotency_key_reused", message: "this idempotency key was used for a different request")
            case .invalidKey(let problem):
                throw APIError(.badRequest, code: "invalid_idempotency_key", message: problem)
            case .unknown:
                throw APIError(
                    .badGateway, code: "outcome_unknown",
                    message: "Pipevideo gave no usable answer; the generation may have been created (send an Idempotency-Key to retry safely)"
                )
            }
        }
        router.get("/v1/responses/:id") { request, context in
            try gateway.auth.require(request)
            let id = context.parameters.get("id") ?? ""
            var wait: Int64 = 0
            if let text = request.uri.queryParameters.get("wait") {
                guard let milliseconds = Units.milliseconds(text), milliseconds >= 0 else {
                    throw APIError(.badRequest, code: "invalid_request", message: "wait must be a duration such as 30s")
                }
                wait = min(milliseconds, maxWaitMilliseconds)
            }
            guard var generation = try await generation(id, control) else {
                throw APIError(.notFound, code: "not_found", message: "no generation with this id")
            }
            // Long poll: as soon as the status differs from the one found first, or at the deadline.
            let first = generation.status
            let deadline = ContinuousClock.now + .milliseconds(wait)
            while generation.status == first, ContinuousClock.now < deadline {
                try await Task.sleep(for: min(waitInterval, deadline - ContinuousClock.now))
                generation = try await Self.generation(id, control) ?? generation
            }
            return JSONResponse.make(status: .ok, json: document(generation))
        }
        router.delete("/v1/responses/:id") { request, context in
            try gateway.auth.require(request)
            let id = context.parameters.get("id") ?? ""
            let outcome: GenerationControl.CancelOutcome
            do throws(StoreError) {
                outcome = try await control.cancel(id)
            } catch {
                throw APIError.storeUnavailable
            }
            switch outcome {
            case .cancelled:
                gateway.onJobsCreated()
                return JSONResponse.make(status: .ok, json: #"{"id":"# + JSONText.quote(id) + #","cancelled":true}"#)
            case .alreadyFinished(let status):
                throw APIError(.conflict, code: "already_finished", message: "the generation is already \(status.rawValue)")
            case .refused(let status, let message):
                throw refusal(status, message)
            case .unavailable:
                throw APIError(.serviceUnavailable, code: "upstream_unavailable", message: "Pipevideo gave no usable answer; try again later")
            }
        }
    }

    /// How often the event stream asks the store for new rows, and sends a comment when idle.
    static let streamInterval: Duration = .milliseconds(250)
    static let heartbeatEvery = 40

    /// `GET /api/events`: every applied transition as a Server-Sent Event, in commit order. The
    /// `id:` of each event is the stream's resume point (`EventStreamCursor.frontier`); a client
    /// that reconnects with `Last-Event-ID` (or `?after=`) gets everything after it, perhaps a few
    /// events twice (their `event_id` tells), never a gap. Without one, the stream starts now.
    static func registerEvents(on router: Router<BasicRequestContext>, auth: GatewayAuth, store: any Storage) {
        router.get("/api/events") { request, _ in
            try auth.require(request)
            let resume = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.uri.queryParameters.get("after").map { String($0) }
            let start: Int64
            if let resume {
                guard let value = Int64(resume.trimmingCharacters(in: .whitespaces)), value >= 0 else {
                    throw APIError(.badRequest, code: "invalid_request", message: "Last-Event-ID must be a number this stream sent")
                }
                start = value
            } else {
                do throws(StoreError) { start = try await store.lastEventSeq() } catch { throw APIError.storeUnavailable }
            }
            let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-store"]
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                var cursor = EventStreamCursor(frontier: start)
                try await writer.write(ByteBuffer(string: ": pipehook event stream\nretry: 2000\n\n"))
                var idle = 0
                // Ends with the server (a graceful shutdown waits for open responses) or the client
                // (the next write fails; a keep-alive comment goes out every 10 s when idle).
                while !Task.isCancelled, !Task.isShuttingDownGracefully {
                    let rows: [StreamedEvent]
                    do throws(StoreError) {
                        rows = try await store.events(after: cursor.frontier, limit: 500)
                    } catch {
                        rows = []  // the store is busy: try again at the next tick
                    }
                    let fresh = cursor.take(rows, now: Int64(Date().timeIntervalSince1970 * 1000))
                    let transitions = fresh.filter { $0.entry.transition == .applied }
                    if transitions.isEmpty {
                        idle += 1
                        if idle >= heartbeatEvery {
                            idle = 0
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        }
                    } else {
                        idle = 0
                        var text = ""
                        for event in transitions { text += "id: \(cursor.frontier)\nevent: transition\ndata: " + eventJSON(event) + "\n\n" }
                        try await writer.write(ByteBuffer(string: text))
                    }
                    if rows.count < 500 { try await Task.sleep(for: streamInterval) }
                }
                try await writer.finish(nil)
            })
        }
    }

    /// One transition as the stream's `data:` line (JSON on one line).
    static func eventJSON(_ event: StreamedEvent) -> String {
        func quoted(_ text: String?) -> String { text.map { JSONText.quote($0) } ?? "null" }
        let e = event.entry
        return #"{"seq":"# + String(event.seq) + #","source":"# + JSONText.quote(event.source) + #","generation_id":"#
            + JSONText.quote(event.generationID) + #","event_id":"# + JSONText.quote(e.eventID) + #","origin":""# + e.origin.rawValue
            + #"","previous_status":"# + quoted(e.previousStatus?.rawValue) + #","status":""# + e.status.rawValue
            + #"","output_url":"# + quoted(e.outputURL) + #","error_message":"# + quoted(e.errorMessage)
            + #","received_at":"# + JSONText.quote(JSONText.timestamp(milliseconds: e.receivedAt)) + "}"
    }

    static func generation(_ id: String, _ control: GenerationControl) async throws -> GenerationRecord? {
        do throws(StoreError) {
            return try await control.store.generations(withID: id).first { $0.generation.source == control.source }?.generation
        } catch {
            throw APIError.storeUnavailable
        }
    }

    /// Pipevideo's answer for a refused call, passed on with its status (0: no connection).
    static func refusal(_ status: Int, _ message: String) -> APIError {
        switch status {
        case 0: APIError(.serviceUnavailable, code: "upstream_unavailable", message: message)
        case 429: APIError(.tooManyRequests, code: "rate_limited", message: message)
        case 401: APIError(.badGateway, code: "upstream_unauthorized", message: message)
        default: APIError(HTTPResponse.Status(code: (400..<500).contains(status) ? status : 502), code: "upstream_refused", message: message)
        }
    }

    /// A generation in Pipevideo's response format, from the store alone.
    static func document(_ g: GenerationRecord) -> String {
        func quoted(_ text: String?) -> String { text.map { JSONText.quote($0) } ?? "null" }
        let output = g.outputURL.map {
            #"[{"type":"message","content":[{"type":"output_video","video_url":{"url":"# + JSONText.quote($0) + "}}]}]"
        } ?? "[]"
        let error = g.errorMessage.map { #"{"code":"generation_failed","message":"# + JSONText.quote($0) + "}" }
            ?? (g.status == .failed ? #"{"code":"generation_failed","message":null}"# : "null")
        return #"{"id":"# + JSONText.quote(g.generationID) + #","object":"response","created_at":"# + String(g.createdAt / 1000)
            + #","status":""# + g.status.rawValue + #"","output_video_url":"# + quoted(g.outputURL) + #","output":"# + output
            + #","error":"# + error + #","completed_at":"# + (g.status.isTerminal ? String(g.updatedAt / 1000) : "null") + "}"
    }
}
