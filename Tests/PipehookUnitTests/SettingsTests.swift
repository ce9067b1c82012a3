import Foundation
import PipehookLifecycle
import PipehookSignature
@testable import PipehookSettings
import Testing

@Suite struct SettingsTests {
    static let specExample = """
        listen: "127.0.0.1:8787"
        data_dir: "./pipehook-data"
        store: "sqlite:./pipehook-data/pipehook.sqlite"   # or postgres://user:pass@host:5432/db
        max_body_bytes: 1048576
        dedup_window: 7d
        log_format: json                                   # json | text
        admin_token: "${PIPEHOOK_ADMIN_TOKEN}"             # optional; enables /api/* and the status page
        tls: {cert: "/etc/pipehook/cert.pem", key: "/etc/pipehook/key.pem"}   # optional
        sources:
          pipevideo:
            format: pipevideo
            secrets: ["${PIPEVIDEO_WEBHOOK_SECRET}"]       # any may match (rotation)
            tolerance: 5m
        api:                                               # optional; enables section 7
          base_url: "https://api.pipevideo.co"
          key: "${PIPEVIDEO_API_KEY}"
          requests_per_minute: 100
          poll_after: 10m
        retry: {attempts: 10, initial_delay: 2s, max_delay: 15m}
        routes:
          - name: archive-and-publish
            on: [completed]
            steps:
              - download: {dir: "./pipehook-data/videos", path: "{yyyy}/{mm}/{generation_id}.{ext}", max_bytes: 4GiB}
              - exec: {command: ["./handlers/publish.sh"], timeout: 5m, env: {CHANNEL: "main"}}
          - name: notify-failures
            on: [failed, cancelled, incomplete]
            steps:
              - post: {url: "https://ops.example.com/hooks/video-failed", secret: "${OPS_HOOK_SECRET}"}
        """

    static let environment = [
        "PIPEHOOK_ADMIN_TOKEN": "0123456789abcdef0123",
        "PIPEVIDEO_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "PIPEVIDEO_API_KEY": "pv_test_key",
        "OPS_HOOK_SECRET": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    ]

    func problems(_ yaml: String, environment: [String: String] = environment) -> [ConfigProblem] {
        do {
            _ = try SettingsParser.parse(yaml: yaml, environment: environment)
            return []
        } catch {
            return error.problems
        }
    }

    @Test func specExampleParsesCompletely() throws {
        let s = try SettingsParser.parse(yaml: Self.specExample, environment: Self.environment)
        #expect(s.listen == ListenAddress(host: "127.0.0.1", port: 8787))
        #expect(s.store == .sqlite(path: "./pipehook-data/pipehook.sqlite"))
        #expect(s.maxBodyBytes == 1_048_576)
        #expect(s.dedupWindowSeconds == 7 * 86_400)
        #expect(s.logFormat == .json)
        #expect(s.adminToken == "0123456789abcdef0123")
        #expect(s.tls == TLSFiles(certificatePath: "/etc/pipehook/cert.pem", keyPath: "/etc/pipehook/key.pem"))
        #expect(s.sources.map(\.name) == ["pipevideo"])
        #expect(s.sources[0].toleranceSeconds == 300)
        #expect(s.sources[0].format.name == "pipevideo")
        #expect(s.api == API(baseURL: "https://api.pipevideo.co", key: "pv_test_key", requestsPerMinute: 100, pollAfterSeconds: 600))
        #expect(s.retry == .standard)
        #expect(s.routes.map(\.name) == ["archive-and-publish", "notify-failures"])
        #expect(s.routes[1].on == [.failed, .cancelled, .incomplete])
        guard case .download(let download) = s.routes[0].steps[0].action else { Issue.record("not a download"); return }
        #expect(download.maxBytes == 4 << 30)
        #expect(download.pathTemplate.text == "{yyyy}/{mm}/{generation_id}.{ext}")
        guard case .exec(let exec) = s.routes[0].steps[1].action else { Issue.record("not an exec"); return }
        #expect(exec.command == ["./handlers/publish.sh"])
        #expect(exec.timeoutMilliseconds == 300_000)
        #expect(exec.environment == ["CHANNEL": "main"])
        guard case .post(let post) = s.routes[1].steps[0].action else { Issue.record("not a post"); return }
        #expect(post.secret != nil && post.body == .event)
    }

    @Test func missingVariableIsNamedWithItsKey() {
        var env = Self.environment
        env["PIPEVIDEO_API_KEY"] = nil
        let found = problems(Self.specExample, environment: env)
        #expect(found == [ConfigProblem(path: "api.key", message: "environment variable PIPEVIDEO_API_KEY is not set")])
    }

    /// Issue 12 item 4: `file:/PATH` secrets (systemd credentials) are read when the file is parsed,
    /// so a reload picks up a rotated file; a problem names the file and never its contents.
    /// Issue 12: every problem of every route in one run, a duplicate name included when the
    /// route that repeats it has problems of its own.
    @Test func everyRouteProblemIsReportedAtOnce() {
        let found = problems("""
            sources:
              pipevideo:
                secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            routes:
              - {name: a, on: [completed], steps: [{exec: {command: ["/bin/true"]}}]}
              - name: a
                on: [completed, nonsense]
                steps:
                  - exec: {command: ["/bin/true"], timeout: soon}
                  - download: {path: "/absolute"}
            """).map(\.description)
        #expect(found.contains("routes[1].name: duplicate route name"), "\(found)")
        #expect(found.contains { $0.hasPrefix("routes[1].on[1]: unknown status") }, "\(found)")
        #expect(found.contains { $0.hasPrefix("routes[1].steps[0].exec.timeout") }, "\(found)")
        #expect(found.contains { $0.hasPrefix("routes[1].steps[1].download.dir: is required") }, "\(found)")
        #expect(found.contains("routes[1].steps[1].download.path: must be relative to dir"), "\(found)")
    }

    /// The read commands' parse: the store's keys with the same defaults as the full parse, and
    /// nothing else read (an unset secret variable, an unknown key, a bad route are no problem).
    @Test func theStoreIsLocatedWithoutTheRest() throws {
        let yaml = """
            data_dir: /srv/ph
            store_timeout: 2s
            sources:
              pipevideo:
                secrets: ["${NOT_SET_HERE}"]
            routes: [{name: "bad name!"}]
            unknown_key: 1
            """
        let located = try SettingsParser.parseStore(yaml: yaml, environment: [:])
        #expect(located == StoreSettings(dataDir: "/srv/ph", store: .sqlite(path: "/srv/ph/pipehook.sqlite"), storeTimeoutMilliseconds: 2_000))
        #expect(throws: ConfigError.self) { try SettingsParser.parse(yaml: yaml, environment: [:]) }
        // One definition of the defaults: both parses agree on a file that is whole.
        let whole = "store: \"postgres://u:p@db/ph\"\nsources:\n  pipevideo:\n    secrets: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n"
        #expect(try SettingsParser.parse(yaml: whole, environment: [:]).storeSettings == SettingsParser.parseStore(yaml: whole, environment: [:]))
        // The store's own keys are still checked, with their key paths.
        let error = #expect(throws: ConfigError.self) {
            try SettingsParser.parseStore(yaml: "store: \"${DB_URL}\"\nstore_timeout: 5m\n", environment: [:])
        }
        #expect(error?.problems.map(\.path) == ["store", "store_timeout"])
    }

    @Test func secretsMayComeFromFiles() throws {
        let dir = "/tmp/pipehook-secret-files-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n".write(toFile: dir + "/webhook", atomically: true, encoding: .utf8)
        try "  token-from-a-file-0123456789\n".write(toFile: dir + "/admin", atomically: true, encoding: .utf8)
        try "\n".write(toFile: dir + "/empty", atomically: true, encoding: .utf8)
        let yaml = """
            admin_token: "file:\(dir)/admin"
            sources: {pipevideo: {secrets: ["file:${SECRETS_DIR}/webhook"]}, linked: {secrets: ["file:\(dir)/link"]}}
            """
        // A symbolic link to a regular file is read through (credentials are often linked).
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/webhook")
        let settings = try SettingsParser.parse(yaml: yaml, environment: ["SECRETS_DIR": dir])
        #expect(settings.adminToken == "token-from-a-file-0123456789")
        #expect(settings.sources.first { $0.name == "pipevideo" }?.secrets == [try SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")])
        #expect(settings.sources.first { $0.name == "linked" }?.secrets == [try SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")])

        let bad = """
            admin_token: "file:\(dir)/missing"
            gateway: {tokens: ["file:relative/path"]}
            api: {key: "file:\(dir)/empty"}
            sources: {pipevideo: {format: pipevideo, secrets: ["file:\(dir)/admin"]}, other: {secrets: ["file:/dev/zero"]}}
            """
        let found = problems(bad, environment: [:])
        #expect(found.contains(ConfigProblem(path: "admin_token", message: "cannot read the secret file \(dir)/missing (missing or not readable by this user)")), "\(found)")
        #expect(found.contains(ConfigProblem(path: "gateway.tokens[0]", message: "file: needs an absolute path (file:/run/credentials/…)")), "\(found)")
        #expect(found.contains(ConfigProblem(path: "api.key", message: "the secret file \(dir)/empty is empty")), "\(found)")
        #expect(found.contains(ConfigProblem(path: "sources.pipevideo.secrets[0]", message: "is not a whsec_ secret (base64 after the whsec_ prefix)")), "\(found)")
        #expect(found.contains(ConfigProblem(path: "sources.other.secrets[0]", message: "the secret file /dev/zero is not a regular file")), "\(found)")
        #expect(!found.description.contains("token-from-a-file"), "a file's contents never reach a message")
    }

    @Test func everyProblemIsReportedWithItsPath() {
        let yaml = """
            listen: "localhost"
            dedup_window: soon
            sorces: {}
            sources:
              pipevideo:
                format: nope
                secrets: ["not base64 !!"]
                tolerance: -1
              "bad name": {secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}
            retry: {attempts: 0, initial_delay: 10s, max_delay: 1s}
            routes:
              - name: a
                on: [finished]
                steps:
                  - exec: {command: []}
                  - download: {path: "{nope}/x"}
                  - post: {url: "ftp://x", body: xml}
                  - exec: {command: ["x"]}
                    post: {url: "https://x"}
              - name: a
                on: [completed]
                steps: [{exec: {command: [x], permanent_exit_codes: [0]}}]
            """
        let paths = Set(problems(yaml).map(\.path))
        let expected: Set<String> = [
            "listen", "dedup_window", "sorces", "sources.pipevideo.format", "sources.pipevideo.secrets[0]",
            "sources.pipevideo.tolerance", "sources.bad name", "retry.attempts", "routes[0].on[0]",
            "routes[0].steps[0].exec.command", "routes[0].steps[1].download.dir", "routes[0].steps[1].download.path",
            "routes[0].steps[2].post.url", "routes[0].steps[2].post.body", "routes[0].steps[3]",
            // The repeated name, although both routes have problems of their own.
            "routes[1].name", "routes[1].steps[0].exec.permanent_exit_codes[0]",
        ]
        #expect(paths == expected, "got \(problems(yaml))")
    }

    @Test func retryMaxBelowInitialIsAProblem() {
        #expect(problems("sources: {p: {secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}}\nretry: {initial_delay: 10s, max_delay: 1s}").map(\.path) == ["retry.max_delay"])
    }

    @Test func invalidYAMLIsReportedWithoutQuotingTheFile() {
        let found = problems("sources: [\n  secret: whsec_abc\n")
        #expect(found.count == 1)
        #expect(found[0].message.hasPrefix("not valid YAML"))
        #expect(!found[0].message.contains("whsec_abc"))
    }

    @Test func secretsNeverAppearInMessages() {
        let env = ["S": "whsec_!!notbase64secretvalue"]
        let found = problems("sources: {p: {secrets: [\"${S}\"]}}", environment: env)
        #expect(found.count == 1)
        #expect(!found.description.contains("notbase64secretvalue"))
    }

    @Test func stepRetryOverridesOnlyWhatItNames() throws {
        let s = try SettingsParser.parse(yaml: """
            sources: {p: {secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}}
            retry: {attempts: 5}
            routes:
              - name: r
                on: [completed]
                steps:
                  - exec: {command: [x], retry: {attempts: 2}}
                  - exec: {command: [y]}
            """, environment: [:])
        #expect(s.retry.attempts == 5)
        #expect(s.routes[0].steps[0].retry == RetryPolicy(attempts: 2, initialDelayMilliseconds: 2000, maxDelayMilliseconds: 900_000))
        #expect(s.routes[0].steps[1].retry.attempts == 5)
    }

    @Test func minimalFileGetsDefaults() throws {
        let s = try SettingsParser.parse(yaml: "sources: {pipevideo: {secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}}", environment: [:])
        #expect(s.listen.description == "127.0.0.1:8787")
        #expect(s.store == .sqlite(path: "./pipehook-data/pipehook.sqlite"))
        #expect(s.routes.isEmpty && s.api == nil && s.tls == nil && s.adminToken == nil)
        #expect(problems("{}").map(\.path) == ["sources"])
        #expect(problems("").map(\.path) == ["sources"])
    }

    @Test(arguments: [
        ("127.0.0.1:8787", "127.0.0.1", 8787), ("[::1]:9000", "::1", 9000), (":8080", "0.0.0.0", 8080), ("0.0.0.0:0", "0.0.0.0", 0),
    ])
    func listenAddresses(text: String, host: String, port: Int) throws {
        let s = try SettingsParser.parse(yaml: "listen: \"\(text)\"\nsources: {p: {secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}}", environment: [:])
        #expect(s.listen == ListenAddress(host: host, port: port))
    }

    @Test func builtInDefaultsMatchTheSpec() {
        let s = SettingsParser.builtInDefaults(secret: .init(key: [1, 2, 3]))
        #expect(s.listen.description == "127.0.0.1:8787")
        #expect(s.dataDir == "./pipehook-data")
        #expect(s.sources.map(\.name) == ["pipevideo"])
        #expect(s.routes.count == 1 && s.routes[0].on == [.completed])
        guard case .download(let d) = s.routes[0].steps[0].action else { Issue.record("no download"); return }
        #expect(d.directory == "./pipehook-data/videos")
    }
}

@Suite struct UnitsTests {
    @Test(arguments: [
        ("150ms", Int64(150)), ("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("7d", 604_800_000),
        ("1h30m", 5_400_000), ("300", 300_000), ("0", 0), ("1w", 604_800_000),
    ] as [(String, Int64)])
    func durations(text: String, ms: Int64) { #expect(Units.milliseconds(text) == ms) }

    @Test(arguments: ["", "m", "5x", "-5s", "1.5h", "5 minutes", "99999999999999999999d", "5s5"])
    func badDurations(text: String) { #expect(Units.milliseconds(text) == nil) }

    @Test(arguments: [
        ("1048576", Int64(1_048_576)), ("512KiB", 524_288), ("1MiB", 1_048_576), ("4GiB", 4_294_967_296),
        ("10MB", 10_000_000), ("1kb", 1000), ("7B", 7), ("1TiB", 1_099_511_627_776),
    ] as [(String, Int64)])
    func sizes(text: String, bytes: Int64) { #expect(Units.bytes(text) == bytes) }

    @Test(arguments: ["", "GiB", "4XB", "-1", "1.5GiB", "99999999999TiB"])
    func badSizes(text: String) { #expect(Units.bytes(text) == nil) }

    @Test(arguments: [
        ("plain", "plain"), ("${A}", "1"), ("x${A}y${B}z", "x1y2z"), ("$$", "$"), ("$${A}", "${A}"), ("$x", "$x"), ("${EMPTY}", ""),
    ])
    func substitution(text: String, expected: String) {
        #expect(EnvSubstitution.apply(text, environment: ["A": "1", "B": "2", "EMPTY": ""]) == .success(expected))
    }

    @Test func substitutionFailures() {
        #expect(EnvSubstitution.apply("${MISSING}", environment: [:]) == .failure(.missing("MISSING")))
        #expect(EnvSubstitution.apply("${A", environment: [:]) == .failure(.unterminated))
        #expect(EnvSubstitution.apply("${1A}", environment: [:]) == .failure(.invalidName("1A")))
    }

    @Test(arguments: [
        ("{yyyy}/{mm}/{generation_id}.{ext}", true), ("{source}-{status}-{dd}", true), ("x", true),
        ("{nope}", false), ("{yyyy", false), ("a}b", false), ("", false), ("/abs/{ext}", false),
    ])
    func pathTemplates(text: String, valid: Bool) {
        let parsed = try? PathTemplate(text)
        #expect((parsed != nil) == valid)
    }
}

/// The service lifecycle logs its services with `String(describing:)` at debug level; settings
/// reach it inside the reload service. No credential may come out of any description.
@Suite struct SettingsRedactionTests {
    @Test func noCredentialInAnyDescription() throws {
        let settings = try SettingsParser.parse(yaml: """
            store: "postgres://pipehook:db-password-777@db.internal:5432/pipehook"
            admin_token: "admin-token-secret-0123"
            sources:
              pipevideo:
                secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            api:
              key: "pv_live_key_secret_999"
            routes:
              - name: forward
                on: [completed]
                steps:
                  - post: {url: "https://ops.example.com/hook", secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}
            """, environment: [:])
        var dumped = ""
        dump(settings, to: &dumped)
        var dumpedSources = ""
        dump(settings.sources, to: &dumpedSources)
        var dumpedRoutes = ""
        dump(settings.routes, to: &dumpedRoutes)
        let texts = [
            String(describing: settings), String(reflecting: settings), dumped, dumpedSources, dumpedRoutes,
            "\(settings.sources)", "\(settings.routes)", "\(settings.api!)", String(reflecting: settings.api!), "\(settings.store)",
        ]
        let secretKeyBytes = try SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").key.map(String.init).prefix(4).joined(separator: ", ")
        for text in texts {
            for secret in ["db-password-777", "admin-token-secret-0123", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "pv_live_key_secret_999",
                           "C2FVsBQIhrscChlQIMV", secretKeyBytes] {
                #expect(!text.contains(secret), "\(secret) in \(text)")
            }
        }
        #expect("\(settings.store)" == "postgres://pipehook:<redacted>@db.internal:5432/pipehook")
    }
}

/// SPEC §3.5: a job is pinned to its route's version; the stored definition rebuilds it later.
@Suite struct RoutePinningTests {
    static let yaml = """
        sources: {pipevideo: {secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}}
        retry: {attempts: 4}
        lease: 90s
        routes:
          - name: publish
            on: [completed]
            steps:
              - exec: {command: ["./publish.sh", "${CHANNEL}"], timeout: 5m}
              - post: {url: "https://ops.example.com/a", secret: "${OPS_SECRET}"}
              - post: {url: "https://ops.example.com/b", secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}
        """
    static let environment = ["CHANNEL": "main", "OPS_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

    @Test func theDefinitionIsStableAndHoldsNoSecretValue() throws {
        let a = try SettingsParser.parse(yaml: Self.yaml, environment: Self.environment)
        let b = try SettingsParser.parse(yaml: Self.yaml.replacingOccurrences(of: "timeout: 5m", with: "timeout:    5m"), environment: ["CHANNEL": "other", "OPS_SECRET": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"])
        #expect(a.leaseMilliseconds == 90_000)
        let route = a.routes[0]
        #expect(route.version.count == 64 && route.version == b.routes[0].version, "same text, same version, whatever the environment")
        #expect(route.definition.contains("${CHANNEL}") && route.definition.contains("${OPS_SECRET}"))
        #expect(!route.definition.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") && !route.definition.contains("C2FVsBQIhrscChlQIMV"))
        #expect(route.definition.contains(#""attempts":"4""#), "the global retry in force is part of the version")
        let edited = try SettingsParser.parse(yaml: Self.yaml.replacingOccurrences(of: "timeout: 5m", with: "timeout: 6m"), environment: Self.environment)
        #expect(edited.routes[0].version != route.version)
    }

    @Test func aPinnedRouteIsRebuiltWithTheEnvironmentOfNow() throws {
        let route = try SettingsParser.parse(yaml: Self.yaml, environment: Self.environment).routes[0]
        let rebuilt = try SettingsParser.pinnedRoute(
            definition: route.definition, environment: ["CHANNEL": "next", "OPS_SECRET": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
            secrets: route.literalSecrets
        )
        #expect(rebuilt.name == "publish" && rebuilt.version == route.version && rebuilt.steps.map(\.kind) == ["exec", "post", "post"])
        guard case .exec(let exec) = rebuilt.steps[0].action, case .post(let post) = rebuilt.steps[2].action else {
            Issue.record("wrong steps"); return
        }
        #expect(exec.command == ["./publish.sh", "next"] && exec.timeoutMilliseconds == 300_000)
        #expect(post.secret?.key == (try SigningSecret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")).key)
        #expect(rebuilt.steps.allSatisfy { $0.retry.attempts == 4 })

        // A literal secret no longer configured: a clear problem, never a step without its secret.
        let error = #expect(throws: ConfigError.self) {
            try SettingsParser.pinnedRoute(definition: route.definition, environment: Self.environment, secrets: [:])
        }
        #expect(error?.problems.first?.message.contains("no longer configured") == true)
        // A variable gone from the environment is named.
        let missing = #expect(throws: ConfigError.self) {
            try SettingsParser.pinnedRoute(definition: route.definition, environment: [:], secrets: route.literalSecrets)
        }
        #expect(missing?.problems.contains { $0.message.contains("CHANNEL") } == true)
    }

    @Test func theBuiltInRouteIsPinnedToo() throws {
        let settings = SettingsParser.builtInDefaults(secret: try SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let route = try #require(settings.routes.first)
        #expect(route.name == "archive" && route.version.count == 64)
        let rebuilt = try SettingsParser.pinnedRoute(definition: route.definition, environment: [:])
        guard case .download(let download) = rebuilt.steps[0].action else { Issue.record("not a download"); return }
        #expect(download.directory == "./pipehook-data/videos" && download.pathTemplate.text == "{yyyy}/{mm}/{generation_id}.{ext}")
        #expect(download.maxBytes == 4 << 30 && !download.allowHTTP)
    }

    @Test func leaseIsValidated() {
        let error = #expect(throws: ConfigError.self) {
            try SettingsParser.parse(yaml: "lease: 10ms\nsources: {p: {secrets: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]}}", environment: [:])
        }
        #expect(error?.problems.map(\.path) == ["lease"])
    }

    @Test(arguments: [
        ("max_connections: 0", "max_connections"), ("max_connections: lots", "max_connections"),
        ("store_timeout: 10ms", "store_timeout"), ("store_timeout: 5m", "store_timeout"),
    ])
    func connectionAndStoreLimitsAreValidated(line: String, path: String) {
        let error = #expect(throws: ConfigError.self) {
            try SettingsParser.parse(yaml: "\(line)\nsources: {p: {secrets: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]}}", environment: [:])
        }
        #expect(error?.problems.map(\.path) == [path])
    }

    @Test func connectionAndStoreLimitsDefaultAndParse() throws {
        let sources = "sources: {p: {secrets: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]}}"
        let defaults = try SettingsParser.parse(yaml: sources, environment: [:])
        #expect(defaults.maxConnections == 2048 && defaults.storeTimeoutMilliseconds == 5_000)
        let set = try SettingsParser.parse(yaml: "max_connections: 64\nstore_timeout: 2s\n" + sources, environment: [:])
        #expect(set.maxConnections == 64 && set.storeTimeoutMilliseconds == 2_000)
    }
}

extension SettingsTests {
    /// `api.defaults` (issue 11): model and engine for `pipehook submit`; a bad engine names its key path.
    @Test func apiDefaultsAreParsedAndCheckedWithTheirKeyPath() throws {
        let base = Self.specExample.replacingOccurrences(of: "  poll_after: 10m\n", with: "  poll_after: 10m\n  defaults: {model: pv-1, engine: lottie}\n")
        let settings = try SettingsParser.parse(yaml: base, environment: Self.environment)
        #expect(settings.api?.defaults == CreateDefaults(model: "pv-1", engine: "lottie"))
        #expect(try SettingsParser.parse(yaml: Self.specExample, environment: Self.environment).api?.defaults == CreateDefaults())
        let bad = base.replacingOccurrences(of: "engine: lottie", with: "engine: blender")
        #expect(problems(bad).map(\.path) == ["api.defaults.engine"])
        let unknown = base.replacingOccurrences(of: "engine: lottie", with: "engin: lottie")
        #expect(problems(unknown).map(\.path) == ["api.defaults.engin"])
    }
}
