import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import PipehookDaemon
import PipehookHTTP
import PipehookSettings
import PipehookStore
import Testing

/// `/api/*` behind `admin_token` (issue 4), in process over the in-memory store.
@Suite struct AdminAPITests {
    static let token = "admin-token-0123456789abcdef"

    static func run(
        token: String? = token, tracking: Bool = true,
        _ test: @Sendable @escaping (any TestClientProtocol, MemoryStore) async throws -> Void
    ) async throws {
        let dir = TempDir()
        let store = MemoryStore()
        let extra = token.map { "admin_token: \"\($0)\"" } ?? ""
        let settings = try SettingsParser.parse(yaml: Fixture.yaml(dir: dir.path, extra: extra), environment: [:])
        let track: (@Sendable (String) async throws(StoreError) -> TrackOutcome)? = tracking
            ? { @Sendable id async throws(StoreError) -> TrackOutcome in try await store.track(source: "pipevideo", generationID: id, at: Fixture.now() * 1000) }
            : nil
        let app = Daemon.application(settings: settings, store: store, logger: Fixture.logger, track: track)
        try await app.test(.router) { client in try await test(client, store) }
        _ = dir
    }

    static func request(
        _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, authorization: String? = "Bearer \(token)",
        body: String? = nil
    ) async throws -> (HTTPResponse.Status, [String: Any], HTTPFields) {
        var headers = HTTPFields()
        if let authorization { headers[.authorization] = authorization }
        if body != nil { headers[.contentType] = "application/json" }
        let response = try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: response.body))) as? [String: Any] ?? [:]
        return (response.status, json, response.headers)
    }

    static func code(_ json: [String: Any]) -> String? { (json["error"] as? [String: Any])?["code"] as? String }

    /// Issue 14: `GET /api/generations` pages through every generation with its filters; the
    /// `next` cursor leads to the following page, null on the last; a bad parameter is a 400.
    @Test func generationsArePagedWithACursor() async throws {
        try await Self.run { client, store in
            for index in 0..<7 {
                let status: GenerationStatusText = index % 2 == 0 ? .completed : .queued
                _ = try await store.ingest(Fixture.delivery(id: "m\(index)", generation: "gen_\(index)", status: status, at: 1_000 + Int64(index)))
            }
            var seen: [String] = []
            var uri = "/api/generations?limit=3"
            while true {
                let (status, json, headers) = try await Self.request(client, .get, uri)
                #expect(status == .ok && headers[.contentType] == "application/json")
                let page = try #require(json["generations"] as? [[String: Any]])
                seen += page.compactMap { $0["generation_id"] as? String }
                guard let next = json["next"] as? String else { break }
                uri = "/api/generations?limit=3&after=" + next
            }
            #expect(seen == (0..<7).reversed().map { "gen_\($0)" }, "\(seen)")
            let (_, completed, _) = try await Self.request(client, .get, "/api/generations?status=completed&source=pipevideo")
            #expect((completed["generations"] as? [[String: Any]])?.compactMap { $0["generation_id"] as? String } == ["gen_6", "gen_4", "gen_2", "gen_0"])
            #expect(completed["next"] is NSNull)
            let (_, other, _) = try await Self.request(client, .get, "/api/generations?source=nowhere")
            #expect((other["generations"] as? [Any])?.isEmpty == true)
            for bad in ["status=done", "after=%21%21", "limit=0", "limit=501", "limit=x"] {
                let (status, json, _) = try await Self.request(client, .get, "/api/generations?" + bad)
                #expect(status == .badRequest && Self.code(json) == "invalid_request", "\(bad)")
            }
            #expect(try await Self.request(client, .get, "/api/generations", authorization: nil).0 == .unauthorized)
        }
    }

    @Test func offWithoutAnAdminToken() async throws {
        try await Self.run(token: nil) { client, _ in
            let (status, json, _) = try await Self.request(client, .post, "/api/generations", body: #"{"id":"gen_1"}"#)
            #expect(status == .notFound)
            #expect(Self.code(json) == "not_found")
            #expect(try await Self.request(client, .get, "/api/generations/gen_1").0 == .notFound)
            #expect(try await Self.request(client, .get, "/").0 == .notFound)
        }
    }

    @Test(arguments: [
        nil, "Bearer wrong-token-0123456789abcdef", "Bearer ", "Bearer admin-token-0123456789abcde",
        "Bearer admin-token-0123456789abcdefX", "Token admin-token-0123456789abcdef", "admin-token-0123456789abcdef",
        "Basic " + Data("user:wrong".utf8).base64EncodedString(), "Basic !!!",
    ] as [String?])
    func wrongOrMissingCredentialsGet401(authorization: String?) async throws {
        try await Self.run { client, store in
            let (status, json, headers) = try await Self.request(client, .post, "/api/generations", authorization: authorization, body: #"{"id":"gen_1"}"#)
            #expect(status == .unauthorized)
            #expect(Self.code(json) == "unauthorized")
            #expect(headers[.wwwAuthenticate]?.hasPrefix("Basic") == true)
            #expect(try await Self.request(client, .get, "/api/generations/gen_1", authorization: authorization).0 == .unauthorized)
            #expect(try await store.polling(generationID: "gen_1").isEmpty, "nothing was tracked")
        }
    }

    @Test func trackThenReadTheStatusDocument() async throws {
        try await Self.run { client, store in
            let (status, json, _) = try await Self.request(client, .post, "/api/generations", body: #"{"id":"gen_api"}"#)
            #expect(status == .accepted)
            #expect(json["result"] as? String == "tracked")
            #expect(json["source"] as? String == "pipevideo")
            let (again, againJSON, _) = try await Self.request(client, .post, "/api/generations", body: #"{"id":"gen_api","extra":1}"#)
            #expect(again == .ok)
            #expect(againJSON["result"] as? String == "already_tracked")
            // Basic works for the same token (what a browser sends).
            let basic = "Basic " + Data("ops:\(Self.token)".utf8).base64EncodedString()
            let (read, document, _) = try await Self.request(client, .get, "/api/generations/gen_api", authorization: basic)
            #expect(read == .ok)
            #expect(document["generation_id"] as? String == "gen_api")
            #expect(document["status"] is NSNull)
            #expect((document["polling"] as? [String: Any])?["tracked"] as? Bool == true)
            // Once the generation is known, the document is `status --json`'s, byte for byte.
            var delivery = Fixture.delivery(id: "msg_api", generation: "gen_api", status: .completed, at: Fixture.now() * 1000)
            delivery.routes = []
            _ = try await store.ingest(delivery)
            let response = try await client.execute(uri: "/api/generations/gen_api", method: .get, headers: [.authorization: "Bearer \(Self.token)"])
            let cli = try await Commands.status(generationID: "gen_api", source: nil, store: store, json: true)
            #expect(String(buffer: response.body) == cli)
            let (finished, finishedJSON, _) = try await Self.request(client, .post, "/api/generations", body: #"{"id":"gen_api"}"#)
            #expect(finished == .ok)
            #expect(finishedJSON["result"] as? String == "already_finished")
            #expect(finishedJSON["status"] as? String == "completed")
        }
    }

    @Test(arguments: [
        "", "[]", #"{"id":""}"#, #"{"id":7}"#, #"{"ID":"gen"}"#, #"{"id":"a\u0000b"}"#, "{\"id\":\"" + String(repeating: "x", count: 257) + "\"}",
    ])
    func badBodiesGet400(body: String) async throws {
        try await Self.run { client, store in
            let (status, json, _) = try await Self.request(client, .post, "/api/generations", body: body)
            #expect(status == .badRequest)
            #expect(Self.code(json) == "invalid_request")
            #expect(try await store.counts() == StoreCounts(deliveries: 0, events: 0, generations: 0, unrecognized: 0))
        }
    }

    @Test func oversizedBodyAndUnknownGenerationAndNoAPI() async throws {
        try await Self.run { client, _ in
            let big = #"{"id":"gen","pad":""# + String(repeating: "x", count: 70_000) + #""}"#
            #expect(try await Self.request(client, .post, "/api/generations", body: big).0 == .contentTooLarge)
            let (status, json, _) = try await Self.request(client, .get, "/api/generations/gen_nobody")
            #expect(status == .notFound)
            #expect(Self.code(json) == "generation_not_found")
        }
        try await Self.run(tracking: false) { client, _ in
            let (status, json, _) = try await Self.request(client, .post, "/api/generations", body: #"{"id":"gen_1"}"#)
            #expect(status == .conflict)
            #expect(Self.code(json) == "api_not_configured")
        }
    }
}
