import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import PipehookDaemon
import PipehookSettings
import PipehookSQLite
import PipehookStore
import Testing

/// One test per row of SPEC §4. In process (HummingbirdTesting's router mode) over the in-memory
/// store where only the HTTP layer's rules are under test; on a real socket and a real SQLite file
/// where those matter (a stalled client, a held write lock, many concurrent connections).
@Suite struct HTTPTests {
    struct Harness {
        let dir = TempDir()
        let store: any Storage
        var mode: TestingSetup = .router
        var readTimeout = "10s"
        /// More configuration lines.
        var extra = ""

        /// The in-memory store, no socket.
        init() {
            store = MemoryStore()
        }

        /// A real SQLite file (a write waits `busyTimeout` for the lock), on a real socket.
        init(sqliteBusyTimeout busyTimeout: Double) throws {
            var options = SQLiteStore.Options()
            options.busyTimeout = busyTimeout
            store = try SQLiteStore(path: dir.path + "/pipehook.sqlite", options: options)
            mode = .live
        }

        func run(_ test: @Sendable @escaping (any TestClientProtocol, any Storage) async throws -> Void) async throws {
            let settings = try SettingsParser.parse(yaml: Fixture.yaml(dir: dir.path, extra: extra, readTimeout: readTimeout), environment: [:])
            let app = Daemon.application(settings: settings, store: store, logger: Fixture.logger)
            let store = self.store
            try await app.test(mode) { client in try await test(client, store) }
        }
    }

    static func post(
        _ client: any TestClientProtocol, source: String = "pipevideo", body: String, headers: [(String, String)]
    ) async throws -> (HTTPResponse.Status, [String: Any]) {
        var fields = HTTPFields()
        for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        let response = try await client.execute(uri: "/webhooks/\(source)", method: .post, headers: fields, body: ByteBuffer(string: body))
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: response.body))) as? [String: Any] ?? [:]
        return (response.status, json)
    }

    static func errorCode(_ json: [String: Any]) -> String? {
        (json["error"] as? [String: Any])?["code"] as? String
    }

    @Test func validNewDeliveryIsAcceptedThenDuplicate() async throws {
        try await Harness().run { client, store in
            let body = Fixture.body(generation: "gen_1", status: "completed", outputURL: "https://v/1.mp4")
            let headers = Fixture.headers(id: "msg_1", body: body)
            let (status, json) = try await Self.post(client, body: body, headers: headers)
            #expect(status == .ok)
            #expect(json["result"] as? String == "accepted")
            #expect(json["generation_id"] as? String == "gen_1")
            #expect(json["status"] as? String == "completed")
            #expect(json["transition"] as? String == "applied")
            // Same delivery id again, freshly signed as Svix's retries are.
            let (again, againJSON) = try await Self.post(client, body: body, headers: Fixture.headers(id: "msg_1", body: body, timestamp: Fixture.now() + 1))
            #expect(again == .ok)
            #expect(againJSON as NSDictionary == ["result": "duplicate"])
            #expect(try await store.counts() == StoreCounts(deliveries: 1, events: 1, generations: 1, unrecognized: 0))
        }
    }

    @Test func transitionsAreReported() async throws {
        try await Harness().run { client, _ in
            var results: [String] = []
            for (index, status) in ["in_progress", "in_progress", "queued", "failed", "completed"].enumerated() {
                let body = Fixture.body(generation: "gen_t", status: status)
                let (_, json) = try await Self.post(client, body: body, headers: Fixture.headers(id: "msg_t\(index)", body: body))
                results.append(json["transition"] as? String ?? "?")
            }
            #expect(results == ["applied", "same", "stale", "applied", "conflict"])
        }
    }

    @Test func webhookHeaderFamilyAndMixedCaseNamesWork() async throws {
        try await Harness().run { client, _ in
            let body = Fixture.body(generation: "gen_w", status: "queued")
            let headers = Fixture.headers(id: "msg_w", body: body, prefix: "webhook").map { (name: String, value: String) in
                (name.split(separator: "-").map { $0.capitalized }.joined(separator: "-"), value)
            }
            #expect(headers[0].0 == "Webhook-Id")
            let (status, json) = try await Self.post(client, body: body, headers: headers)
            #expect(status == .ok && json["result"] as? String == "accepted")
        }
    }

    @Test func rotatedSecretsAreAllAccepted() async throws {
        try await Harness().run { client, _ in
            for (index, secret) in [Fixture.secret, Fixture.otherSecret].enumerated() {
                let body = Fixture.body(generation: "gen_r\(index)", status: "queued")
                let (status, _) = try await Self.post(client, source: "rotating", body: body, headers: Fixture.headers(id: "msg_r\(index)", body: body, secret: secret))
                #expect(status == .ok)
            }
        }
    }

    @Test func signedButUninterpretableIsStoredRawAnd202() async throws {
        try await Harness().run { client, store in
            let body = #"{"eventType":"video.generation.started","id":42}"#
            let (status, json) = try await Self.post(client, body: body, headers: Fixture.headers(id: "msg_u", body: body))
            #expect(status == .accepted)
            #expect(json as NSDictionary == ["result": "unrecognized"])
            #expect(try await store.counts() == StoreCounts(deliveries: 1, events: 0, generations: 0, unrecognized: 1))
        }
    }

    /// Every rejected request gets its status and code and leaves the store exactly as it was.
    @Test(arguments: [
        ("missing-id", HTTPResponse.Status.badRequest, "missing_signature_headers"),
        ("missing-timestamp", .badRequest, "missing_signature_headers"),
        ("missing-signature", .badRequest, "missing_signature_headers"),
        ("bad-signature", .unauthorized, "invalid_signature"),
        ("wrong-secret", .unauthorized, "invalid_signature"),
        ("tampered-body", .unauthorized, "invalid_signature"),
        ("too-old", .unauthorized, "timestamp_too_old"),
        ("too-new", .unauthorized, "timestamp_too_new"),
        ("malformed-timestamp", .unauthorized, "invalid_timestamp"),
        ("unknown-source", .notFound, "unknown_source"),
        ("too-large", .contentTooLarge, "body_too_large"),
    ])
    func rejectedRequestLeavesStoreUnchanged(kind: String, expected: HTTPResponse.Status, code: String) async throws {
        try await Harness().run { client, store in
            // One accepted delivery first, so "unchanged" is checked against a non-empty store.
            let seed = Fixture.body(generation: "gen_seed", status: "queued")
            _ = try await Self.post(client, body: seed, headers: Fixture.headers(id: "msg_seed", body: seed))
            let before = try await store.counts()

            var body = Fixture.body(generation: "gen_x", status: "completed")
            var headers = Fixture.headers(id: "msg_x", body: body)
            var source = "pipevideo"
            switch kind {
            case "missing-id": headers.remove(at: 0)
            case "missing-timestamp": headers.remove(at: 1)
            case "missing-signature": headers.remove(at: 2)
            case "bad-signature": headers[2].1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
            case "wrong-secret": headers = Fixture.headers(id: "msg_x", body: body, secret: Fixture.otherSecret)
            case "tampered-body": body = body.replacingOccurrences(of: "gen_x", with: "gen_y")
            // ±360 s rather than ±301: the wall clock moves on while a loaded machine serves the
            // request (the exact ±301 s edges are unit-tested with a pinned clock).
            case "too-old": headers = Fixture.headers(id: "msg_x", body: body, timestamp: Fixture.now() - 360)
            case "too-new": headers = Fixture.headers(id: "msg_x", body: body, timestamp: Fixture.now() + 360)
            case "malformed-timestamp": headers[1].1 = "yesterday"
            case "unknown-source": source = "nope"
            case "too-large":
                body = #"{"pad":""# + String(repeating: "x", count: 1 << 20) + #""}"#
                headers = Fixture.headers(id: "msg_x", body: body)
            default: Issue.record("unknown case")
            }
            let (status, json) = try await Self.post(client, source: source, body: body, headers: headers)
            #expect(status == expected)
            #expect(Self.errorCode(json) == code)
            #expect(((json["error"] as? [String: Any])?["message"] as? String)?.isEmpty == false)
            #expect(try await store.counts() == before)
            // The same id is not burnt by a rejection: a correct delivery still goes through.
            let good = Fixture.body(generation: "gen_x", status: "completed")
            let (after, _) = try await Self.post(client, body: good, headers: Fixture.headers(id: "msg_x", body: good))
            #expect(after == .ok)
        }
    }

    @Test func errorBodiesNeverEchoSecretsOrSignatures() async throws {
        try await Harness().run { client, _ in
            let body = Fixture.body(generation: "gen_s", status: "completed")
            var headers = Fixture.headers(id: "msg_s", body: body, secret: Fixture.otherSecret)
            let signature = headers[2].1
            headers[2].1 = signature
            var fields = HTTPFields()
            for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
            let response = try await client.execute(uri: "/webhooks/pipevideo", method: .post, headers: fields, body: ByteBuffer(string: body))
            let text = String(buffer: response.body)
            #expect(response.status == .unauthorized)
            #expect(!text.contains(signature.dropFirst(3)))
            #expect(!text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
            #expect(response.headers[.contentType] == "application/json")
        }
    }

    @Test func storeThatCannotCommitAnswers503AndReadyzFails() async throws {
        let harness = try Harness(sqliteBusyTimeout: 0.2)
        try await harness.run { client, store in
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
            let lock = try ExclusiveLock(path: harness.dir.path + "/pipehook.sqlite")
            let body = Fixture.body(generation: "gen_b", status: "completed")
            let (status, json) = try await Self.post(client, body: body, headers: Fixture.headers(id: "msg_b", body: body))
            #expect(status == .serviceUnavailable)
            #expect(Self.errorCode(json) == "store_unavailable")
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .serviceUnavailable)
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            lock.release()
            // The sender's retry then succeeds: nothing was half-written by the failed attempt.
            let (retry, retryJSON) = try await Self.post(client, body: body, headers: Fixture.headers(id: "msg_b", body: body))
            #expect(retry == .ok && retryJSON["result"] as? String == "accepted")
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
            #expect(try await store.counts().deliveries == 1)
        }
    }

    @Test func healthAndUnknownPaths() async throws {
        try await Harness().run { client, _ in
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
            let missing = try await client.execute(uri: "/nowhere", method: .get)
            #expect(missing.status == .notFound)
            #expect(String(buffer: missing.body).contains("not_found"))
        }
    }

    /// A client that stops sending halfway through its headers is disconnected by the read timeout.
    @Test func stalledClientIsCutOff() async throws {
        var harness = Harness()
        harness.mode = .live
        harness.readTimeout = "1s"
        try await harness.run { client, _ in
            let port = try #require(client.port)
            let closedAfter = try StallingSocket.sendPartialAndWaitForClose(port: port, partial: "POST /webhooks/pipevideo HTTP/1.1\r\nHost: x\r\n", limit: 10)
            #expect(closedAfter < 5, "connection stayed open \(closedAfter)s with read_timeout 1s")
        }
    }

    /// Sends every request at once over up to 32 connections; each answer's status, `result`
    /// (or error code) and how long it took.
    static func postConcurrently(
        port: Int, _ requests: [(String, [(String, String)])]
    ) async throws -> [(status: Int, result: String, seconds: Double)] {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 32)
        // A busy machine may keep a request waiting for one of the 32 connections a while.
        configuration.timeout = .init(connect: .seconds(60), read: .seconds(60))
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        // Shut down whatever happens: a client released unshut traps the whole test process.
        let outcome: Result<[(status: Int, result: String, seconds: Double)], any Error>
        do { outcome = .success(try await withThrowingTaskGroup(of: (status: Int, result: String, seconds: Double).self) { group in
            for (body, headers) in requests {
                group.addTask {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/pipevideo")
                    request.method = .POST
                    for (name, value) in headers { request.headers.add(name: name, value: value) }
                    request.body = .bytes(ByteBuffer(string: body))
                    let started = ContinuousClock.now
                    let response = try await http.execute(request, timeout: .seconds(30))
                    let answer = try await response.body.collect(upTo: 4096)
                    let elapsed = ContinuousClock.now - started
                    let json = try JSONSerialization.jsonObject(with: Data(buffer: answer)) as? [String: Any]
                    let result = json?["result"] as? String ?? errorCode(json ?? [:]) ?? "?"
                    return (Int(response.status.code), result, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }) } catch { outcome = .failure(error) }
        try await http.shutdown()
        return try outcome.get()
    }

    /// 1,000 concurrent deliveries (600 distinct, 400 redelivered), shuffled: exactly the expected rows.
    @Test func thousandConcurrentDeliveriesWithDuplicatesAndReordering() async throws {
        try await Harness(sqliteBusyTimeout: 5).run { client, store in
            let port = try #require(client.port)
            let statuses = ["queued", "in_progress", "completed"]
            var requests = (0..<600).map { i in
                let body = Fixture.body(generation: "gen_c\(i / 3)", status: statuses[i % 3])
                return (body, Fixture.headers(id: "msg_c\(i)", body: body))
            }
            requests += requests.shuffled().prefix(400)
            requests.shuffle()
            let answers = try await Self.postConcurrently(port: port, requests)
            let results = answers.reduce(into: [String: Int]()) { $0["\($1.status) \($1.result)", default: 0] += 1 }
            #expect(results == ["200 accepted": 600, "200 duplicate": 400])
            #expect(try await store.counts() == StoreCounts(deliveries: 600, events: 600, generations: 200, unrecognized: 0))
            let generations = try await store.generations(status: nil, limit: 1000)
            #expect(generations.count == 200 && generations.allSatisfy { $0.status == .completed })
            #expect(try #require(store as? SQLiteStore).commitCount < 600)
        }
    }
}

/// Sends part of a request and measures how long until the server hangs up.
enum StallingSocket {
    static func sendPartialAndWaitForClose(port: Int, partial: String, limit: Int) throws -> Double {
        let connection = try RawConnection(port: port)
        connection.send(partial)
        return connection.readUntilClosed(limit: limit).closedAfter
    }
}
