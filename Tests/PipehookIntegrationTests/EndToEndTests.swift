import AsyncHTTPClient
import Foundation
import GRDB
import NIOCore
import PipehookDaemon
import Testing

/// A `pipehook` process started from the built binary, its output captured to files.
final class RunningPipehook: @unchecked Sendable {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String

    /// `wrapper` runs the binary under another command (e.g. `faketime -f +90s`), which then
    /// forks it: `serverPID` finds the child to signal.
    let wrapped: Bool

    init(_ arguments: [String], directory: String, environment: [String: String] = [:], wrapper: [String] = []) throws {
        wrapped = !wrapper.isEmpty
        stdoutPath = directory + "/stdout-\(UUID().uuidString).log"
        stderrPath = directory + "/stderr-\(UUID().uuidString).log"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        if let command = wrapper.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = Array(wrapper.dropFirst()) + [Binary.path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: Binary.path)
            process.arguments = arguments
        }
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.environment = ["PATH": "/usr/bin:/bin", "HOME": directory].merging(environment) { _, new in new }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.run()
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits for the "listening" log line and returns the port it names.
    func waitForPort(timeout: Double = 30) async throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            for line in stdout.split(separator: "\n") where line.contains(#""msg":"listening""#) {
                if let data = line.data(using: .utf8),
                   let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                   let port = (json["port"] as? String).flatMap(Int.init)
                {
                    return port
                }
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ProcessFailure(message: "pipehook did not start listening; stdout: \(stdout) stderr: \(stderr)")
    }

    /// The pipehook process itself: the wrapper's child when wrapped.
    var serverPID: pid_t {
        let pid = process.processIdentifier
        guard wrapped else { return pid }
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").first.flatMap { pid_t($0) } ?? pid
    }

    func kill(_ signal: Int32) {
        Foundation.kill(serverPID, signal)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning {
            Foundation.kill(serverPID, SIGKILL)
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

struct ProcessFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Runs `pipehook ARGS` to completion.
func pipehook(_ arguments: [String], directory: String, environment: [String: String] = [:]) async throws -> (code: Int32, stdout: String, stderr: String) {
    let run = try RunningPipehook(arguments, directory: directory, environment: environment)
    while run.process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
    return (run.process.terminationStatus, run.stdout, run.stderr)
}

@Suite(.serialized) struct EndToEndTests {
    func config(_ dir: TempDir) throws -> String {
        let path = dir.path + "/pipehook.yaml"
        let yaml = Fixture.yaml(dir: dir.path + "/data").replacingOccurrences(of: "log_level: warning", with: "log_level: info")
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Issue 10 item 5: started with umask 000 and over a store file left world-writable, the
    /// daemon's folder is 0750 and its database and WAL 0640 (they hold payloads and signed URLs).
    @Test func storeFilesAreNeverWorldReadable() async throws {
        let dir = TempDir()
        let configPath = try config(dir)
        let data = dir.path + "/data"
        try FileManager.default.createDirectory(atPath: data + "/store", withIntermediateDirectories: true)
        let yaml = try String(contentsOfFile: configPath, encoding: .utf8)
        try yaml.replacingOccurrences(of: "\(data)/pipehook.sqlite", with: "\(data)/store/db/pipehook.sqlite")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let loose = data + "/old.sqlite"
        #expect(FileManager.default.createFile(atPath: loose, contents: nil, attributes: [.posixPermissions: 0o666]))
        let server = try RunningPipehook(
            ["serve", "--config", configPath], directory: dir.path, wrapper: ["/bin/sh", "-c", "umask 000; exec \"$0\" \"$@\""]
        )
        let port = try await server.waitForPort()
        let sent = try await pipehook(
            ["send", "--config", configPath, "--url", "http://127.0.0.1:\(port)/webhooks/pipevideo", "--generation-id", "gen_modes"],
            directory: dir.path
        )
        #expect(sent.code == 0, "\(sent)")
        func mode(_ path: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
        }
        #expect(try mode(data + "/store/db") == 0o750)
        for file in ["pipehook.sqlite", "pipehook.sqlite-wal", "pipehook.sqlite-shm"] {
            let bits = try mode(data + "/store/db/" + file)
            #expect(bits >= 0 && bits & 0o137 == 0, "\(file) is \(String(bits, radix: 8))")
        }
        server.kill(SIGTERM)
        // A store left loose by an older version is tightened when opened for writing.
        let reopen = try String(contentsOfFile: configPath, encoding: .utf8)
            .replacingOccurrences(of: "\(data)/store/db/pipehook.sqlite", with: loose)
        try reopen.write(toFile: configPath, atomically: true, encoding: .utf8)
        let second = try RunningPipehook(["serve", "--config", configPath], directory: dir.path)
        _ = try await second.waitForPort()
        second.kill(SIGTERM)
        #expect(try mode(loose) == 0o640)
    }

    @Test func binaryDrivenBySend() async throws {
        let dir = TempDir()
        let configPath = try config(dir)
        let server = try RunningPipehook(["serve", "--config", configPath], directory: dir.path)
        let port = try await server.waitForPort()
        let url = "http://127.0.0.1:\(port)/webhooks/pipevideo"
        for status in ["queued", "in_progress", "completed"] {
            let sent = try await pipehook(["send", "--config", configPath, "--url", url, "--generation-id", "gen_e2e", "--status", status], directory: dir.path)
            #expect(sent.code == 0, "\(sent)")
            #expect(sent.stdout.contains(#""transition":"applied""#))
        }
        let duplicate = try await pipehook(["send", "--config", configPath, "--url", url, "--generation-id", "gen_e2e", "--id", "msg_fixed"], directory: dir.path)
        #expect(duplicate.stdout.contains(#""transition":"same""#))
        let again = try await pipehook(["send", "--config", configPath, "--url", url, "--generation-id", "gen_e2e", "--id", "msg_fixed"], directory: dir.path)
        #expect(again.code == 0 && again.stdout.contains(#"{"result":"duplicate"}"#))
        let forged = try await pipehook(["send", "--url", url, "--secret", Fixture.otherSecret], directory: dir.path)
        #expect(forged.code == 1 && forged.stdout.contains("HTTP 401"))

        let status = try await pipehook(["status", "gen_e2e", "--json", "--config", configPath], directory: dir.path)
        #expect(status.code == 0, "\(status)")
        let document = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        #expect(document?["status"] as? String == "completed")
        let timeline = document?["timeline"] as? [[String: Any]] ?? []
        #expect(timeline.map { $0["transition"] as? String } == ["applied", "applied", "applied", "same"])

        let list = try await pipehook(["generations", "--status", "completed", "--json", "--config", configPath], directory: dir.path)
        let rows = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]
        #expect(rows?.map { $0["generation_id"] as? String } == ["gen_e2e"])
        let text = try await pipehook(["status", "gen_e2e", "--config", configPath], directory: dir.path)
        #expect(text.stdout.contains("status:   completed"))
        let missing = try await pipehook(["status", "gen_none", "--config", configPath], directory: dir.path)
        #expect(missing.code == 1 && missing.stderr.contains("no generation gen_none"))
        let prune = try await pipehook(["prune", "--json", "--config", configPath], directory: dir.path)
        #expect(prune.code == 0 && prune.stdout.contains(#""deliveries" : 0"#))

        // Logs: JSON lines, event lines carry event_id and generation_id, no secret anywhere.
        server.kill(SIGTERM)
        #expect(server.process.terminationStatus == 0, "graceful stop: \(server.stderr)")
        let lines = server.stdout.split(separator: "\n")
        #expect(!lines.isEmpty)
        for line in lines {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(line)")
            if json["msg"] as? String == "accepted delivery" {
                #expect(json["event_id"] != nil && json["generation_id"] != nil)
            }
        }
        let everything = server.stdout + server.stderr
        #expect(!everything.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") && !everything.contains("C2FVsBQIhrscChlQIMV"))
        #expect(everything.contains(#""code":"invalid_signature""#))
    }

    @Test func versionIsPrinted() async throws {
        let dir = TempDir()
        let run = try await pipehook(["--version"], directory: dir.path)
        #expect(run.code == 0)
        #expect(run.stdout == PipehookVersion.current + "\n", "\(run.stdout)")
    }

    @Test func checkConfigAndExitCodes() async throws {
        let dir = TempDir()
        let good = try config(dir)
        let ok = try await pipehook(["check-config", "--config", good], directory: dir.path)
        #expect(ok.code == 0 && ok.stdout.contains("configuration OK"))
        let bad = dir.path + "/bad.yaml"
        try "listen: nowhere\nsources:\n  p:\n    secrets: [\"${NOT_SET_ANYWHERE}\"]\n    tolerence: 5m\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let failed = try await pipehook(["check-config", "--config", bad], directory: dir.path)
        #expect(failed.code == 1)
        #expect(failed.stdout.contains("listen:"))
        #expect(failed.stdout.contains("sources.p.secrets[0]: environment variable NOT_SET_ANYWHERE is not set"))
        #expect(failed.stdout.contains("sources.p.tolerence: unknown key"))
        let serveBad = try await pipehook(["serve", "--config", bad], directory: dir.path)
        #expect(serveBad.code == 1 && serveBad.stderr.contains("NOT_SET_ANYWHERE"))
        let usage = try await pipehook(["generations", "--limit", "x"], directory: dir.path)
        #expect(usage.code == 2)
        let unknown = try await pipehook(["frobnicate"], directory: dir.path)
        #expect(unknown.code == 2)
        let noFile = try await pipehook(["check-config", "--config", dir.path + "/absent.yaml"], directory: dir.path)
        #expect(noFile.code == 1 && noFile.stdout.contains("cannot read"))
    }

    /// Issue 12: `check-config` reports what parses but would fail at the first event — every
    /// such problem at once, with its key path.
    @Test func checkConfigFindsWhatWouldFailLater() async throws {
        let dir = TempDir()
        let notExecutable = dir.path + "/handler.sh"
        try "#!/bin/sh\n".write(toFile: notExecutable, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: notExecutable)
        let aFile = dir.path + "/plain-file"
        try "x".write(toFile: aFile, atomically: true, encoding: .utf8)
        let path = dir.path + "/pipehook.yaml"
        try Fixture.yaml(dir: dir.path + "/data", extra: """
            routes:
              - name: run
                on: [completed]
                steps:
                  - exec: {command: ["\(notExecutable)"]}
                  - exec: {command: ["no-such-handler-anywhere"]}
                  - exec: {command: ["/bin/true"]}
                  - download: {dir: "\(aFile)/videos"}
                  - download: {dir: "\(dir.path)/archive/new/deep"}
            """).write(toFile: path, atomically: true, encoding: .utf8)
        let run = try await pipehook(["check-config", "--config", path], directory: dir.path)
        #expect(run.code == 1)
        #expect(run.stdout.contains("has 3 problem(s)"), "\(run.stdout)")
        #expect(run.stdout.contains("routes[0].steps[0].exec.command[0]: command is not executable by user"), "\(run.stdout)")
        #expect(run.stdout.contains("routes[0].steps[1].exec.command[0]: command not found: no-such-handler-anywhere"), "\(run.stdout)")
        #expect(run.stdout.contains("routes[0].steps[3].download.dir: cannot create \(aFile)/videos: \(aFile) is not a folder"), "\(run.stdout)")
        #expect(!run.stdout.contains("steps[2]") && !run.stdout.contains("steps[4]"), "\(run.stdout)")
        // Fixed, it passes; nothing was created by the check.
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: notExecutable)
        let fixed = try String(contentsOfFile: path, encoding: .utf8)
            .replacingOccurrences(of: "no-such-handler-anywhere", with: "true")
            .replacingOccurrences(of: "\(aFile)/videos", with: "\(dir.path)/videos")
        try fixed.write(toFile: path, atomically: true, encoding: .utf8)
        let ok = try await pipehook(["check-config", "--config", path], directory: dir.path)
        #expect(ok.code == 0 && ok.stdout.contains("configuration OK"), "\(ok.stdout)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/archive"))
    }

    /// Issue 12: `pipehook config` shows the configuration in force with every default, and no
    /// secret: neither a webhook secret, an admin token, a post secret nor a database password.
    @Test func configPrintsEverythingButSecrets() async throws {
        let dir = TempDir()
        let path = dir.path + "/pipehook.yaml"
        let token = "admin-token-0123456789abcdef"
        try Fixture.yaml(dir: dir.path + "/data", extra: """
            admin_token: "\(token)"
            routes:
              - name: forward
                on: [completed, failed]
                steps:
                  - post: {url: "https://example.com/hook?token=query-secret-value", secret: "\(Fixture.otherSecret)"}
                  - exec: {command: ["/bin/true"], env: {API_TOKEN: "env-secret-value"}}
            """).write(toFile: path, atomically: true, encoding: .utf8)
        let run = try await pipehook(["config", "--config", path], directory: dir.path)
        #expect(run.code == 0, "\(run)")
        let json = try #require(JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(json["lease"] as? String == "60s" && json["store_timeout"] as? String == "5s" && json["max_connections"] as? Int == 2048)
        let routes = try #require(json["routes"] as? [[String: Any]])
        #expect(routes.first?["name"] as? String == "forward")
        for secret in [Fixture.secret, Fixture.otherSecret, token, "query-secret-value", "env-secret-value"] {
            #expect(!run.stdout.contains(secret), "\(secret) leaked")
        }
        for base64 in ["MfKQ9r8GKYqrTwjUPD8", "C2FVsBQIhrscChlQIMV"] { #expect(!run.stdout.contains(base64)) }
        #expect(run.stdout.contains("<redacted sha256:"))

        // The built-in defaults, route included, when there is no file.
        let empty = TempDir()
        let defaults = try await pipehook(["config"], directory: empty.path, environment: ["PIPEHOOK_SECRET": Fixture.secret])
        #expect(defaults.code == 0, "\(defaults)")
        #expect(defaults.stdout.contains(#""name" : "archive""#) && defaults.stdout.contains("built-in defaults"), "\(defaults.stdout)")
        #expect(!defaults.stdout.contains("MfKQ9r8GKYqrTwjUPD8"))
    }

    /// Issue 12: the read commands need the store, not the secrets an environment file gives
    /// only the daemon.
    @Test func readCommandsRunWithoutTheSecrets() async throws {
        let dir = TempDir()
        let path = dir.path + "/pipehook.yaml"
        let withSecret = Fixture.yaml(dir: dir.path + "/data").replacingOccurrences(of: "log_level: warning", with: "log_level: info")
        try withSecret.write(toFile: path, atomically: true, encoding: .utf8)
        let server = try RunningPipehook(["serve", "--config", path], directory: dir.path)
        let port = try await server.waitForPort()
        let sent = try await pipehook(["send", "--url", "http://127.0.0.1:\(port)/webhooks/pipevideo", "--secret", Fixture.secret, "--status", "completed", "--generation-id", "gen_nosecret"], directory: dir.path)
        #expect(sent.code == 0, "\(sent)")
        server.kill(SIGTERM)
        while server.process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        try withSecret.replacingOccurrences(of: Fixture.secret, with: "${SECRET_ONLY_THE_DAEMON_HAS}")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let status = try await pipehook(["status", "gen_nosecret", "--config", path], directory: dir.path)
        #expect(status.code == 0 && status.stdout.contains("completed"), "\(status)")
        let generations = try await pipehook(["generations", "--config", path], directory: dir.path)
        #expect(generations.code == 0 && generations.stdout.contains("gen_nosecret"), "\(generations)")
        let jobs = try await pipehook(["jobs", "--config", path], directory: dir.path)
        #expect(jobs.code == 0, "\(jobs)")
        // A command that needs the secrets still says which one is missing.
        let serve = try await pipehook(["serve", "--config", path], directory: dir.path)
        #expect(serve.code == 1 && serve.stderr.contains("SECRET_ONLY_THE_DAEMON_HAS"))
    }

    /// SPEC §8: `pipehook backup FILE` copies the store while the daemon runs and writes to it;
    /// the copy is one whole file (no WAL beside it), 0640, never over an existing file.
    @Test func backupCopiesTheStoreWhileServing() async throws {
        let dir = TempDir()
        let path = try config(dir)
        let server = try RunningPipehook(["serve", "--config", path], directory: dir.path)
        let port = try await server.waitForPort()
        let url = "http://127.0.0.1:\(port)/webhooks/pipevideo"
        for index in 0..<20 {
            let sent = try await pipehook(["send", "--url", url, "--secret", Fixture.secret, "--status", "queued", "--generation-id", "gen_backup\(index)"], directory: dir.path)
            #expect(sent.code == 0, "\(sent)")
        }
        let file = dir.path + "/backups/copy.sqlite"
        try FileManager.default.createDirectory(atPath: dir.path + "/backups", withIntermediateDirectories: true)
        // Deliveries keep arriving while the copy is taken.
        async let more: Void = {
            for index in 20..<40 {
                _ = try await pipehook(["send", "--url", url, "--secret", Fixture.secret, "--status", "queued", "--generation-id", "gen_backup\(index)"], directory: dir.path)
            }
        }()
        let run = try await pipehook(["backup", file, "--config", path, "--json"], directory: dir.path)
        try await more
        #expect(run.code == 0, "\(run)")
        let answer = try #require(JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(answer["backup"] as? String == file && (answer["bytes"] as? Int ?? 0) > 0)
        #expect(!FileManager.default.fileExists(atPath: file + "-wal"))
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode.map { $0 & 0o027 == 0 } == true, "mode \(String(mode ?? 0, radix: 8))")
        let copy = try DatabaseQueue(path: file)
        let (events, check) = try await copy.read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM events") ?? 0, try String.fetchOne(db, sql: "PRAGMA integrity_check"))
        }
        #expect(events >= 20 && events <= 40 && check == "ok", "\(events) \(check ?? "")")
        // Never over an existing file; errors are JSON under --json.
        let again = try await pipehook(["backup", file, "--config", path, "--json"], directory: dir.path)
        #expect(again.code == 1)
        let error = try #require(JSONSerialization.jsonObject(with: Data(again.stderr.utf8)) as? [String: [String: String]])
        #expect(error["error"]?["code"] == "failed" && error["error"]?["message"]?.contains("exists already") == true, "\(again.stderr)")
        server.kill(SIGTERM)
        // With the daemon stopped too.
        while server.process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        let offline = try await pipehook(["backup", dir.path + "/backups/offline.sqlite", "--config", path], directory: dir.path)
        #expect(offline.code == 0 && offline.stdout.hasPrefix("backed up"), "\(offline)")
        // A PostgreSQL store is named with what to use instead.
        try "store: \"postgres://u:p@127.0.0.1:1/x\"\n".write(toFile: dir.path + "/pg.yaml", atomically: true, encoding: .utf8)
        let postgres = try await pipehook(["backup", dir.path + "/x.sqlite", "--config", dir.path + "/pg.yaml"], directory: dir.path)
        #expect(postgres.code == 1 && postgres.stderr.contains("pg_dump") && !postgres.stderr.contains("u:p@"), "\(postgres)")
    }

    /// SPEC §8: with `--json`, a failure and a usage error are JSON on stderr, exit codes unchanged.
    @Test func errorsAreJSONUnderJSON() async throws {
        let dir = TempDir()
        let path = try config(dir)
        let server = try RunningPipehook(["serve", "--config", path], directory: dir.path)
        _ = try await server.waitForPort()
        let missing = try await pipehook(["status", "gen_nowhere", "--config", path, "--json"], directory: dir.path)
        #expect(missing.code == 1)
        let failure = try #require(JSONSerialization.jsonObject(with: Data(missing.stderr.utf8)) as? [String: [String: String]], "\(missing.stderr)")
        #expect(failure["error"]?["code"] == "failed" && failure["error"]?["message"] == "no generation gen_nowhere in the store")
        let usage = try await pipehook(["generations", "--limit", "x", "--json"], directory: dir.path)
        #expect(usage.code == 2)
        let usageError = try #require(JSONSerialization.jsonObject(with: Data(usage.stderr.utf8)) as? [String: [String: String]], "\(usage.stderr)")
        #expect(usageError["error"]?["code"] == "usage")
        let text = try await pipehook(["status", "gen_nowhere", "--config", path], directory: dir.path)
        #expect(text.code == 1 && text.stderr == "pipehook: no generation gen_nowhere in the store\n")
        server.kill(SIGTERM)
    }

    /// The README quick start: `serve` with no file at all, then `send` with no arguments.
    @Test func builtInDefaultsQuickStart() async throws {
        let dir = TempDir()
        let server = try RunningPipehook(["serve"], directory: dir.path)
        let port = try await server.waitForPort()
        #expect(port == 8787)
        #expect(server.stderr.contains("generated a webhook signing secret"))
        let secretFile = dir.path + "/pipehook-data/webhook-secret"
        let attributes = try FileManager.default.attributesOfItem(atPath: secretFile)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let sent = try await pipehook(["send", "--status", "completed"], directory: dir.path)
        #expect(sent.code == 0 && sent.stdout.contains(#""result":"accepted""#), "\(sent)")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/pipehook-data/pipehook.sqlite"))
        let secret = try String(contentsOfFile: secretFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!server.stdout.contains(secret), "the secret must not reach the log stream")
        server.kill(SIGINT)
        // A second start reuses the saved secret instead of generating a new one.
        let again = try RunningPipehook(["serve"], directory: dir.path)
        _ = try await again.waitForPort()
        #expect(!again.stderr.contains("generated"))
        #expect(try String(contentsOfFile: secretFile, encoding: .utf8).contains(secret))
        again.kill(SIGTERM)
    }

    /// SIGKILL right after answers: every delivery acknowledged with 200 is in the file.
    @Test func killNineKeepsEveryAcknowledgedDelivery() async throws {
        let dir = TempDir()
        let configPath = try config(dir)
        for round in 0..<3 {
            let server = try RunningPipehook(["serve", "--config", configPath], directory: dir.path)
            let port = try await server.waitForPort()
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            let acknowledged = AckLog()
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<400 {
                    group.addTask {
                        let id = "msg_k\(round)_\(i)"
                        let body = Fixture.body(generation: "gen_k\(round)_\(i)", status: "completed")
                        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/pipevideo")
                        request.method = .POST
                        for (name, value) in Fixture.headers(id: id, body: body) { request.headers.add(name: name, value: value) }
                        request.body = .bytes(ByteBuffer(string: body))
                        guard let response = try? await http.execute(request, timeout: .seconds(3)) else { return }
                        if response.status == .ok, let answer = try? await response.body.collect(upTo: 4096),
                           String(buffer: answer).contains("accepted")
                        {
                            if await acknowledged.add(id) == 150 { server.kill(SIGKILL) }
                        }
                    }
                }
            }
            try? await http.shutdown()
            if server.process.isRunning { server.kill(SIGKILL) }
            let acked = await acknowledged.snapshot()
            #expect(acked.count >= 150)
            let queue = try DatabaseQueue(path: dir.path + "/data/pipehook.sqlite")
            let stored = try await queue.read { db in
                Set(try String.fetchAll(db, sql: "SELECT delivery_id FROM deliveries WHERE delivery_id LIKE ?", arguments: ["msg_k\(round)_%"]))
            }
            try queue.close()
            let lost = acked.subtracting(stored)
            #expect(lost.isEmpty, "round \(round): \(lost.count) acknowledged deliveries lost")
        }
    }
}

actor AckLog {
    private var ids: Set<String> = []
    func snapshot() -> Set<String> { ids }
    func add(_ id: String) -> Int {
        ids.insert(id)
        return ids.count
    }
}

@Suite struct ShippedConfigurationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var examples: [String] {
        let folder = repository.appendingPathComponent("config").path
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
            .filter { $0.hasSuffix(".yaml") }.sorted().map { folder + "/" + $0 }
    }

    @Test func thereAreExamples() { #expect(!Self.examples.isEmpty) }

    /// Every example under config/ passes `pipehook check-config` (secrets from the environment),
    /// its handlers included: the installed paths (`/usr/share/pipehook/handlers`, the data under
    /// `/var/lib/pipehook`) are read as this checkout's `handlers/` and a fresh folder.
    @Test(arguments: examples)
    func exampleConfigurationIsValid(_ example: String) async throws {
        let dir = TempDir()
        let handlers = Self.repository.appendingPathComponent("handlers").path
        let path = dir.path + "/" + URL(fileURLWithPath: example).lastPathComponent
        try String(contentsOfFile: example, encoding: .utf8)
            .replacingOccurrences(of: "/usr/share/pipehook/handlers", with: handlers)
            .replacingOccurrences(of: "./handlers/", with: handlers + "/")
            .replacingOccurrences(of: "/var/lib/pipehook", with: dir.path + "/state")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let env = [
            "PIPEVIDEO_WEBHOOK_SECRET": Fixture.secret, "PIPEVIDEO_API_KEY": "pv_example",
            "OPS_HOOK_SECRET": Fixture.otherSecret, "PIPEHOOK_ADMIN_TOKEN": "an-admin-token-of-some-length",
        ]
        let result = try await pipehook(["check-config", "--config", path], directory: dir.path, environment: env)
        #expect(result.code == 0, "\(result.stdout)")
    }
}
