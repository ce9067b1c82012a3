import PipehookFormats
import Foundation
import Hummingbird
import NIOCore
import PipehookLifecycle
import PipehookMetrics
import PipehookStore

/// What the admin endpoints (`/api/*` and the status page at `/`) need from the daemon.
public struct AdminEndpoints: Sendable {
    public var auth: AdminAuth
    public var store: any Storage
    /// Starts tracking a generation id; nil when `api` is not configured (nothing would poll it).
    public var track: (@Sendable (String) async throws(StoreError) -> TrackOutcome)?
    /// The `status --json` document for a generation id, or nil when the store has never heard of it.
    public var generationDocument: @Sendable (String) async throws -> [UInt8]?
    /// One page of generations as `{"generations": […], "next": cursor or null}`.
    public var generationPage: @Sendable (GenerationQuery) async throws -> [UInt8]
    /// Unix milliseconds.
    public var now: @Sendable () -> Int64
    /// The download folders of the routes in force now: the only places `/media/…` serves from.
    public var archiveDirectories: @Sendable () -> [String]
    /// The routes a status starts now, pinned (what a replay from the page creates jobs for).
    public var routes: @Sendable (GenerationStatus) -> [RoutePin]
    /// Wakes the dispatcher after the page created jobs.
    public var jobsCreated: @Sendable () -> Void
    /// Deliveries by result and ingest latencies since start, when metrics are kept.
    public var tally: LocalTally?
    /// The charts' finished buckets, kept between page loads (and primed at start).
    public var activityCache = ActivityCache()

    public init(
        auth: AdminAuth, store: any Storage, track: (@Sendable (String) async throws(StoreError) -> TrackOutcome)?,
        generationDocument: @escaping @Sendable (String) async throws -> [UInt8]?,
        generationPage: @escaping @Sendable (GenerationQuery) async throws -> [UInt8],
        now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) },
        archiveDirectories: @escaping @Sendable () -> [String] = { [] },
        routes: @escaping @Sendable (GenerationStatus) -> [RoutePin] = { _ in [] },
        jobsCreated: @escaping @Sendable () -> Void = {},
        tally: LocalTally? = nil
    ) {
        self.tally = tally
        self.archiveDirectories = archiveDirectories
        self.routes = routes
        self.jobsCreated = jobsCreated
        self.auth = auth
        self.store = store
        self.track = track
        self.generationDocument = generationDocument
        self.generationPage = generationPage
        self.now = now
    }
}

/// `POST /api/generations {"id": …}`, `GET /api/generations` (one page, filtered) and
/// `GET /api/generations/{id}` (SPEC §7, issues 4 and 14).
enum AdminRoutes {
    static let maxBodyBytes = 64 * 1024

    static func register(on router: Router<BasicRequestContext>, _ admin: AdminEndpoints) {
        router.post("/api/generations") { request, _ in
            try admin.auth.require(request)
            let buffer: ByteBuffer
            do {
                buffer = try await request.body.collect(upTo: maxBodyBytes)
            } catch is NIOTooManyBytesError {
                throw APIError.bodyTooLarge(maxBodyBytes)
            }
            let id = try generationID(in: Array(buffer.readableBytesView))
            guard let track = admin.track else {
                throw APIError(.conflict, code: "api_not_configured", message: "tracking needs the `api` section in the configuration")
            }
            let outcome: TrackOutcome
            do throws(StoreError) {
                outcome = try await track(id)
            } catch {
                throw error.kind == .unavailable ? APIError.storeUnavailable : APIError(.badRequest, code: "invalid_request", message: error.message)
            }
            let (status, result): (HTTPResponse.Status, String) = switch outcome.result {
            case .tracked: (.accepted, "tracked")
            case .alreadyTracked: (.ok, "already_tracked")
            case .alreadyFinished: (.ok, "already_finished")
            }
            var json = #"{"result":""# + result + #"","generation_id":"# + JSONText.quote(id) + #","source":"# + JSONText.quote(outcome.source)
            if let current = outcome.status { json += #","status":""# + current.rawValue + #"""# }
            return JSONResponse.make(status: status, json: json + "}")
        }
        router.get("/api/generations") { request, _ in
            try admin.auth.require(request)
            let query = try generationQuery(request.uri.queryParameters)
            let page: [UInt8]
            do {
                page = try await admin.generationPage(query)
            } catch {
                throw APIError.storeUnavailable
            }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: page)))
        }
        router.get("/api/generations/:id") { request, context in
            try admin.auth.require(request)
            let id = context.parameters.get("id") ?? ""
            let document: [UInt8]?
            do {
                document = try await admin.generationDocument(id)
            } catch {
                throw APIError.storeUnavailable
            }
            guard let document else {
                throw APIError(.notFound, code: "generation_not_found", message: "the store has no generation with this id")
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: document))
            )
        }
    }

    static let maxPage = 500

    /// `?status=&source=&after=&limit=` (limit 1…500, default 50), each checked: a value that
    /// does not parse is a 400 naming it, never ignored.
    static func generationQuery(_ parameters: Parameters) throws -> GenerationQuery {
        func invalid(_ message: String) -> APIError { APIError(.badRequest, code: "invalid_request", message: message) }
        var query = GenerationQuery()
        if let text = parameters["status"].map(String.init), !text.isEmpty {
            guard let status = GenerationStatus(rawValue: text) else {
                throw invalid("status must be one of \(GenerationStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            query.status = status
        }
        func text(_ name: String) throws -> String? {
            guard let value = parameters[Substring(name)].map(String.init), !value.isEmpty else { return nil }
            guard value.utf8.count <= 256, !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                throw invalid("\(name) must be 1 to 256 bytes without control characters")
            }
            return value
        }
        query.source = try text("source")
        query.route = try text("route")
        if let text = parameters["job_state"].map(String.init), !text.isEmpty {
            guard let state = JobState(rawValue: text) else {
                throw invalid("job_state must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            query.jobState = state
        }
        if let token = parameters["after"].map(String.init), !token.isEmpty {
            guard let cursor = GenerationCursor(token: token) else { throw invalid("after is not a cursor from a previous page's next") }
            query.after = cursor
        }
        if let text = parameters["limit"].map(String.init) {
            guard let limit = Int(text), (1...maxPage).contains(limit) else { throw invalid("limit must be a number from 1 to \(maxPage)") }
            query.limit = limit
        }
        return query
    }

    /// The `id` of a `{"id": "gen_…"}` body, checked like a webhook's generation id.
    static func generationID(in body: [UInt8]) throws -> String {
        struct Body: Decodable { var id: String }
        guard let decoded = try? JSONDecoder().decode(Body.self, from: Data(body)) else {
            throw APIError(.badRequest, code: "invalid_request", message: #"the body must be a JSON object {"id": "<generation id>"}"#)
        }
        let id = decoded.id
        guard !id.isEmpty, id.utf8.count <= 256, !id.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError(.badRequest, code: "invalid_request", message: "id must be 1 to 256 bytes without control characters")
        }
        return id
    }
}
