import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

/// The real binary with `api` pointed at the local fake Pipevideo API.
@Suite(.serialized) struct ReconcileEndToEndTests {
    static let key = "pv_e2e_key_abcdef0123456789"

    func waitFor(_ what: String, timeout: Double = 30, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out waiting for \(what)")
    }

    func statusJSON(_ id: String, config: String, dir: String) async throws -> [String: Any]? {
        let environment = ["PIPEVIDEO_API_KEY": Self.key, "ADMIN_TOKEN": "admin-token-0123456789abcdef"]
        let result = try await pipehook(["status", id, "--json", "--config", config], directory: dir, environment: environment)
        guard result.code == 0 else { return nil }
        return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    }

    @Test func trackedAndStuckGenerationsEndCompletedAndTheirRouteRunsOnce() async throws {
        let dir = TempDir()
        let fake = FakePipevideoAPI(key: Self.key)
        await fake.script("gen_tracked", [.status("queued"), .status("in_progress"), .status("completed", url: "https://cdn.example/t.mp4")])
        await fake.script("gen_stuck", [.status("completed", url: "https://cdn.example/s.mp4")])
        try await fake.run { base in
            let runs = dir.path + "/runs.log"
            let configPath = dir.path + "/pipehook.yaml"
            try (Fixture.yaml(dir: dir.path + "/data").replacingOccurrences(of: "log_level: warning", with: "log_level: debug") + """
                admin_token: "${ADMIN_TOKEN}"
                api:
                  base_url: "\(base)"
                  key: "${PIPEVIDEO_API_KEY}"
                  requests_per_minute: 600
                  poll_after: 1s
                routes:
                  - name: publish
                    on: [completed]
                    steps:
                      - exec: {command: ["/bin/sh", "-c", "echo \\"$PIPEHOOK_GENERATION_ID $PIPEHOOK_EVENT_ID\\" >> \(runs)"]}
                """).write(toFile: configPath, atomically: true, encoding: .utf8)
            let environment = ["PIPEVIDEO_API_KEY": Self.key, "ADMIN_TOKEN": "admin-token-0123456789abcdef"]
            #expect(try await pipehook(["check-config", "--config", configPath], directory: dir.path, environment: environment).code == 0)
            let server = try RunningPipehook(["serve", "--config", configPath], directory: dir.path, environment: environment)
            let port = try await server.waitForPort()

            // Tracked from the CLI while the daemon runs; the webhook never comes.
            let tracked = try await pipehook(["track", "gen_tracked", "--config", configPath], directory: dir.path, environment: environment)
            #expect(tracked.code == 0, "\(tracked)")
            #expect(tracked.stdout.contains("tracked gen_tracked"))
            // Seen once by webhook as in progress, then the completion webhook is lost.
            let sent = try await pipehook(
                ["send", "--url", "http://127.0.0.1:\(port)/webhooks/pipevideo", "--secret", Fixture.secret,
                 "--generation-id", "gen_stuck", "--status", "in_progress"], directory: dir.path)
            #expect(sent.code == 0)

            for id in ["gen_tracked", "gen_stuck"] {
                try await waitFor("\(id) to complete and its route to run") {
                    let document = try await statusJSON(id, config: configPath, dir: dir.path)
                    let jobs = document?["jobs"] as? [[String: Any]] ?? []
                    return document?["status"] as? String == "completed" && jobs.first?["state"] as? String == "succeeded"
                }
            }
            // Two more poll intervals: nothing is polled or run again.
            let asked = await fake.requests.count
            try await Task.sleep(for: .milliseconds(2_500))
            #expect(await fake.requests.count == asked)
            let lines = try String(contentsOfFile: runs, encoding: .utf8).split(separator: "\n")
            #expect(lines.sorted() == ["gen_stuck poll:gen_stuck:completed", "gen_tracked poll:gen_tracked:completed"])

            let tracedDocument = try #require(try await statusJSON("gen_tracked", config: configPath, dir: dir.path))
            let timeline = tracedDocument["timeline"] as? [[String: Any]] ?? []
            #expect(timeline.map { $0["origin"] as? String } == ["poll", "poll", "poll"])
            #expect(timeline.map { $0["status"] as? String } == ["queued", "in_progress", "completed"])
            #expect((tracedDocument["polling"] as? [String: Any])?["state"] as? String == "finished")
            let stuck = try #require(try await statusJSON("gen_stuck", config: configPath, dir: dir.path))
            #expect((stuck["timeline"] as? [[String: Any]] ?? []).map { $0["origin"] as? String } == ["webhook", "poll"])

            // The API over HTTP, and the metrics.
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/generations/gen_tracked")
            request.headers.add(name: "Authorization", value: "Bearer admin-token-0123456789abcdef")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            #expect(response.status == .ok)
            let metrics = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics"), timeout: .seconds(10))
            let text = String(buffer: try await metrics.body.collect(upTo: 1 << 20))
            #expect(text.contains(#"pipehook_api_requests_total{result="ok"}"#))
            // The polled transitions count like webhook ones: queued→in_progress→completed for the tracked id.
            #expect(text.contains(#"pipehook_transitions_total{from="in_progress",to="completed"} 2"#), "\(text)")

            server.kill(SIGTERM)
            #expect(server.process.terminationStatus == 0)
            #expect(!(server.stdout + server.stderr).contains(Self.key), "the API key never reaches the log")
            #expect(await fake.requests.allSatisfy { $0.authorization == "Bearer \(Self.key)" })
        }
    }

    @Test func trackNeedsTheAPIAndTheAPINeedsAPipevideoSource() async throws {
        let dir = TempDir()
        let configPath = dir.path + "/pipehook.yaml"
        try Fixture.yaml(dir: dir.path + "/data").write(toFile: configPath, atomically: true, encoding: .utf8)
        let result = try await pipehook(["track", "gen_1", "--config", configPath], directory: dir.path)
        #expect(result.code == 1)
        #expect(result.stderr.contains("track needs the `api` section"))

        let noPipevideo = """
            store: "sqlite:\(dir.path)/x.sqlite"
            sources:
              other:
                format: nonexistent
                secrets: ["\(Fixture.secret)"]
            api:
              requests_per_minute: 0
              poll_after: soon
            """
        try noPipevideo.write(toFile: configPath, atomically: true, encoding: .utf8)
        let check = try await pipehook(["check-config", "--config", configPath], directory: dir.path)
        #expect(check.code == 1)
        for path in ["sources.other.format", "api.key", "api.requests_per_minute", "api.poll_after"] {
            #expect(check.stdout.contains(path), "\(path) in \(check.stdout)")
        }
    }
}
