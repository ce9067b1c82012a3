import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// Issue 11, the command line: `submit`, `cancel` and `wait` against the built binary and the local
/// fake Pipevideo API (create and cancel in the seed's documented shapes).
@Suite(.serialized) struct LifecycleEndToEndTests {
    static let key = "pv_lifecycle_key_0123456789abcdef"
    static let environment = ["PIPEVIDEO_API_KEY": key]

    /// A configuration with the fake API, a download route on completed and an exec route on cancelled.
    struct Setup {
        let dir = TempDir()
        let config: String

        init(base: String, extra: String = "", pollAfter: String = "1h") throws {
            config = dir.path + "/pipehook.yaml"
            try (Fixture.yaml(dir: dir.path + "/data").replacingOccurrences(of: "log_level: warning", with: "log_level: info") + """
                api:
                  base_url: "\(base)"
                  key: "${PIPEVIDEO_API_KEY}"
                  requests_per_minute: 600
                  poll_after: \(pollAfter)
                  defaults: {model: pipevideo-1, engine: lottie}
                routes:
                  - name: archive
                    on: [completed]
                    steps:
                      - download: {dir: "\(dir.path)/videos", path: "{generation_id}.{ext}", allow_http: true}
                  - name: on-cancel
                    on: [cancelled]
                    steps:
                      - exec: {command: ["/bin/sh", "-c", "echo \\"$PIPEHOOK_GENERATION_ID\\" >> \(dir.path)/cancelled.log"]}
                \(extra)
                """).write(toFile: config, atomically: true, encoding: .utf8)
        }

        func run(_ arguments: [String]) async throws -> (code: Int32, stdout: String, stderr: String) {
            let result = try await pipehook(arguments + ["--config", config], directory: dir.path, environment: LifecycleEndToEndTests.environment)
            #expect(!result.stdout.contains(LifecycleEndToEndTests.key) && !result.stderr.contains(LifecycleEndToEndTests.key), "the API key leaked")
            return result
        }

        func status(_ id: String) async throws -> [String: Any]? {
            let result = try await run(["status", id, "--json"])
            guard result.code == 0 else { return nil }
            return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        }

        func daemon() async throws -> (RunningPipehook, Int) {
            let server = try RunningPipehook(["serve", "--config", config], directory: dir.path, environment: LifecycleEndToEndTests.environment)
            return (server, try await server.waitForPort())
        }
    }

    @Test func submitThenWebhookArchivesAndWaitExitsZeroWithTheFile() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.allowToken("t1")
        try await fake.run { base in
            let setup = try Setup(base: base)
            let (server, port) = try await setup.daemon()
            let submitted = try await setup.run(["submit", "--prompt", "a red fox in the snow", "--width", "1280", "--height", "720"])
            #expect(submitted.code == 0, "\(submitted)")
            let id = submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id == "gen_fake1")
            // The create body: the options, with model and engine from api.defaults.
            let body = try #require(await fake.created.first?.body)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
            #expect(object["input"] as? String == "a red fox in the snow" && object["model"] as? String == "pipevideo-1")
            #expect(object["engine"] as? String == "lottie" && object["width"] as? Int == 1280 && object["height"] as? Int == 720)
            // Recorded as queued, origin api.
            let queued = try #require(try await setup.status(id))
            #expect(queued["status"] as? String == "queued")
            #expect((queued["timeline"] as? [[String: Any]])?.map { $0["origin"] as? String } == ["api"])

            // `wait` blocks until the webhook comes and the archive step has run.
            async let waited = setup.run(["wait", id, "--timeout", "60s"])
            try await Task.sleep(for: .milliseconds(500))
            let sent = try await setup.run([
                "send", "--url", "http://127.0.0.1:\(port)/webhooks/pipevideo", "--generation-id", id, "--status", "completed",
                "--output-url", "\(base)/videos/fox.mp4?token=t1",
            ])
            #expect(sent.code == 0, "\(sent)")
            let result = try await waited
            #expect(result.code == 0, "\(result)")
            let file = setup.dir.path + "/videos/\(id).mp4"
            #expect(result.stdout.contains("\(id) completed") && result.stdout.contains("archived: \(file)"), "\(result.stdout)")
            #expect(FileManager.default.contents(atPath: file).map { Array($0) } == FakePipevideoAPI.video)
            // --json: the final status document, with the archived file.
            let json = try await setup.run(["wait", id, "--json"])
            let document = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            #expect((document["jobs"] as? [[String: Any]])?.first?["file"] as? String == file)
            server.kill(SIGTERM)
            #expect(!server.stdout.contains(Self.key) && !server.stderr.contains(Self.key))
        }
    }

    @Test func submitWithMessageItemsFromAFile() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let setup = try Setup(base: base)
            let input = setup.dir.path + "/create.json"
            let create = #"{"input":[{"role":"user","content":[{"type":"input_text","text":"a fox"},{"type":"input_image","image_url":"https://example.com/fox.png"}]}],"aspectRatio":"16:9"}"#
            try create.write(toFile: input, atomically: true, encoding: .utf8)
            let submitted = try await setup.run(["submit", "--input-file", input, "--json"])
            #expect(submitted.code == 0, "\(submitted)")
            let answer = try #require(try JSONSerialization.jsonObject(with: Data(submitted.stdout.utf8)) as? [String: Any])
            #expect(answer["id"] as? String == "gen_fake1" && answer["status"] as? String == "queued", "the create answer as Pipevideo gave it")
            let sentBody = try #require(await fake.created.first?.body)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(sentBody)) as? [String: Any])
            let items = try #require(object["input"] as? [[String: Any]])
            #expect((items.first?["content"] as? [[String: Any]])?.map { $0["type"] as? String } == ["input_text", "input_image"])
            #expect(object["model"] as? String == "pipevideo-1" && object["aspectRatio"] as? String == "16:9")
            // Usage errors are exit 2 and reach no API.
            #expect(try await setup.run(["submit"]).code == 2)
            #expect(try await setup.run(["submit", "--prompt", "x", "--input-file", input]).code == 2)
            #expect(await fake.calls.count == 1)
        }
    }

    @Test func cancelAQueuedGenerationRunsItsRoutesAndATerminalOneIsRefusedWithoutACall() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let setup = try Setup(base: base)
            let (server, _) = try await setup.daemon()
            let id = try await setup.run(["submit", "--prompt", "to be cancelled"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let cancelled = try await setup.run(["cancel", id])
            #expect(cancelled.code == 0 && cancelled.stdout.contains("cancelled \(id)"), "\(cancelled)")
            #expect(await fake.cancelled == [id])
            let waited = try await setup.run(["wait", id, "--timeout", "30s"])
            #expect(waited.code == 3, "cancelled is exit 3: \(waited)")
            let document = try #require(try await setup.status(id))
            #expect(document["status"] as? String == "cancelled")
            #expect((document["timeline"] as? [[String: Any]])?.map { $0["origin"] as? String } == ["api", "api"])
            #expect(try String(contentsOfFile: setup.dir.path + "/cancelled.log", encoding: .utf8) == "\(id)\n", "the cancelled route ran once")

            let calls = await fake.calls.count
            let again = try await setup.run(["cancel", id])
            #expect(again.code == 1 && again.stderr.contains("already cancelled"), "\(again)")
            #expect(await fake.calls.count == calls, "no API call for a terminal generation")
            server.kill(SIGTERM)
        }
    }

    @Test func anIdempotencyKeyCreatesOnceAndACrashMidCallIsNeverASecondGeneration() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let setup = try Setup(base: base)
            let first = try await setup.run(["submit", "--prompt", "once", "--idempotency-key", "order-1"])
            let second = try await setup.run(["submit", "--prompt", "once", "--idempotency-key", "order-1"])
            #expect(first.code == 0 && second.code == 0 && first.stdout == second.stdout, "\(first) \(second)")
            #expect(await fake.created.count == 1)
            let other = try await setup.run(["submit", "--prompt", "something else", "--idempotency-key", "order-1"])
            #expect(other.code == 1 && other.stderr.contains("different request"), "\(other)")

            // The process dies while the create is in flight (Pipevideo created it, no answer came).
            await fake.scriptCreates([.createThenHang])
            let cut = try RunningPipehook(
                ["submit", "--prompt", "cut short", "--idempotency-key", "order-2", "--config", setup.config], directory: setup.dir.path,
                environment: Self.environment
            )
            let deadline = ContinuousClock.now + .seconds(20)
            while await fake.created.count < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(await fake.created.count == 2)
            cut.kill(SIGKILL)
            let repeated = try await setup.run(["submit", "--prompt", "cut short", "--idempotency-key", "order-2"])
            #expect(repeated.code == 1 && repeated.stderr.contains("outcome unknown") && repeated.stderr.contains("order-2"), "\(repeated)")
            #expect(await fake.created.count == 2, "never a silent second generation")
        }
    }

    @Test func refusedCreatesRecordNothingAndSayWhy() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let setup = try Setup(base: base)
            await fake.scriptCreates([.badRequest("Insufficient credits"), .rateLimited(retryAfter: 7)])
            let poor = try await setup.run(["submit", "--prompt", "x", "--idempotency-key", "k-400"])
            #expect(poor.code == 1 && poor.stderr.contains("Insufficient credits"), "\(poor)")
            let limited = try await setup.run(["submit", "--prompt", "x"])
            #expect(limited.code == 1 && limited.stderr.contains("429") && limited.stderr.contains("7 s"), "\(limited)")
            let listed = try await setup.run(["generations", "--json"])
            let rows = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [Any]
            #expect(rows?.isEmpty == true, "nothing recorded: \(listed)")
            // The refused create's key may be used again.
            let retried = try await setup.run(["submit", "--prompt", "x", "--idempotency-key", "k-400"])
            #expect(retried.code == 0, "\(retried)")
            // No model anywhere: refused before any call.
            let calls = await fake.calls.count
            let noDefaults = try Setup(base: base)
            try String(contentsOfFile: noDefaults.config, encoding: .utf8).replacingOccurrences(of: "defaults: {model: pipevideo-1, engine: lottie}", with: "")
                .write(toFile: noDefaults.config, atomically: true, encoding: .utf8)
            let unnamed = try await noDefaults.run(["submit", "--prompt", "x"])
            #expect(unnamed.code == 1 && unnamed.stderr.contains("--model"), "\(unnamed)")
            #expect(await fake.calls.count == calls)
        }
    }

    @Test func waitTimesOutWithFourAndAFailedGenerationIsThree() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let setup = try Setup(base: base)
            let (server, port) = try await setup.daemon()
            let id = try await setup.run(["submit", "--prompt", "slow"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let timedOut = try await setup.run(["wait", id, "--timeout", "1s"])
            #expect(timedOut.code == 4 && timedOut.stdout.contains("timed out"), "\(timedOut)")
            // `submit --wait` goes on as `wait` and exits as it does.
            let submittedAndWaited = try await setup.run(["submit", "--prompt", "also slow", "--wait", "--timeout", "1s"])
            #expect(submittedAndWaited.code == 4 && submittedAndWaited.stdout.contains("timed out: gen_fake2"), "\(submittedAndWaited)")
            _ = try await setup.run([
                "send", "--url", "http://127.0.0.1:\(port)/webhooks/pipevideo", "--generation-id", id, "--status", "failed",
                "--error-message", "content policy",
            ])
            let failed = try await setup.run(["wait", id, "--timeout", "30s"])
            #expect(failed.code == 3 && failed.stdout.contains("content policy"), "\(failed)")
            #expect(try await setup.run(["wait", id, "--timeout", "soon"]).code == 2)
            server.kill(SIGTERM)
        }
    }

    /// The daemon's gateway over a real socket, as an OpenAI-style client would use it, and a
    /// generation created through it that no webhook reports: polled after `poll_after` until it
    /// ends. The API key appears in no answer and no log line.
    @Test func gatewayOverHTTPAndAPolledCreate() async throws {
        let fake = FakePipevideoAPI(key: Self.key)
        try await fake.run { base in
            let appToken = "app-token-0123456789abcdef"
            let setup = try Setup(base: base, extra: "gateway: {tokens: [\"\(appToken)\"]}", pollAfter: "1s")
            let (server, port) = try await setup.daemon()
            func call(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> (UInt, String) {
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
                request.method = method
                request.headers.add(name: "Authorization", value: "Bearer \(appToken)")
                if let body {
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(ByteBuffer(string: body))
                }
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                #expect(!text.contains(Self.key), "the API key leaked into an answer")
                return (response.status.code, text)
            }
            let (created, answer) = try await call(.POST, "/v1/responses", body: #"{"input":"through the gateway"}"#)
            #expect(created == 200 && answer.contains(#""status":"queued""#), "\(answer)")
            let id = try #require((try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any])?["id"] as? String)
            let (got, document) = try await call(.GET, "/v1/responses/\(id)")
            #expect(got == 200 && document.contains(#""object":"response""#), "\(document)")

            // No webhook comes: the daemon polls it after poll_after and learns it completed.
            await fake.allowToken("t9")
            await fake.script(id, [.status("completed", url: "\(base)/videos/g.mp4?token=t9")])
            let waited = try await setup.run(["wait", id, "--timeout", "60s"])
            #expect(waited.code == 0 && waited.stdout.contains("archived:"), "\(waited)")
            let (_, done) = try await call(.GET, "/v1/responses/\(id)")
            #expect(done.contains(#""status":"completed""#), "\(done)")
            let (deleted, refusal) = try await call(.DELETE, "/v1/responses/\(id)")
            #expect(deleted == 409 && refusal.contains("already_finished"), "\(refusal)")
            server.kill(SIGTERM)
            #expect(!server.stdout.contains(Self.key) && !server.stderr.contains(Self.key), "the API key leaked into the log")
        }
    }
}
