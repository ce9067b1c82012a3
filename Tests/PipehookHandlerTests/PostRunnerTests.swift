import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import PipehookHandlers
import PipehookSettings
import PipehookSignature
import Synchronization
import Testing

/// The re-POST step against a real local HTTP server that verifies signatures and dedupes by
/// `webhook-id`, answering from a per-path script.
@Suite struct PostRunnerTests {
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    final class Receiver: Sendable {
        struct Seen: Sendable {
            var path: String
            var id: String?
            var verified: Bool
            var contentType: String?
            var body: [UInt8]
        }
        let seen = Mutex<[Seen]>([])
        let script = Mutex<[String: [HTTPResponse.Status]]>([:])

        func router() -> Router<BasicRequestContext> {
            let router = Router()
            router.post("/hook/:name") { request, context -> Response in
                let body = Array(try await request.body.collect(upTo: 16 << 20).readableBytesView)
                let headers = try? SignedHeaders.extract { name in HTTPField.Name(name).flatMap { request.headers[$0] } }
                var verified = false
                if let headers {
                    verified = (try? SignatureVerifier(secrets: [try! SigningSecret(Self.secretText)])
                        .verify(headers: headers, body: body, now: Int64(Date().timeIntervalSince1970))) != nil
                }
                let name = context.parameters.get("name") ?? ""
                self.seen.withLock {
                    $0.append(Seen(path: name, id: headers?.id, verified: verified, contentType: request.headers[.contentType], body: body))
                }
                let status = self.script.withLock { script -> HTTPResponse.Status in
                    guard var queue = script[name], !queue.isEmpty else { return .ok }
                    let next = queue.removeFirst()
                    script[name] = queue
                    return next
                }
                var headersOut = HTTPFields()
                if status == .tooManyRequests { headersOut[.retryAfter] = "7" }
                if status.code / 100 == 3 { headersOut[.location] = "https://elsewhere.example/" }
                return Response(status: status, headers: headersOut)
            }
            return router
        }

        static let secretText = PostRunnerTests.secret
    }

    static func context(jobID: String = "job_0000000000000001") -> StepContext {
        StepContext(jobID: jobID, attempt: 1, document: EventDocument(
            eventID: "msg_1", source: "pipevideo", type: "video.generation.completed", generationID: "gen_1",
            status: .failed, previousStatus: .queued, outputURL: nil, errorMessage: "boom", receivedAt: 0,
            raw: Array(#"{"generationId":"gen_1"}"#.utf8)
        ))
    }

    static func step(_ url: String, secret: Bool = true, body: PostStep.Body = .event) -> PostStep {
        PostStep(url: url, secret: secret ? try! SigningSecret(Self.secret) : nil, body: body, timeoutMilliseconds: 5_000)
    }

    @Test func signedEventIsVerifiableAndKeepsTheJobIdAcrossAttempts() async throws {
        let receiver = Receiver()
        let app = Application(router: receiver.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { test in
            let port = try #require(test.port)
            let http = StepHTTP.makeClient()
            let runner = PostRunner(httpClient: http, logger: Logger(label: "test"))
            receiver.script.withLock { $0["a"] = [.internalServerError] }
            let first = await runner.run(Self.step("http://127.0.0.1:\(port)/hook/a"), context: Self.context())
            #expect(first.result == .retryable(retryAfter: nil) && first.httpStatus == 500)
            let second = await runner.run(Self.step("http://127.0.0.1:\(port)/hook/a"), context: Self.context())
            #expect(second.result == .succeeded && second.httpStatus == 200)
            let seen = receiver.seen.withLock { $0 }
            #expect(seen.count == 2 && seen.allSatisfy(\.verified))
            #expect(Set(seen.map(\.id)) == ["job_0000000000000001"])
            #expect(seen[0].contentType == "application/json")
            let json = try JSONSerialization.jsonObject(with: Data(seen[0].body)) as? [String: Any]
            #expect(json?["error_message"] as? String == "boom")
            try await http.shutdown()
        }
    }

    @Test(arguments: [
        (HTTPResponse.Status.tooManyRequests, StepOutcome.Result.retryable(retryAfter: .seconds(7))),
        (.requestTimeout, .retryable(retryAfter: nil)),
        (.serviceUnavailable, .retryable(retryAfter: nil)),
        (.gone, .permanent),
        (.badRequest, .permanent),
        (.movedPermanently, .permanent),
        (.temporaryRedirect, .permanent),
        (.noContent, .succeeded),
    ])
    func statusClasses(status: HTTPResponse.Status, expected: StepOutcome.Result) async throws {
        let receiver = Receiver()
        let app = Application(router: receiver.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { test in
            let port = try #require(test.port)
            let http = StepHTTP.makeClient()
            let runner = PostRunner(httpClient: http, logger: Logger(label: "test"))
            receiver.script.withLock { $0["s"] = [status] }
            let outcome = await runner.run(Self.step("http://127.0.0.1:\(port)/hook/s"), context: Self.context())
            #expect(outcome.result == expected)
            #expect(outcome.httpStatus == Int(status.code))
            // Redirects are answered, never followed: exactly one request reached the server.
            #expect(receiver.seen.withLock { $0.count } == 1)
            try await http.shutdown()
        }
    }

    @Test func connectionRefusedIsRetryable() async throws {
        let http = StepHTTP.makeClient()
        let runner = PostRunner(httpClient: http, logger: Logger(label: "test"))
        let outcome = await runner.run(Self.step("http://127.0.0.1:1/hook/x"), context: Self.context())
        #expect(outcome.result == .retryable(retryAfter: nil))
        try await http.shutdown()
    }

    @Test func multipartCarriesTheEventAndTheFileAndIsSigned() async throws {
        let dir = NSTemporaryDirectory() + "pipehook-post-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/gen_1.mp4"
        let content = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try Data(content).write(to: URL(fileURLWithPath: file))
        var withFile = Self.context()
        withFile.document.artifact = Artifact(file: file, sha256: "x", bytes: Int64(content.count))
        let context = withFile
        let receiver = Receiver()
        let app = Application(router: receiver.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { test in
            let port = try #require(test.port)
            let http = StepHTTP.makeClient()
            let runner = PostRunner(httpClient: http, logger: Logger(label: "test"))
            let outcome = await runner.run(Self.step("http://127.0.0.1:\(port)/hook/m", body: .multipart), context: context)
            #expect(outcome.result == .succeeded, "\(outcome.summary)")
            try await http.shutdown()
            let seen = try #require(receiver.seen.withLock { $0.first })
            #expect(seen.verified)
            #expect(seen.contentType?.hasPrefix("multipart/form-data; boundary=") == true)
            let body = seen.body
            #expect(body.count > content.count)
            // The file's bytes appear verbatim inside the body.
            let bodyData = Data(body)
            #expect(bodyData.range(of: Data(content)) != nil)
            #expect(bodyData.range(of: Data(#"name="event""#.utf8)) != nil)
        }
        var noFile = Self.context()
        noFile.document.artifact = nil
        let http = StepHTTP.makeClient()
        let outcome = await PostRunner(httpClient: http, logger: Logger(label: "test")).run(Self.step("http://127.0.0.1:1/x", body: .multipart), context: noFile)
        #expect(outcome.result == .permanent)
        try await http.shutdown()
    }
}
