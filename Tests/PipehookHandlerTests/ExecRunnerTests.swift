import Foundation
import PipehookHandlers
import PipehookLifecycle
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Real processes through `sh`. Each test owns its process group, so they may run in parallel.
@Suite struct ExecRunnerTests {
    static let base = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"]
    let runner = ExecRunner(logger: Fixtures.logger, baseEnvironment: base)

    func text(_ outcome: StepOutcome) -> String { String(decoding: outcome.output, as: UTF8.self) }

    /// True while any process of `pid`'s group (or `pid` itself) still exists, polled for up to `within`.
    func stillAlive(_ pid: pid_t, group: Bool, within: Duration = .seconds(3)) async -> Bool {
        let clock = ContinuousClock()
        let end = clock.now + within
        while clock.now < end {
            if kill(group ? -pid : pid, 0) != 0 && errno == ESRCH { return false }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return true
    }

    @Test func exitZeroGetsTheDocumentOnStdinAndTheEnvironment() async throws {
        let document = Fixtures.document(outputURL: "https://cdn.example/v.mp4", raw: Array(#"{"k":"v"}"#.utf8))
        let step = Fixtures.exec(
            ["sh", "-c", #"cat; printf '\n--ENV--\n'; env"#], environment: ["CUSTOM_FLAG": "yes"]
        )
        let outcome = await runner.run(step, context: Fixtures.context(document, attempt: 3))
        #expect(outcome.result == .succeeded)
        #expect(outcome.summary == "exit 0")
        #expect(outcome.exitCode == 0)
        let parts = text(outcome).components(separatedBy: "\n--ENV--\n")
        try #require(parts.count == 2)
        #expect(parts[0] == String(decoding: document.json(), as: UTF8.self))
        let env = Set(parts[1].split(separator: "\n").map(String.init))
        for line in [
            "PIPEHOOK_EVENT_ID=evt_1", "PIPEHOOK_SOURCE=pipevideo", "PIPEHOOK_GENERATION_ID=gen_123",
            "PIPEHOOK_STATUS=completed", "PIPEHOOK_OUTPUT_URL=https://cdn.example/v.mp4", "PIPEHOOK_ERROR_MESSAGE=",
            "PIPEHOOK_FILE=", "PIPEHOOK_JOB_ID=job_42", "PIPEHOOK_ATTEMPT=3", "CUSTOM_FLAG=yes",
            "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8",
        ] {
            #expect(env.contains(line), "missing \(line)")
        }
    }

    @Test func environmentIsAWhitelistAndNeverInherited() async throws {
        // A secret in the daemon's own process environment and one in the base environment.
        setenv("PIPEHOOK_LEAK_CANARY", "canary-value", 1)
        let base = Self.base.merging(["PIPEHOOK_SECRET": "whsec_topsecret", "AWS_SECRET_ACCESS_KEY": "aws-secret"]) { a, _ in a }
        for runner in [ExecRunner(logger: Fixtures.logger, baseEnvironment: base), ExecRunner(logger: Fixtures.logger)] {
            let outcome = await runner.run(Fixtures.exec(["env"]), context: Fixtures.context(Fixtures.document()))
            #expect(outcome.result == .succeeded)
            let output = text(outcome)
            #expect(!output.contains("topsecret"))
            #expect(!output.contains("aws-secret"))
            #expect(!output.contains("canary-value"))
            #expect(output.contains("PATH="))
            let names = Set(output.split(separator: "\n").compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
            let allowed: Set<String> = [
                "PATH", "HOME", "LANG", "PIPEHOOK_EVENT_ID", "PIPEHOOK_SOURCE", "PIPEHOOK_GENERATION_ID", "PIPEHOOK_STATUS",
                "PIPEHOOK_OUTPUT_URL", "PIPEHOOK_ERROR_MESSAGE", "PIPEHOOK_FILE", "PIPEHOOK_JOB_ID", "PIPEHOOK_ATTEMPT",
            ]
            #expect(names.isSubset(of: allowed), "unexpected variables: \(names.subtracting(allowed))")
        }
    }

    @Test func nonZeroExitIsRetryable() async {
        let outcome = await runner.run(Fixtures.exec(["sh", "-c", "echo failing >&2; exit 1"]), context: Fixtures.context(Fixtures.document()))
        #expect(outcome.result == .retryable(retryAfter: nil))
        #expect(outcome.summary == "exit 1")
        #expect(outcome.exitCode == 1)
        #expect(text(outcome) == "failing\n")
    }

    @Test func permanentExitCodeDeadLetters() async {
        let step = Fixtures.exec(["sh", "-c", "exit 3"], permanentExitCodes: [3, 4])
        let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document()))
        #expect(outcome.result == .permanent)
        #expect(outcome.summary == "exit 3 (permanent)")
        #expect(outcome.exitCode == 3)
    }

    @Test func deathBySignalIsRetryable() async {
        let outcome = await runner.run(Fixtures.exec(["sh", "-c", "kill -9 $$"]), context: Fixtures.context(Fixtures.document()))
        #expect(outcome.result == .retryable(retryAfter: nil))
        #expect(outcome.summary == "killed by signal 9")
    }

    @Test func stdoutAndStderrAreMerged() async {
        let outcome = await runner.run(
            Fixtures.exec(["sh", "-c", "echo one; echo two >&2; echo three"]), context: Fixtures.context(Fixtures.document())
        )
        #expect(outcome.result == .succeeded)
        #expect(text(outcome) == "one\ntwo\nthree\n")
    }

    @Test func timeoutKillsTheWholeProcessGroup() async throws {
        // sh prints its own pid (= the process group id) and the background grandchild's pid.
        let step = Fixtures.exec(["sh", "-c", "sleep 100 & echo $$ $!; sleep 100"], timeoutMilliseconds: 500)
        let clock = ContinuousClock()
        let start = clock.now
        let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document()))
        let elapsed = clock.now - start
        #expect(outcome.result == .retryable(retryAfter: nil))
        #expect(outcome.summary == "timed out after 500ms")
        #expect(elapsed >= .milliseconds(500))
        // Bounds catch a hang on the 100 s children, with room for a loaded CI machine.
        #expect(elapsed < .seconds(20), "took \(elapsed)")
        let pids = text(outcome).split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { pid_t($0) }
        try #require(pids.count == 2)
        #expect(await !stillAlive(pids[1], group: false), "grandchild \(pids[1]) survived")
        #expect(await !stillAlive(pids[0], group: true), "process group \(pids[0]) survived")
    }

    @Test func sigtermIgnoredEndsInSigkill() async throws {
        var runner = self.runner
        runner.killGrace = .milliseconds(700)
        let step = Fixtures.exec(["sh", "-c", "trap '' TERM; echo $$; sleep 100; sleep 100"], timeoutMilliseconds: 300)
        let clock = ContinuousClock()
        let start = clock.now
        let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document()))
        let elapsed = clock.now - start
        #expect(outcome.result == .retryable(retryAfter: nil))
        #expect(outcome.summary == "timed out after 300ms")
        #expect(elapsed >= .milliseconds(1000), "SIGTERM should have been ignored; took \(elapsed)")
        #expect(elapsed < .seconds(20), "took \(elapsed)")
        let pgid = try #require(pid_t(text(outcome).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await !stillAlive(pgid, group: true))
    }

    @Test func grandchildHoldingThePipesDoesNotHangANormalExit() async throws {
        let step = Fixtures.exec(["sh", "-c", "sleep 100 & echo $!"], timeoutMilliseconds: 30_000)
        let clock = ContinuousClock()
        let start = clock.now
        let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document()))
        #expect(clock.now - start < .seconds(20))  // far below the step's 30 s timeout
        #expect(outcome.result == .succeeded)
        let grandchild = try #require(pid_t(text(outcome).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await !stillAlive(grandchild, group: false), "leftover \(grandchild) survived the step")
    }

    @Test func largeStdinIsWrittenWithoutDeadlock() async throws {
        let raw = [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20)  // 1 MiB, embedded as a JSON string
        let document = Fixtures.document(raw: raw)
        let size = document.json().count
        #expect(size > 1 << 20)

        let reader = await runner.run(Fixtures.exec(["wc", "-c"]), context: Fixtures.context(document))
        #expect(reader.result == .succeeded)
        #expect(text(reader).trimmingCharacters(in: .whitespacesAndNewlines) == String(size))

        let ignorer = await runner.run(Fixtures.exec(["true"]), context: Fixtures.context(document))
        #expect(ignorer.result == .succeeded)

        let slowIgnorer = await runner.run(
            Fixtures.exec(["sh", "-c", "sleep 0.3; echo done"]), context: Fixtures.context(document)
        )
        #expect(slowIgnorer.result == .succeeded)
        #expect(text(slowIgnorer) == "done\n")
    }

    @Test func outputIsCappedAt64KiB() async {
        let step = Fixtures.exec(["sh", "-c", "head -c 300000 /dev/zero; head -c 5000 /dev/zero >&2; echo tail"])
        let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document()))
        #expect(outcome.result == .succeeded)
        #expect(outcome.output.count == 64 * 1024)
        #expect(outcome.output.count == StepOutcome.outputLimit)
        #expect(outcome.output.allSatisfy { $0 == 0 })
    }

    @Test func missingCommandIsPermanent() async throws {
        let byName = await runner.run(Fixtures.exec(["pipehook-no-such-command-xyz", "a"]), context: Fixtures.context(Fixtures.document()))
        #expect(byName.result == .permanent)
        #expect(byName.summary == "command not found: pipehook-no-such-command-xyz")

        let byPath = await runner.run(Fixtures.exec(["/nonexistent/dir/tool"]), context: Fixtures.context(Fixtures.document()))
        #expect(byPath.result == .permanent)
        #expect(byPath.summary.contains("/nonexistent/dir/tool"))

        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let script = directory + "/not-executable.sh"
        try "#!/bin/sh\nexit 0\n".write(toFile: script, atomically: true, encoding: .utf8)
        let notExecutable = await runner.run(Fixtures.exec([script]), context: Fixtures.context(Fixtures.document()))
        #expect(notExecutable.result == .permanent)
        #expect(notExecutable.summary.contains(script))

        let empty = await runner.run(Fixtures.exec([""]), context: Fixtures.context(Fixtures.document()))
        #expect(empty.result == .permanent)
    }

    /// The logged program name came from `NSString.lastPathComponent`, which traps on a doubled
    /// slash before a non-ASCII character: such a command ended the daemon at every attempt.
    @Test func aCommandPathWithADoubledSlashBeforeUnicodeDoesNotCrash() async {
        let outcome = await runner.run(Fixtures.exec(["/nonexistent//é"]), context: Fixtures.context(Fixtures.document()))
        #expect(outcome.result == .permanent)
        #expect(outcome.summary.hasPrefix("command not found"), "\(outcome.summary)")
    }

    @Test func hostileEnvironmentValuesDoNotBreakTheSpawn() async {
        // NUL cannot travel in a C environment: it is dropped, the run still happens.
        let document = Fixtures.document(errorMessage: "bad\u{0}news")
        let outcome = await runner.run(
            Fixtures.exec(
                ["sh", "-c", #"printf '%s' "$PIPEHOOK_ERROR_MESSAGE""#], environment: ["1BAD": "x", "A=B": "y", "GOOD": "ok"]
            ),
            context: Fixtures.context(document)
        )
        #expect(outcome.result == .succeeded)
        #expect(text(outcome) == "badnews")
    }

    /// Issue 10 item 3: a value over 128 KiB in the environment made every exec step of the route
    /// dead-letter with E2BIG ("Argument list too long"). The step runs; its environment value is cut
    /// with a marker; the whole value is on stdin.
    @Test func aHugeErrorMessageIsCutInTheEnvironmentAndWholeOnStdin() async throws {
        let message = String(repeating: "x", count: 200 * 1024)
        let document = Fixtures.document(outputURL: "https://cdn.example/" + String(repeating: "u", count: 150 * 1024), errorMessage: message)
        let step = Fixtures.exec(["sh", "-c", #"printf '%s\n' "${#PIPEHOOK_ERROR_MESSAGE}"; printf '%s' "$PIPEHOOK_ERROR_MESSAGE" | tail -c 200; printf '\n%s\n' "${#PIPEHOOK_OUTPUT_URL}"; wc -c"#])
        let outcome = await runner.run(step, context: Fixtures.context(document))
        #expect(outcome.result == .succeeded, "\(outcome.summary): \(text(outcome))")
        let lines = text(outcome).components(separatedBy: "\n")
        try #require(lines.count >= 4, "\(text(outcome))")
        // sh counts characters in C.UTF-8: the marker's "…" is one.
        let limit = ExecRunner.environmentValueLimit
        let markerBytes = ExecRunner.truncatedMarker.utf8.count
        let markerCharacters = ExecRunner.truncatedMarker.count
        #expect(lines[0] == String(limit - markerBytes + markerCharacters) || lines[0] == String(limit), "\(lines[0])")
        #expect(lines[1].hasSuffix(ExecRunner.truncatedMarker), "\(lines[1])")
        #expect(lines[2] == lines[0])
        let stdinBytes = try #require(Int(lines[3].trimmingCharacters(in: .whitespaces)))
        #expect(stdinBytes == Fixtures.context(document).document.json().count)
        #expect(stdinBytes > 350 * 1024)
    }

    @Test func environmentValuesAreCappedAtACharacterBoundary() {
        let document = Fixtures.document(errorMessage: String(repeating: "é", count: 20_000))
        let environment = runner.environment(
            for: Fixtures.exec(["true"], environment: ["BIG": String(repeating: "y", count: 20_000), "SMALL": "s"]),
            context: Fixtures.context(document)
        )
        let cut = environment["PIPEHOOK_ERROR_MESSAGE"]!
        #expect(cut.utf8.count <= ExecRunner.environmentValueLimit)
        #expect(cut.hasSuffix(ExecRunner.truncatedMarker))
        #expect(cut.dropLast(ExecRunner.truncatedMarker.count).allSatisfy { $0 == "é" })
        #expect(environment["BIG"]!.hasSuffix(ExecRunner.truncatedConfigMarker))
        #expect(environment["BIG"]!.utf8.count <= ExecRunner.environmentValueLimit)
        #expect(environment["SMALL"] == "s")
        #expect(environment["PIPEHOOK_GENERATION_ID"] == "gen_123")
    }

    @Test func cancellingTheCallerTearsDownTheGroup() async throws {
        var runner = self.runner
        runner.killGrace = .milliseconds(500)
        let step = Fixtures.exec(["sh", "-c", "echo $$; sleep 100 & sleep 100"], timeoutMilliseconds: 60_000)
        let clock = ContinuousClock()
        let start = clock.now
        let task = Task { await runner.run(step, context: Fixtures.context(Fixtures.document())) }
        try await Task.sleep(for: .milliseconds(300))
        task.cancel()
        let outcome = await task.value
        #expect(clock.now - start < .seconds(20))  // far below the step's 60 s timeout
        #expect(outcome.result == .retryable(retryAfter: nil))
        #expect(outcome.summary == "cancelled")
        let pgid = try #require(pid_t(text(outcome).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await !stillAlive(pgid, group: true))
    }
}

/// The ledger of running step groups that lets a restart end what a SIGKILLed daemon left.
@Suite struct StepProcessLedgerTests {
    @Test func aRunningStepIsListedAndUnlistedWhenItEnds() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = StepProcessLedger(directory: directory + "/steps")
        let runner = ExecRunner(logger: Fixtures.logger, baseEnvironment: ExecRunnerTests.base, ledger: ledger)
        let marker = directory + "/started"
        let step = Fixtures.exec(["/bin/sh", "-c", "touch \(marker); sleep 3"])
        async let outcome = runner.run(step, context: Fixtures.context(Fixtures.document()))
        // Read as a restarted daemon would: from the journal on disk, by another ledger object.
        // The entry is written right after the spawn returns, which may be after the child has run.
        func listed() -> [pid_t: UInt64] { StepProcessLedger(directory: directory + "/steps").listed() }
        let deadline = Date().addingTimeInterval(20)
        while listed().isEmpty || !FileManager.default.fileExists(atPath: marker), Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(listed().count == 1)
        #expect(await outcome.result == .succeeded)
        #expect(listed().isEmpty)
    }

    /// The journal stays small: past its limit it is rewritten with only the live entries, and a
    /// step still running across the rewrite stays listed.
    @Test func theJournalIsCompactedWithoutLosingARunningStep() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = StepProcessLedger(directory: directory, compactAfterBytes: 256)
        let runner = ExecRunner(logger: Fixtures.logger, baseEnvironment: ExecRunnerTests.base, ledger: ledger)
        let marker = directory + "/long-started", release = directory + "/release"
        // Runs until the test releases it, however slowly the short steps go.
        let script = "touch \(marker); while [ ! -e \(release) ]; do sleep 0.05; done"
        async let long = runner.run(Fixtures.exec(["/bin/sh", "-c", script]), context: Fixtures.context(Fixtures.document()))
        while !FileManager.default.fileExists(atPath: marker) || ledger.listed().isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        for _ in 0..<60 {
            #expect(await runner.run(Fixtures.exec(["/bin/true"]), context: Fixtures.context(Fixtures.document())).result == .succeeded)
        }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: ledger.journalPath)[.size] as? Int)
        #expect(size <= 256 + 64, "the journal was not compacted: \(size) bytes")
        #expect(ledger.listed().count == 1, "the running step is still listed after compaction")
        _ = FileManager.default.createFile(atPath: release, contents: nil)
        #expect(await long.result == .succeeded)
        #expect(ledger.listed().isEmpty)
    }

    @Test func leftoversAreKilledOnlyWhenTheRecordedProcessIsStillTheSame() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = StepProcessLedger(directory: directory)
        // This test process under a wrong start time: its pid was "reused", so it is left alone.
        try "1\n".write(toFile: "\(directory)/\(getpid())", atomically: true, encoding: .utf8)
        // A pid that no process has: nothing to kill (and no group can hold that id).
        try "123\n".write(toFile: "\(directory)/4194300", atomically: true, encoding: .utf8)
        try "garbage".write(toFile: "\(directory)/not-a-pid", atomically: true, encoding: .utf8)
        // The journal's entries are read the same way, a line whose group ended cancelling it.
        try "+\(getpid()) 1\n+4194301 5\n-4194301\nnot a line\n".write(toFile: "\(directory)/running", atomically: true, encoding: .utf8)
        #expect(ledger.listed().keys.sorted() == [getpid(), 4194300].sorted())
        #expect(ledger.killLeftovers() == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "every entry is consumed")
        #expect(ledger.killLeftovers() == [])
    }
}
