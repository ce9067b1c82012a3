import Foundation
import Testing

/// Two `pipehook serve` processes on different ports sharing one PostgreSQL schema: the same
/// delivery sent to both is accepted once, one transition applies, and the route runs once.
@Suite(.serialized, .enabled(if: PostgresTestDatabase.url != nil, PostgresTestDatabase.note))
struct PostgresEndToEndTests {
    func lines(_ path: String) -> [Substring] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
    }

    @Test func twoInstancesShareOneStore() async throws {
        try await TestSchema.with { schema in
            let dir = TempDir()
            let out = dir.path + "/out"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let script = dir.path + "/handler.sh"
            try """
                #!/bin/sh
                echo "job $PIPEHOOK_JOB_ID attempt $PIPEHOOK_ATTEMPT" >> "$OUT_DIR/runs-$PIPEHOOK_GENERATION_ID"
                """.write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            let url = schema.url(poolMax: 4)
            var configs: [String] = []
            for name in ["a", "b"] {
                let path = dir.path + "/pipehook-\(name).yaml"
                try (Fixture.yaml(dir: dir.path + "/data-\(name)")
                    .replacingOccurrences(of: "log_level: warning", with: "log_level: info")
                    .replacingOccurrences(of: "store: \"sqlite:\(dir.path)/data-\(name)/pipehook.sqlite\"", with: "store: \"${PIPEHOOK_STORE}\"") + """
                    routes:
                      - name: publish
                        on: [completed]
                        steps:
                          - exec: {command: ["\(script)"], timeout: 30s, env: {OUT_DIR: "\(out)"}}
                    """).write(toFile: path, atomically: true, encoding: .utf8)
                configs.append(path)
            }
            let environment = ["PIPEHOOK_STORE": url]
            // Started together: both migrate the empty schema at once.
            let a = try RunningPipehook(["serve", "--config", configs[0]], directory: dir.path, environment: environment)
            let b = try RunningPipehook(["serve", "--config", configs[1]], directory: dir.path, environment: environment)
            let portA = try await a.waitForPort(), portB = try await b.waitForPort()
            #expect(portA != portB)

            func send(_ port: Int, _ status: String, id: String? = nil) async throws -> String {
                var arguments = [
                    "send", "--url", "http://127.0.0.1:\(port)/webhooks/pipevideo", "--secret", Fixture.secret,
                    "--generation-id", "gen_pg", "--status", status,
                ]
                if let id { arguments += ["--id", id] }
                let result = try await pipehook(arguments, directory: dir.path)
                #expect(result.code == 0, "\(result)")
                return result.stdout
            }
            #expect(try await send(portA, "in_progress").contains(#""transition":"applied""#))
            // One delivery reaching both instances (a sender retrying against another node).
            async let first = send(portA, "completed", id: "msg_both")
            async let second = send(portB, "completed", id: "msg_both")
            let answers = try await [first, second]
            #expect(answers.filter { $0.contains(#""result":"accepted""#) && $0.contains(#""transition":"applied""#) }.count == 1, "\(answers)")
            #expect(answers.filter { $0.contains(#""result":"duplicate""#) }.count == 1, "\(answers)")
            // A new delivery with the same status, on the other instance: recorded, no new job.
            #expect(try await send(portB, "completed", id: "msg_again").contains(#""transition":"same""#))

            let deadline = Date().addingTimeInterval(30)
            while lines(out + "/runs-gen_pg").isEmpty, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
            try await Task.sleep(for: .seconds(1))  // time for a second run, if there were one
            #expect(lines(out + "/runs-gen_pg").count == 1, "the route ran \(lines(out + "/runs-gen_pg").count) times")

            let status = try await pipehook(["status", "gen_pg", "--json", "--config", configs[1]], directory: dir.path, environment: environment)
            #expect(status.code == 0, "\(status)")
            let document = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
            #expect(document?["status"] as? String == "completed")
            let timeline = document?["timeline"] as? [[String: Any]] ?? []
            #expect(timeline.map { $0["transition"] as? String } == ["applied", "applied", "same"])
            #expect(timeline.filter { $0["status"] as? String == "completed" && $0["transition"] as? String == "applied" }.count == 1)
            let jobs = document?["jobs"] as? [[String: Any]] ?? []
            #expect(jobs.count == 1 && jobs.first?["state"] as? String == "succeeded", "\(jobs)")
            #expect((jobs.first?["attempts"] as? [[String: Any]])?.map { $0["outcome"] as? String } == ["succeeded"])
            let listed = try await pipehook(["jobs", "--json", "--config", configs[0]], directory: dir.path, environment: environment)
            #expect((try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [Any])?.count == 1, "\(listed)")

            a.kill(SIGTERM)
            b.kill(SIGTERM)
            #expect(a.process.terminationStatus == 0, "\(a.stderr)")
            #expect(b.process.terminationStatus == 0, "\(b.stderr)")
            for server in [a, b] {
                #expect(!server.stdout.contains(url) && !server.stderr.contains(url), "the store URL (with its password) was logged")
            }
        }
    }
}
