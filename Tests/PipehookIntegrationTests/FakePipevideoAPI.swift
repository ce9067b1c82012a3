import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore

/// A local stand-in for Pipevideo's generation API, speaking its documented format
/// (`GET /v1/responses/{id}`, Bearer key, 429 bodies with `data.retry_after`), scripted per id.
/// It also serves videos behind expiring tokens, like signed output URLs.
final class FakePipevideoAPI: Sendable {
    enum Answer: Sendable {
        /// `inContent`: the URL only in the `output[].content[]` part (no `output_video_url`).
        case status(String, url: String? = nil, error: String? = nil, inContent: Bool = false)
        case notFound
        case unauthorized
        case rateLimited(retryAfter: Double)
        case serverError
    }

    /// How the fake answers the next `POST /v1/responses` (after the default: created, queued).
    enum CreateAnswer: Sendable {
        case created
        case badRequest(String)
        case rateLimited(retryAfter: Double)
        case serverError
        /// Creates the generation, then answers only after 8 s (a call cut short before: its outcome
        /// is unknown to the caller).
        case createThenHang
    }

    struct Request: Sendable {
        var id: String
        /// Unix ms when it arrived.
        var at: Int64
        var authorization: String?
    }

    private actor State {
        var scripts: [String: [Answer]] = [:]
        var requests: [Request] = []
        var validTokens: Set<String> = []
        var key: String
        var hook: (@Sendable (String) async -> Void)?

        var createScript: [CreateAnswer] = []
        /// Bodies of every create that made a generation, by generation id.
        var created: [(id: String, body: [UInt8])] = []
        var cancelled: [String] = []
        var methods: [String] = []
        /// Every API request in arrival order, polls included.
        var order: [String] = []

        init(key: String) { self.key = key }

        func create(_ body: [UInt8], authorization: String?) -> (CreateAnswer, String?) {
            methods.append("POST /v1/responses")
            order.append("POST /v1/responses")
            guard authorization == "Bearer \(key)" else { return (.badRequest("unauthorized"), nil) }
            let answer = createScript.isEmpty ? .created : createScript.removeFirst()
            switch answer {
            case .created, .createThenHang:
                let id = "gen_fake\(created.count + 1)"
                created.append((id, body))
                if scripts[id] == nil { scripts[id] = [.status("queued")] }
                return (answer, id)
            default: return (answer, nil)
            }
        }

        func cancel(_ id: String, authorization: String?) -> Answer? {
            methods.append("DELETE /v1/responses/\(id)")
            order.append("DELETE /v1/responses/\(id)")
            guard authorization == "Bearer \(key)" else { return .unauthorized }
            guard let current = scripts[id]?.first else { return .notFound }
            if case .status(let status, _, _, _) = current, ["completed", "failed", "cancelled", "incomplete"].contains(status) {
                return current  // not cancellable: answered `cancelled: false`
            }
            cancelled.append(id)
            scripts[id] = [.status("cancelled")]
            return nil
        }

        func scriptCreates(_ answers: [CreateAnswer]) { createScript = answers }
        func isAuthorized(_ authorization: String?) -> Bool { authorization == "Bearer \(key)" }

        func next(_ id: String, authorization: String?) -> Answer {
            order.append("GET /v1/responses/\(id)")
            requests.append(Request(id: id, at: Int64(Date().timeIntervalSince1970 * 1000), authorization: authorization))
            guard authorization == "Bearer \(key)" else { return .unauthorized }
            guard var script = scripts[id], !script.isEmpty else { return .notFound }
            let answer = script.removeFirst()
            // The last answer repeats: a generation stays in its final state.
            scripts[id] = script.isEmpty ? [answer] : script
            return answer
        }

        func script(_ id: String, _ answers: [Answer]) { scripts[id] = answers }
        func allow(_ token: String) { validTokens.insert(token) }
        func isValid(_ token: String) -> Bool { validTokens.contains(token) }
        func setKey(_ key: String) { self.key = key }
        func setHook(_ hook: @escaping @Sendable (String) async -> Void) { self.hook = hook }
    }

    private let state: State
    static let video = [UInt8](repeating: 0x5A, count: 300_000)

    init(key: String) { state = State(key: key) }

    func script(_ id: String, _ answers: [Answer]) async { await state.script(id, answers) }
    func allowToken(_ token: String) async { await state.allow(token) }
    func acceptKey(_ key: String) async { await state.setKey(key) }
    /// Runs before each scripted answer is sent (to make something happen while a poll is in flight).
    func beforeAnswering(_ hook: @escaping @Sendable (String) async -> Void) async { await state.setHook(hook) }
    var requests: [Request] { get async { await state.requests } }
    func scriptCreates(_ answers: [CreateAnswer]) async { await state.scriptCreates(answers) }
    var created: [(id: String, body: [UInt8])] { get async { await state.created } }
    var cancelled: [String] { get async { await state.cancelled } }
    /// Every create and cancel request, in order ("POST /v1/responses", "DELETE /v1/responses/ID").
    var calls: [String] { get async { await state.methods } }
    /// Every request (polls, creates, cancels) in the order they arrived.
    var order: [String] { get async { await state.order } }
    func requests(for id: String) async -> [Request] { await state.requests.filter { $0.id == id } }

    /// Runs the fake on a free local port for the duration of `body`.
    func run<T: Sendable>(_ body: @Sendable (_ baseURL: String) async throws -> T) async throws -> T {
        let router = Router()
        let state = self.state
        router.get("/v1/responses/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            if let hook = await state.hook { await hook(id) }
            return Self.response(for: await state.next(id, authorization: request.headers[.authorization]), id: id)
        }
        router.post("/v1/responses") { request, _ -> Response in
            let body = Array(buffer: try await request.body.collect(upTo: 1 << 20))
            let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
            guard await state.isAuthorized(request.headers[.authorization]) else { return Self.response(for: .unauthorized, id: "") }
            guard let object, object["model"] is String, object["input"] != nil else {
                return Self.json(.badRequest, #"{"message":"model and input are required"}"#)
            }
            let (answer, id) = await state.create(body, authorization: request.headers[.authorization])
            switch answer {
            case .created: return Self.response(for: .status("queued"), id: id ?? "")
            case .createThenHang:
                // Longer than the test takes to kill the caller; short, because the fake's shutdown
                // waits for this handler.
                try await Task.sleep(for: .seconds(8))
                return Self.response(for: .status("queued"), id: id ?? "")
            case .badRequest(let message): return Self.json(.badRequest, #"{"message":"\#(message)"}"#)
            case .rateLimited(let seconds): return Self.response(for: .rateLimited(retryAfter: seconds), id: "")
            case .serverError: return Self.response(for: .serverError, id: "")
            }
        }
        router.delete("/v1/responses/:id") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            switch await state.cancel(id, authorization: request.headers[.authorization]) {
            case nil: return Self.json(.ok, #"{"id":"\#(id)","cancelled":true}"#)
            case .status?: return Self.json(.ok, #"{"id":"\#(id)","cancelled":false}"#)
            case let other?: return Self.response(for: other, id: id)
            }
        }
        router.get("/videos/:name") { request, _ in
            let token = request.uri.queryParameters.get("token") ?? ""
            guard await state.isValid(token) else {
                return Response(status: .forbidden, body: ResponseBody(byteBuffer: ByteBuffer(string: "<Error>Request has expired</Error>")))
            }
            return Response(
                status: .ok, headers: [.contentType: "video/mp4"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: Self.video))
            )
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        let box = ResultBox<T>()
        try await app.test(.live) { client in
            box.value = try await body("http://127.0.0.1:\(client.port!)")
        }
        return box.value!
    }

    private final class ResultBox<T>: @unchecked Sendable {
        var value: T?
    }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func response(for answer: Answer, id: String) -> Response {
        switch answer {
        case .status(let status, let url, let error, let inContent):
            let quotedURL = url.map { "\"\($0)\"" } ?? "null"
            let errorObject = error.map { #"{"code":"generation_failed","message":"\#($0)"}"# } ?? "null"
            let content = url.map { #"[{"type":"message","content":[{"type":"output_video","video_url":{"url":"\#($0)","expires_at":1999999999}}]}]"# } ?? "[]"
            return json(.ok, """
                {"id":"\(id)","object":"response","created_at":1760000000,"status":"\(status)",\
                "output_video_url":\(inContent ? "null" : quotedURL),"output":\(content),"error":\(errorObject),\
                "completed_at":null,"artifact_url":null,"model":"pipevideo-1","usage":{"seconds":8}}
                """)
        case .notFound:
            return json(.notFound, #"{"error":{"code":"not_found","message":"No response with that id"}}"#)
        case .unauthorized:
            return json(.unauthorized, #"{"error":{"code":"invalid_api_key","message":"Invalid API key"}}"#)
        case .rateLimited(let seconds):
            return json(.tooManyRequests, #"{"error":{"code":"rate_limited","message":"Too many requests"},"data":{"retry_after":\#(seconds)}}"#)
        case .serverError:
            return json(.internalServerError, #"{"error":{"code":"internal","message":"oops"}}"#)
        }
    }
}
