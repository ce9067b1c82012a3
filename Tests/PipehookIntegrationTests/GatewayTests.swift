import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import PipehookDaemon
import PipehookFormats
import PipehookReconcile
import PipehookSettings
import PipehookSignature
import PipehookStore
import Testing

/// The Responses-compatible gateway (issue 11), used as an OpenAI-style client would: in process
/// over the in-memory store, with the local fake Pipevideo API behind it.
@Suite struct GatewayTests {
    static let key = "pv_gateway_key_0123456789abcdef"
    static let appToken = "app-token-0123456789abcdef"

    static func run(
        extra: String = "", _ test: @Sendable @escaping (any TestClientProtocol, MemoryStore, FakePipevideoAPI) async throws -> Void
    ) async throws {
        let fake = FakePipevideoAPI(key: key)
        try await fake.run { base in
            let dir = TempDir()
            let store = MemoryStore()
            let settings = try SettingsParser.parse(yaml: Fixture.yaml(dir: dir.path, extra: """
                admin_token: "admin-token-0123456789abcdef"
                gateway: {tokens: ["\(appToken)"]}
                api: {base_url: "\(base)", key: "\(key)", requests_per_minute: 6000, defaults: {model: pipevideo-1}}
                \(extra)
                """), environment: [:])
            let api = PipevideoAPI(settings: settings.api!, httpClient: HTTPClient.shared, logger: Fixture.logger)
            let app = Daemon.application(settings: settings, store: store, logger: Fixture.logger, api: api)
            try await app.test(.router) { client in try await test(client, store, fake) }
            _ = dir
        }
    }

    static func request(
        _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, token: String? = appToken,
        body: String? = nil, headers extra: HTTPFields = [:]
    ) async throws -> (HTTPResponse.Status, [String: Any], HTTPFields) {
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        if body != nil { headers[.contentType] = "application/json" }
        let response = try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: response.body))) as? [String: Any] ?? [:]
        return (response.status, json, response.headers)
    }

    static func code(_ json: [String: Any]) -> String? { (json["error"] as? [String: Any])?["code"] as? String }

    @Test func createGetFromTheStoreAndDeleteAsAnOpenAIStyleClientWould() async throws {
        try await Self.run { client, store, fake in
            let (created, answer, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"a fox","engine":"auto"}"#)
            #expect(created == .ok && answer["status"] as? String == "queued", "\(answer)")
            let id = try #require(answer["id"] as? String)
            // Forwarded with pipehook's key and the default model; recorded with origin api.
            let sent = try #require(try JSONSerialization.jsonObject(with: Data(await fake.created[0].body)) as? [String: Any])
            #expect(sent["model"] as? String == "pipevideo-1" && sent["input"] as? String == "a fox")
            #expect(try await store.generations(withID: id).first?.timeline.map(\.origin) == [.api])

            // GET answers from the store: no request reaches Pipevideo.
            let asked = await fake.order.count
            let (status, document, _) = try await Self.request(client, .get, "/v1/responses/\(id)")
            #expect(status == .ok && document["object"] as? String == "response" && document["status"] as? String == "queued")
            #expect(document["output"] as? [Any] != nil && document["error"] is NSNull && document["completed_at"] is NSNull)
            #expect(await fake.order.count == asked, "GET made an API call")

            // A webhook's completion shows in Pipevideo's shape.
            _ = try await store.ingest(Fixture.delivery(id: "msg_done", generation: id, status: .completed))
            let (_, done, _) = try await Self.request(client, .get, "/v1/responses/\(id)")
            #expect(done["status"] as? String == "completed" && done["completed_at"] as? Int != nil)

            // DELETE of a terminal generation: refused without a call; of a queued one: cancelled.
            let (refused, refusal, _) = try await Self.request(client, .delete, "/v1/responses/\(id)")
            #expect(refused == .conflict && Self.code(refusal) == "already_finished")
            let (_, second, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"another"}"#)
            let other = try #require(second["id"] as? String)
            let (deleted, cancelled, _) = try await Self.request(client, .delete, "/v1/responses/\(other)")
            #expect(deleted == .ok && cancelled["cancelled"] as? Bool == true)
            #expect(try await store.generations(withID: other).first?.generation.status == .cancelled)
            #expect(await fake.cancelled == [other])

            let (unknown, missing, _) = try await Self.request(client, .get, "/v1/responses/gen_never")
            #expect(unknown == .notFound && Self.code(missing) == "not_found")
        }
    }

    @Test func longPollReturnsWhenTheStatusChanges() async throws {
        try await Self.run { client, store, _ in
            let (_, answer, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"x"}"#)
            let id = try #require(answer["id"] as? String)
            let started = ContinuousClock.now
            async let waited = Self.request(client, .get, "/v1/responses/\(id)?wait=20s")
            try await Task.sleep(for: .milliseconds(600))
            _ = try await store.ingest(Fixture.delivery(id: "msg_progress", generation: id, status: .in_progress))
            let (status, document, _) = try await waited
            let elapsed = ContinuousClock.now - started
            #expect(status == .ok && document["status"] as? String == "in_progress")
            #expect(elapsed >= .milliseconds(500) && elapsed < .seconds(10), "returned after \(elapsed)")
            // Nothing changes: back at the deadline with the same status.
            let quick = ContinuousClock.now
            let (_, same, _) = try await Self.request(client, .get, "/v1/responses/\(id)?wait=1s")
            #expect(same["status"] as? String == "in_progress" && ContinuousClock.now - quick >= .milliseconds(900))
            let (bad, error, _) = try await Self.request(client, .get, "/v1/responses/\(id)?wait=soon")
            #expect(bad == .badRequest && Self.code(error) == "invalid_request")
        }
    }

    @Test func idempotencyKeysAndRefusalsThroughTheGateway() async throws {
        try await Self.run { client, store, fake in
            let key: HTTPFields = [HTTPField.Name("Idempotency-Key")!: "order-9"]
            let (first, a, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"once"}"#, headers: key)
            let (again, b, headers) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"once"}"#, headers: key)
            #expect(first == .ok && again == .ok && a["id"] as? String == b["id"] as? String)
            let creates = await fake.created.count
            #expect(headers[HTTPField.Name("Idempotent-Replayed")!] == "true" && creates == 1)
            let (reused, error, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"other"}"#, headers: key)
            #expect(reused == .unprocessableContent && Self.code(error) == "idempotency_key_reused")
            // A key whose first call never learnt its outcome (recorded, then cut short).
            let body = try CreateRequest.complete(Array(#"{"input":"x"}"#.utf8), defaultModel: "pipevideo-1", defaultEngine: nil)
            _ = try await store.claimIdempotencyKey("order-cut", digest: body.withUnsafeBytes { Crypto.sha256($0) }.hexString, at: 1)
            let cut: HTTPFields = [HTTPField.Name("Idempotency-Key")!: "order-cut"]
            let created = await fake.created.count
            let (unknownStatus, unknown, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"x"}"#, headers: cut)
            #expect(unknownStatus == .conflict && Self.code(unknown) == "outcome_unknown", "\(unknown)")
            #expect(await fake.created.count == created, "never a silent second generation")

            await fake.scriptCreates([.badRequest("Insufficient credits"), .rateLimited(retryAfter: 2)])
            let (poor, poorError, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"x"}"#)
            #expect(poor == .badRequest && (poorError["error"] as? [String: Any])?["message"] as? String == "HTTP 400: Insufficient credits")
            let (limited, limitedError, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"input":"x"}"#)
            #expect(limited == .tooManyRequests && Self.code(limitedError) == "rate_limited")
            let (invalid, invalidError, _) = try await Self.request(client, .post, "/v1/responses", body: #"{"model":"m"}"#)
            #expect(invalid == .badRequest && Self.code(invalidError) == "invalid_request")
        }
    }

    @Test func onlyConfiguredTokensGetIn() async throws {
        try await Self.run { client, _, fake in
            for token in [nil, "wrong-token-0123456789abcdef"] {
                let (status, error, _) = try await Self.request(client, .post, "/v1/responses", token: token, body: #"{"input":"x"}"#)
                #expect(status == .unauthorized && Self.code(error) == "unauthorized")
            }
            let (admin, _, _) = try await Self.request(client, .get, "/v1/responses/gen_none", token: "admin-token-0123456789abcdef")
            #expect(admin == .notFound, "the admin token may use the gateway too")
            #expect(await fake.calls.isEmpty)
        }
    }
}

extension GatewayTests {
    /// `GET /api/events` over a real socket: transitions as they commit, resumable with
    /// `Last-Event-ID` without a gap (issue 11).
    @Test func eventStreamFollowsTransitionsAndResumes() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let dir = TempDir()
            let store = MemoryStore()
            let settings = try SettingsParser.parse(yaml: Fixture.yaml(dir: dir.path, extra: """
                gateway: {tokens: ["\(Self.appToken)"]}
                api: {base_url: "\(base)", key: "\(Self.key)"}
                """), environment: [:])
            let api = PipevideoAPI(settings: settings.api!, httpClient: HTTPClient.shared, logger: Fixture.logger)
            _ = try await store.ingest(Fixture.delivery(id: "before", generation: "g0", status: .queued))
            let app = Daemon.application(settings: settings, store: store, logger: Fixture.logger, api: api)
            try await app.test(.live) { client in
                let url = "http://127.0.0.1:\(client.port!)/api/events"
                // Unauthenticated: refused.
                var anonymous = HTTPClientRequest(url: url)
                anonymous.method = .GET
                #expect(try await HTTPClient.shared.execute(anonymous, timeout: .seconds(10)).status.code == 401)

                // A new stream starts now: "before" is not sent; two transitions are, a stale event is not.
                let first = try await Self.readEvents(url: url, lastEventID: nil, count: 2) {
                    _ = try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued))
                    _ = try await store.ingest(Fixture.delivery(id: "m2", generation: "g1", status: .completed))
                    _ = try await store.ingest(Fixture.delivery(id: "m3", generation: "g1", status: .in_progress))
                }
                #expect(first.map(\.eventID) == ["m1", "m2"], "\(first)")
                #expect(first.last?.status == "completed" && first.last?.previous == "queued")
                // While disconnected, one more; a resumed stream gets it (and may repeat, never skip).
                _ = try await store.ingest(Fixture.delivery(id: "m4", generation: "g2", status: .failed))
                let resumed = try await Self.readEvents(url: url, lastEventID: first.last?.id, count: 1) {}
                #expect(resumed.map(\.eventID).last == "m4" && !resumed.map(\.eventID).contains("before"), "\(resumed)")
            }
            _ = dir
        }
    }

    struct SentEvent: Sendable {
        var id: String
        var eventID: String
        var status: String
        var previous: String?
    }

    /// Opens the stream, runs `action`, and reads until `count` transitions (or 20 s).
    static func readEvents(
        url: String, lastEventID: String?, count: Int, _ action: @Sendable () async throws -> Void
    ) async throws -> [SentEvent] {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        request.headers.add(name: "Authorization", value: "Bearer \(appToken)")
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: lastEventID) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        #expect(response.status.code == 200 && response.headers.first(name: "content-type") == "text/event-stream")
        try await Task.sleep(for: .milliseconds(300))
        try await action()
        var text = ""
        var events: [SentEvent] = []
        let deadline = ContinuousClock.now + .seconds(20)
        for try await chunk in response.body {
            text += String(buffer: chunk)
            events = parse(text)
            if events.count >= count || ContinuousClock.now > deadline { break }
        }
        return events
    }

    static func parse(_ text: String) -> [SentEvent] {
        text.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n")
            guard let id = lines.first(where: { $0.hasPrefix("id: ") })?.dropFirst(4),
                let data = lines.first(where: { $0.hasPrefix("data: ") })?.dropFirst(6),
                let json = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]
            else { return nil }
            return SentEvent(
                id: String(id), eventID: json["event_id"] as? String ?? "", status: json["status"] as? String ?? "",
                previous: json["previous_status"] as? String
            )
        }
    }
}
