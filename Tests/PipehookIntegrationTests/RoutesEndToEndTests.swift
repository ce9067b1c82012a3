import Foundation
import Testing

/// Routes through the built binary: real exec steps, SIGKILL mid-step, restart.
@Suite(.serialized) struct RoutesEndToEndTests {
    func waitFor(_ what: String, timeout: Double = 30, _ condition: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline { throw ProcessFailure(message: "timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// No such process, or only a zombie waiting for init to reap it.
    static func isGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].split(separator: " ").first == "Z"
    }

    func lines(_ path: String) -> [Substring] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
    }

    @Test func execRouteRunsOnceAndAnInterruptedStepRunsAgainAfterKill() async throws {
        let dir = TempDir()
        let out = dir.path + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let script = dir.path + "/handler.sh"
        try """
            #!/bin/sh
            cat > "$OUT_DIR/$PIPEHOOK_GENERATION_ID.json"
            env > "$OUT_DIR/$PIPEHOOK_GENERATION_ID.env"
            echo "attempt $PIPEHOOK_ATTEMPT job $PIPEHOOK_JOB_ID" >> "$OUT_DIR/runs-$PIPEHOOK_GENERATION_ID"
            echo $$ >> "$OUT_DIR/pids-$PIPEHOOK_GENERATION_ID"
            if [ "$PIPEHOOK_GENERATION_ID" = gen_slow ] && [ ! -f "$OUT_DIR/slept" ]; then touch "$OUT_DIR/slept"; sleep 30; fi
            if [ "$PIPEHOOK_GENERATION_ID" = gen_graceful ]; then sleep 1; fi
            echo done >> "$OUT_DIR/finished-$PIPEHOOK_GENERATION_ID"
            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let configPath = dir.path + "/pipehook.yaml"
        try (Fixture.yaml(dir: dir.path + "/data").replacingOccurrences(of: "log_level: warning", with: "log_level: info")
            .replacingOccurrences(of: "secrets: [\"\(Fixture.secret)\"]", with: "secrets: [\"${HOOK_SECRET}\"]") + """
            routes:
              - name: publish
                on: [completed]
                steps:
                  - exec: {command: ["\(script)"], timeout: 60s, env: {OUT_DIR: "\(out)"}}
            """).write(toFile: configPath, atomically: true, encoding: .utf8)
        let environment = ["HOOK_SECRET": Fixture.secret]

        var server = try RunningPipehook(["serve", "--config", configPath], directory: dir.path, environment: environment)
        var port = try await server.waitForPort()
        func send(_ generation: String, _ status: String) async throws {
            let result = try await pipehook(
                ["send", "--url", "http://127.0.0.1:\(port)/webhooks/pipevideo", "--secret", Fixture.secret,
                 "--generation-id", generation, "--status", status],
                directory: dir.path
            )
            #expect(result.code == 0, "\(result)")
        }
        try await send("gen_fast", "in_progress")
        try await send("gen_fast", "completed")
        try await send("gen_fast", "completed")  // a new delivery with the same status: no second job
        try await waitFor("gen_fast to finish") { !lines(out + "/finished-gen_fast").isEmpty }

        let document = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/gen_fast.json"))) as? [String: Any]
        #expect(document?["generation_id"] as? String == "gen_fast")
        #expect(document?["status"] as? String == "completed")
        #expect(document?["previous_status"] as? String == "in_progress")
        #expect((document?["raw"] as? [String: Any])?["generationId"] as? String == "gen_fast")
        let env = try String(contentsOfFile: out + "/gen_fast.env", encoding: .utf8)
        #expect(env.contains("PIPEHOOK_STATUS=completed") && env.contains("PIPEHOOK_ATTEMPT=1") && env.contains("OUT_DIR="))
        #expect(!env.contains("HOOK_SECRET") && !env.contains(Fixture.secret.dropFirst(6)), "the daemon's secret leaked into the step")

        // Kill the daemon while a step runs; after restart that step runs again, nothing else does.
        try await send("gen_slow", "completed")
        try await waitFor("gen_slow to start") { FileManager.default.fileExists(atPath: out + "/slept") }
        server.kill(SIGKILL)
        server = try RunningPipehook(["serve", "--config", configPath], directory: dir.path, environment: environment)
        port = try await server.waitForPort()
        try await waitFor("gen_slow to finish after restart") { !lines(out + "/finished-gen_slow").isEmpty }
        #expect(lines(out + "/runs-gen_slow").count == 2)
        #expect(lines(out + "/runs-gen_fast").count == 1)
        #expect(lines(out + "/finished-gen_fast").count == 1)
        #expect(Set(lines(out + "/runs-gen_slow").map { $0.split(separator: " ").last! }).count == 1, "one job id across attempts")
        // The first run's process (its own session, orphaned by the SIGKILL) was ended at the restart,
        // so it cannot run on beside its re-run.
        let firstRun = try #require(lines(out + "/pids-gen_slow").first.flatMap { Int32($0) })
        try await waitFor("the orphaned first run to be ended", timeout: 10) { Self.isGone(firstRun) }
        #expect(server.stdout.contains("killed step processes left running by the last stop"))

        let status = try await pipehook(["status", "gen_slow", "--json", "--config", configPath], directory: dir.path, environment: environment)
        let json = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        let jobs = json?["jobs"] as? [[String: Any]] ?? []
        #expect(jobs.count == 1 && jobs.first?["state"] as? String == "succeeded")
        let attempts = jobs.first?["attempts"] as? [[String: Any]] ?? []
        #expect(attempts.map { $0["outcome"] as? String } == ["interrupted", "succeeded"])
        let listed = try await pipehook(["jobs", "--state", "succeeded", "--json", "--config", configPath], directory: dir.path, environment: environment)
        #expect((try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [Any])?.count == 2)

        // Killed with jobs still pending: after restart each runs to the end, once.
        let batch = (0..<6).map { "gen_batch\($0)" }
        for generation in batch { try await send(generation, "completed") }
        server.kill(SIGKILL)
        server = try RunningPipehook(["serve", "--config", configPath], directory: dir.path, environment: environment)
        port = try await server.waitForPort()
        try await waitFor("the pending batch to finish") { batch.allSatisfy { !lines(out + "/finished-\($0)").isEmpty } }
        for generation in batch {
            // At most one extra run, and only of a step that the kill interrupted.
            #expect(lines(out + "/finished-\(generation)").count == 1)
            #expect((1...2).contains(lines(out + "/runs-\(generation)").count))
        }

        // SIGTERM while a step runs: the step finishes within the grace period, then a clean exit.
        try await send("gen_graceful", "completed")
        try await waitFor("gen_graceful to start") { !lines(out + "/runs-gen_graceful").isEmpty }
        server.kill(SIGTERM)
        #expect(server.process.terminationStatus == 0, "\(server.stderr)")
        #expect(lines(out + "/finished-gen_graceful").count == 1)
    }
}
