import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import PipehookStore

/// The read-only status page at `/` and its one action, retrying a dead job (issue 5).
/// Behind `admin_token` like `/api/*`; people reach it with HTTP Basic (token as password).
enum StatusPage {
    static let maxFormBytes = 4 * 1024

    /// Only our own script (the live refresh), no external resources, not framable, never cached
    /// (it shows signed URLs).
    static let pageHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8",
        .contentSecurityPolicy: "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; media-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        .cacheControl: "no-store",
        .xContentTypeOptions: "nosniff",
        referrerPolicy: "no-referrer",
    ]

    static func register(on router: Router<BasicRequestContext>, _ admin: AdminEndpoints) {
        let activityCache = admin.activityCache
        router.get("/") { request, _ in
            try admin.auth.require(request)
            let parameters = request.uri.queryParameters
            var notice: String?
            if let retried = parameters["retried"].map(String.init), JobID.isValid(retried) {
                notice = "Job <code>" + StatusPageHTML.html(retried) + "</code> queued again."
            } else if let route = parameters["retried_route"].map(String.init), let count = parameters["retried_count"].flatMap({ Int(String($0)) }) {
                notice = "\(count) dead job\(count == 1 ? "" : "s") of route <strong>" + StatusPageHTML.html(route) + "</strong> queued again."
            }
            var query = try AdminRoutes.generationQuery(request.uri.queryParameters)
            if request.uri.queryParameters["limit"] == nil { query.limit = StatusPageSnapshot.generationLimit }
            let snapshot: StatusPageSnapshot
            do {
                let sinceStart = admin.tally.map { StatusPageSnapshot.SinceStart(results: $0.resultTotals(), latencies: $0.latencyCounts()) }
                snapshot = try await StatusPageSnapshot.load(
                    from: admin.store, now: admin.now(), query: query, sinceStart: sinceStart, cache: activityCache
                )
            } catch {
                throw APIError.storeUnavailable
            }
            // `?refresh=N`: the live refresh every N seconds (1…300), 5 by default.
            let refresh = parameters["refresh"].flatMap { Int(String($0)) }.map { min(300, max(1, $0)) } ?? 5
            let page = StatusPageHTML.render(snapshot, notice: notice, refreshSeconds: refresh) { purpose in admin.auth.formToken(for: purpose) ?? "" }
            return Response(status: .ok, headers: pageHeaders, body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
        }

        // The page's one script: same origin, so the CSP needs no 'unsafe-inline' for it.
        router.get("/static/status.js") { request, _ in
            try admin.auth.require(request)
            return Response(
                status: .ok,
                headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "no-store", .xContentTypeOptions: "nosniff"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: StatusPageHTML.liveScript))
            )
        }

        router.get("/generation") { request, _ in
            try admin.auth.require(request)
            let parameters = request.uri.queryParameters
            guard let source = parameters["source"].map(String.init), let id = parameters["id"].map(String.init), !id.isEmpty else {
                throw APIError(.badRequest, code: "invalid_request", message: "give the generation as ?source=…&id=…")
            }
            let generation: StatusPageSnapshot.Generation?
            var events: [StoredEvent] = []
            do {
                let record = try await admin.store.generations(withID: id).first { $0.generation.source.sameBytes(as: source) }?.generation
                generation = if let record { try await StatusPageSnapshot.generations([record], from: admin.store).first } else { nil }
                if let record { events = try await admin.store.events(source: record.source, generationID: record.generationID) }
            } catch {
                throw APIError.storeUnavailable
            }
            guard let generation else {
                throw APIError(.notFound, code: "generation_not_found", message: "the store has no generation with this id in this source")
            }
            // Which archived files have a thumbnail next to them (a file-system look, off the pool).
            let roots = admin.archiveDirectories()
            let candidates = generation.jobs.compactMap { job in job.record.artifact.map { (job.record.id, $0.file) } }
            let thumbnails = candidates.isEmpty ? [] : try await NIOThreadPool.singleton.runIfActive {
                Set(candidates.filter { _, file in
                    if case .success = ArchiveMedia.locate(ArchiveMedia.thumbnailPath(of: file), roots: roots) { true } else { false }
                }.map(\.0))
            }
            var notice: String?
            if let replayed = parameters["replayed"].map(String.init), let count = parameters["replayed_count"].flatMap({ Int(String($0)) }) {
                notice = "Event <code>" + StatusPageHTML.html(replayed) + "</code> replayed: \(count) job\(count == 1 ? "" : "s") queued."
            }
            let page = StatusPageHTML.renderGeneration(
                generation, events: events, now: admin.now(), thumbnails: thumbnails, notice: notice
            ) { purpose in admin.auth.formToken(for: purpose) ?? "" } replayable: { !admin.routes($0).isEmpty }
            return Response(status: .ok, headers: pageHeaders, body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
        }

        router.get("/search") { request, _ in
            try admin.auth.require(request)
            let text = request.uri.queryParameters["q"].map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            guard !text.isEmpty else { return Response(status: .seeOther, headers: [.location: "/", .cacheControl: "no-store"]) }
            guard text.utf8.count <= 1024 else {
                throw APIError(.badRequest, code: "invalid_request", message: "a search is at most 1024 bytes")
            }
            let found: [GenerationKey]
            do {
                found = try await search(text, in: admin.store)
            } catch {
                throw APIError.storeUnavailable
            }
            // One answer: go there. Several or none: say so on a page of links.
            if found.count == 1, let only = found.first {
                return Response(status: .seeOther, headers: [.location: StatusPageHTML.generationPath(only), .cacheControl: "no-store"])
            }
            let page = StatusPageHTML.renderSearch(text, found: found, now: admin.now())
            return Response(status: .ok, headers: pageHeaders, body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
        }

        router.post("/jobs/:id/retry") { request, context in
            try admin.auth.require(request)
            let jobID = context.parameters.get("id") ?? ""
            guard JobID.isValid(jobID) else { throw APIError.jobNotFound }
            let form = try await postedForm(request)
            try checkFormToken(form["csrf"], for: retryPurpose(jobID), admin)
            do throws(StoreError) {
                _ = try await admin.store.retry(jobID: jobID, at: admin.now())
            } catch {
                switch error.kind {
                case .notFound: throw APIError.jobNotFound
                // The store's message names the (validated) job id and what to do instead.
                case .invalid, .fenced: throw APIError(.conflict, code: "job_not_retryable", message: error.message)
                case .unavailable: throw APIError.storeUnavailable
                }
            }
            return Response(status: .seeOther, headers: [.location: "/?retried=" + jobID, .cacheControl: "no-store"])
        }

        // Every dead job of one route at once (issue 14).
        router.post("/routes/retry-dead") { request, _ in
            try admin.auth.require(request)
            let form = try await postedForm(request)
            guard let route = form["route"], !route.isEmpty, route.utf8.count <= 256 else {
                throw APIError(.badRequest, code: "invalid_request", message: "the form names no route")
            }
            try checkFormToken(form["csrf"], for: retryRoutePurpose(route), admin)
            let count: Int
            do throws(StoreError) {
                count = try await admin.store.retryDead(route: route, at: admin.now())
            } catch {
                throw error.kind == .unavailable ? APIError.storeUnavailable : APIError(.conflict, code: "not_retryable", message: error.message)
            }
            let location = "/?" + StatusPageHTML.queryString([("retried_route", route), ("retried_count", String(count))])
            return Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
        }

        // An event's routes run again (`pipehook replay`), from its generation's page.
        router.post("/events/replay") { request, _ in
            try admin.auth.require(request)
            let form = try await postedForm(request)
            guard let source = form["source"], let eventID = form["event"], !source.isEmpty, !eventID.isEmpty,
                source.utf8.count <= 256, eventID.utf8.count <= 1024
            else {
                throw APIError(.badRequest, code: "invalid_request", message: "the form names no source and event")
            }
            try checkFormToken(form["csrf"], for: replayPurpose(source: source, eventID: eventID), admin)
            let jobs: [JobRecord]
            do throws(StoreError) {
                jobs = try await admin.store.replay(eventID: eventID, source: source, routes: admin.routes, at: admin.now())
            } catch {
                switch error.kind {
                case .notFound: throw APIError(.notFound, code: "event_not_found", message: "the store has no event with this id in this source")
                case .unavailable: throw APIError.storeUnavailable
                case .invalid, .fenced: throw APIError(.conflict, code: "not_replayable", message: error.message)
                }
            }
            admin.jobsCreated()
            let back = jobs.first.map { GenerationKey(source: $0.source, generationID: $0.generationID) }
            let location = (back.map(StatusPageHTML.generationPath) ?? "/") + (back == nil ? "?" : "&")
                + StatusPageHTML.queryString([("replayed", eventID), ("replayed_count", String(jobs.count))])
            return Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
        }
    }

    /// The fields of a form our own page posted: refused when the browser says it came from
    /// elsewhere, when it is not a URL-encoded form, or when it is larger than a form of ours.
    static func postedForm(_ request: Request) async throws -> [String: String] {
        if let reason = foreignOriginReason(
            origin: request.headers[.origin], fetchSite: request.headers[secFetchSite], host: request.head.authority
        ) {
            throw APIError(.forbidden, code: "csrf_failed", message: reason)
        }
        guard isFormContentType(request.headers[.contentType]) else {
            throw APIError(.unsupportedMediaType, code: "unsupported_media_type", message: "send the form as application/x-www-form-urlencoded")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: maxFormBytes)
        } catch is NIOTooManyBytesError {
            throw APIError.bodyTooLarge(maxFormBytes)
        }
        let text = String(decoding: body.readableBytesView, as: UTF8.self)
        guard let fields = try? URLEncodedFormDecoder().decode([String: String].self, from: text) else {
            throw APIError(.badRequest, code: "invalid_request", message: "the form could not be read")
        }
        return fields
    }

    /// The page's form token for `purpose`, or 403.
    static func checkFormToken(_ token: String?, for purpose: String, _ admin: AdminEndpoints) throws {
        guard admin.auth.verifyFormToken(token, for: purpose) else {
            throw APIError(.forbidden, code: "csrf_failed", message: "the form token is missing or wrong; reload the status page and try again")
        }
    }

    /// The generations `text` names, as a job id, a delivery (event) id or a generation id, in
    /// that order and each once.
    static func search(_ text: String, in store: any Storage) async throws(StoreError) -> [GenerationKey] {
        var found: [GenerationKey] = []
        func add(_ key: GenerationKey) { if !found.contains(key) { found.append(key) } }
        if let job = try await store.job(id: text) { add(GenerationKey(source: job.source, generationID: job.generationID)) }
        for key in try await store.eventGenerations(eventID: text) { add(key) }
        for detail in try await store.generations(withID: text) {
            add(GenerationKey(source: detail.generation.source, generationID: detail.generation.generationID))
        }
        return found
    }

    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!

    static func retryPurpose(_ jobID: String) -> String { "retry:" + jobID }
    static func retryRoutePurpose(_ route: String) -> String { "retry-route:" + route }
    /// A NUL cannot be in a (validated) source name, so the pair is unambiguous.
    static func replayPurpose(source: String, eventID: String) -> String { "replay:" + source + "\u{0}" + eventID }

    /// Why a POST does not look like it came from our own page, or nil when it may have.
    /// Requests without these headers (curl, scripts) pass; the form token still has to match.
    static func foreignOriginReason(origin: String?, fetchSite: String?, host: String?) -> String? {
        let site = fetchSite?.lowercased()
        if let site, site != "same-origin", site != "none" {
            return "the browser says this request came from another site (Sec-Fetch-Site)"
        }
        guard let origin else { return nil }
        if origin == "null" {
            // Our pages send `Referrer-Policy: no-referrer`, under which browsers post their forms
            // with `Origin: null`; only Sec-Fetch-Site (which pages cannot forge) then tells us it is ours.
            return site == "same-origin" ? nil : "the request has an opaque Origin and no same-origin Sec-Fetch-Site"
        }
        let lower = origin.lowercased()
        var authority: Substring
        if lower.hasPrefix("http://") {
            authority = lower.dropFirst("http://".count)
        } else if lower.hasPrefix("https://") {
            authority = lower.dropFirst("https://".count)
        } else {
            return "the Origin header is not an http(s) origin"
        }
        if authority.hasSuffix("/") { authority = authority.dropLast() }
        guard let host, authority == host.lowercased()[...] else {
            return "the Origin header does not match the Host header"
        }
        return nil
    }

    static func isFormContentType(_ value: String?) -> Bool {
        guard let value else { return false }
        let mediaType = value.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        return mediaType == "application/x-www-form-urlencoded"
    }
}

extension APIError {
    static let jobNotFound = APIError(.notFound, code: "job_not_found", message: "the store has no job with this id")
}
