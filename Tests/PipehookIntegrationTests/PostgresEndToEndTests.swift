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

    /// SPEC §3.5 with clocks that differ by minutes (Debian's `faketime`): the lease is the
    /// server's, so an instance 90 s ahead never takes a job another instance holds (before, it
    /// started the step again 1.2 s later), nor does an instance take the job of one that is 90 s
    /// ahead of it (that is, behind it: the case of a holder whose clock is late); a step three
    /// times longer than its lease runs once.
    ///
    /// Only the wall clock is skewed (`FAKETIME_DONT_FAKE_MONOTONIC`), as between two hosts. Faking
    /// the monotonic clock, or any negative offset, stalls Swift's `Task.sleep` under libfaketime
    /// here, which would make the skewed instance idle and the test pass for nothing; so "behind"
    /// is tested as its mirror, and each skewed instance is shown to run a job itself.
    @Test(arguments: [("holder", "+90s"), ("+90s", "other")])
    func instancesWhoseClocksDifferNeverRunOneStepTwice(holderClock: String, otherClock: String) async throws {
        let faketime = "/usr/bin/faketime"
        try #require(FileManager.default.isExecutableFile(atPath: faketime), "faketime is not installed (.ci/run installs it)")
        try await TestSchema.with { schema in
            let dir = TempDir()
            let runs = dir.path + "/runs"
            let script = dir.path + "/handler.sh"
            try """
                #!/bin/sh
                echo "start $INSTANCE $PIPEHOOK_ATTEMPT" >> "\(runs)"
                sleep 7
                echo "end $INSTANCE" >> "\(runs)"
                """.write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
            var configs: [String: String] = [:]
            for name in ["holder", "other"] {
                let path = dir.path + "/pipehook-\(name).yaml"
                try (Fixture.yaml(dir: dir.path + "/data-\(name)")
                    .replacingOccurrences(of: "log_level: warning", with: "log_level: info")
                    .replacingOccurrences(of: "store: \"sqlite:\(dir.path)/data-\(name)/pipehook.sqlite\"", with: "store: \"${PIPEHOOK_STORE}\"") + """
                    lease: 2s
                    routes:
                      - name: publish
                        on: [completed]
                        steps:
                          - exec: {command: ["\(script)"], timeout: 60s, env: {INSTANCE: "\(name)"}}
                    """).write(toFile: path, atomically: true, encoding: .utf8)
                configs[name] = path
            }
            let environment = ["PIPEHOOK_STORE": schema.url(poolMax: 4)]
            func start(_ name: String, clock: String) throws -> RunningPipehook {
                let skew = clock.hasPrefix("+") || clock.hasPrefix("-") ? clock : nil
                return try RunningPipehook(
                    ["serve", "--config", configs[name]!], directory: dir.path,
                    environment: environment.merging(skew == nil ? [:] : ["FAKETIME_DONT_FAKE_MONOTONIC": "1"]) { a, _ in a },
                    wrapper: skew.map { [faketime, "-f", $0] } ?? []
                )
            }
            let holder = try start("holder", clock: holderClock)
            let holderPort = try await holder.waitForPort()
            let sent = try await pipehook([
                "send", "--url", "http://127.0.0.1:\(holderPort)/webhooks/pipevideo", "--secret", Fixture.secret,
                "--generation-id", "gen_skew", "--status", "completed",
            ], directory: dir.path)
            #expect(sent.code == 0, "\(sent)")
            var deadline = Date().addingTimeInterval(30)
            while lines(runs).isEmpty, Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(lines(runs) == ["start holder 1"])

            // The other instance joins while the holder's step runs (and its lease is renewed).
            let other = try start("other", clock: otherClock)
            let otherPort = try await other.waitForPort()
            deadline = Date().addingTimeInterval(40)
            while !lines(runs).contains("end holder"), Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
            try await Task.sleep(for: .seconds(3))  // time for a second run, if there were one
            #expect(lines(runs) == ["start holder 1", "end holder"], "\(lines(runs))")

            // The skew was real: the skewed instance's log lines carry its own clock.
            let skewed = holderClock.hasPrefix("+") ? holder : other
            let sign: Double = 1
            let stamp = skewed.stdout.split(separator: "\n").first.flatMap { line -> Date? in
                guard let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let text = json["ts"] as? String else { return nil }
                let formatter = ISO8601DateFormatter()
                formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                return formatter.date(from: text)
            }
            let offset = try #require(stamp, "no timestamp in \(skewed.stdout.prefix(300))").timeIntervalSinceNow
            #expect(abs(offset - sign * 90) < 30, "the skewed instance's clock is off by \(offset) s")

            let status = try await pipehook(["status", "gen_skew", "--json", "--config", configs["other"]!], directory: dir.path, environment: environment)
            let document = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
            let jobs = document?["jobs"] as? [[String: Any]] ?? []
            #expect(jobs.count == 1 && jobs.first?["state"] as? String == "succeeded", "\(status)")
            #expect((jobs.first?["attempts"] as? [[String: Any]])?.map { $0["outcome"] as? String } == ["succeeded"])

            // The other instance works (its dispatcher claims and runs jobs): alone now, it runs a
            // new generation's step. So it left the first job alone by rule, not by being idle.
            holder.kill(SIGTERM)
            let second = try await pipehook([
                "send", "--url", "http://127.0.0.1:\(otherPort)/webhooks/pipevideo", "--secret", Fixture.secret,
                "--generation-id", "gen_skew_2", "--status", "completed",
            ], directory: dir.path)
            #expect(second.code == 0, "\(second)")
            deadline = Date().addingTimeInterval(30)
            while !lines(runs).contains("start other 1"), Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(lines(runs).contains("start other 1"), "\(lines(runs))")
            other.kill(SIGTERM)
        }
    }
}
