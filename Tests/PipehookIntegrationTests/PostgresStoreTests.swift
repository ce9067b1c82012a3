import Foundation
import Logging
import PipehookDispatch
import PipehookFormats
import PipehookHandlers
import PipehookLifecycle
import PipehookPostgres
import PipehookSettings
import PipehookStore
import PostgresNIO
import ServiceLifecycle
import Synchronization
import Testing

/// The URL parser: no database needed.
@Suite struct PostgresLocationTests {
    @Test func parsesTheURLAndChoosesTLSByHost() throws {
        let local = try PostgresLocation(url: "postgres://pipe%40hook:s3cr%2Ft@127.0.0.1:6543/pipehook?search_path=tenant_a&pool_max=4")
        #expect(local.client.host == "127.0.0.1" && local.client.port == 6543)
        #expect(local.client.username == "pipe@hook" && local.client.password == "s3cr/t" && local.client.database == "pipehook")
        #expect(local.searchPath == "tenant_a" && local.client.options.maximumConnections == 4)
        #expect(local.client.options.additionalStartupParameters.contains { $0 == ("search_path", "tenant_a") })
        #expect("\(local.client.tls)".contains("disable"))
        let remote = try PostgresLocation(url: "postgresql://u:p@db.internal/pipehook")
        #expect(remote.client.port == 5432 && !"\(remote.client.tls)".contains("disable"))
        let socket = try PostgresLocation(url: "postgres://u@localhost/db?host=/var/run/postgresql")
        #expect(socket.client.unixSocketPath == "/var/run/postgresql/.s.PGSQL.5432")
        for text in ["\(local)", String(reflecting: local), "\(Mirror(reflecting: local).children.map(\.value))"] {
            #expect(!text.contains("s3cr") && text.contains("<redacted>"), "\(text)")
        }
    }

    @Test func rejectsBadURLsWithoutQuotingThePassword() {
        for url in [
            "postgres://u:hunter2@host", "postgres://:hunter2@host/db", "postgres://u:hunter2@/db",
            "postgres://u:hunter2@host/db?sslmode=sometimes", "postgres://u:hunter2@host/db?pool_max=0",
            "postgres://u:hunter2@host/db?password=x",
        ] {
            let error = #expect(throws: StoreError.self) { try PostgresLocation(url: url) }
            #expect(error?.message.contains("hunter2") == false, "\(error?.message ?? "")")
            #expect(error?.message.hasPrefix("store: the postgres URL") == true)
        }
    }
}

/// What only the PostgreSQL store does (the shared rules are in `StoreConformanceTests`).
@Suite(.enabled(if: PostgresTestDatabase.url != nil, PostgresTestDatabase.note))
struct PostgresStoreTests {

    /// Issue 10: what keeps pipehook from the database is named within 2 s when the server (or
    /// the network) answers, not after the pool's 10 s as "no connection"; never the password.
    @Test(arguments: ["password", "database", "schema", "refused", "tls"])
    func connectionProblemsAreNamedAtOnce(problem: String) async throws {
        let url = try #require(PostgresTestDatabase.url)
        var components = try #require(URLComponents(string: url))
        let expected: String
        switch problem {
        case "password":
            components.password = "not-the-password-hunter2"
            expected = "password authentication failed"
        case "database":
            components.path = "/pipehook_no_such_database"
            expected = "does not exist"
        case "schema":
            components.queryItems = (components.queryItems ?? []) + [URLQueryItem(name: "search_path", value: "no_such_schema")]
            expected = "the schema no_such_schema does not exist"
        case "tls":
            // Certificates checked against the system's roots: this server has TLS off, or a
            // self-signed certificate (Debian's snakeoil); either way the probe says TLS.
            components.queryItems = (components.queryItems ?? []) + [URLQueryItem(name: "sslmode", value: "verify-full")]
            expected = "tls"
        default:
            components.port = 1
            expected = "refused"
        }
        let changed = try #require(components.string)
        let location = try PostgresLocation(url: changed)
        let started = ContinuousClock.now
        let error = await #expect(throws: StoreError.self) { try await PostgresStore.open(location, logger: Fixture.logger) }
        let took = ContinuousClock.now - started
        let message = error?.message ?? ""
        #expect(message.lowercased().contains(expected), "\(message)")
        #expect(!message.contains("hunter2"))
        // Milliseconds on an idle machine; the bound is the pool's 10 s this replaces (the password
        // exchange of a debug build on a loaded CI machine can take seconds).
        #expect(took < .seconds(9), "named after \(took)")
    }

    /// Read-only commands do not migrate: on an empty schema they say so instead of failing obscurely.
    @Test func unmigratedSchemaReadsAsNotFound() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open(migrate: false)
            let error = await #expect(throws: StoreError.self) { try await store.generations(withID: "g1") }
            #expect(error?.kind == .notFound && error?.message.contains("pipehook serve") == true, "\(error?.message ?? "")")
            await store.close()
        }
    }

    /// A 200 means durable: a role (or database) with `synchronous_commit = off` would have its
    /// commits acknowledged before their WAL is flushed; pipehook's connections override it.
    @Test func synchronousCommitStaysOnWhateverTheRoleSays() async throws {
        try await TestSchema.with { schema in
            let role = "pipehook_async_\(UUID().uuidString.prefix(8).lowercased())"
            let admin = try await schema.open()
            try await admin.client.query(PostgresQuery(unsafeSQL: "CREATE ROLE \(role) LOGIN PASSWORD 'pw' SUPERUSER"), logger: Fixture.logger)
            try await admin.client.query(PostgresQuery(unsafeSQL: "ALTER ROLE \(role) SET synchronous_commit = off"), logger: Fixture.logger)
            defer { Task { _ = try? await admin.client.query(PostgresQuery(unsafeSQL: "DROP ROLE IF EXISTS \(role)"), logger: Fixture.logger); await admin.close() } }
            var components = try #require(URLComponents(string: schema.url()))
            components.user = role
            components.password = "pw"
            let url = try #require(components.string)

            // Without pipehook's own setting, this role's sessions would not wait for the flush.
            var plain = try PostgresLocation(url: url).client
            plain.options.additionalStartupParameters.removeAll { $0.0 == "synchronous_commit" }
            let bare = PostgresClient(configuration: plain, backgroundLogger: Fixture.logger)
            let seenBare = try await withThrowingTaskGroup(of: String?.self) { group in
                group.addTask { await bare.run(); return nil }
                let value = try await bare.query("SHOW synchronous_commit", logger: Fixture.logger).collect().first?.decode(String.self)
                group.cancelAll()
                return value
            }
            #expect(seenBare == "off", "the test role must really have it off")

            // The store's own sessions: on, as reported by the server inside its transactions.
            let store = try await PostgresStore.open(try PostgresLocation(url: url), logger: Fixture.logger)
            _ = try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued))
            let seen = try await store.client.withConnection { connection in
                try await connection.withTransaction(logger: Fixture.logger) { connection in
                    try await connection.query("SELECT current_setting('synchronous_commit')", logger: Fixture.logger).collect().first?.decode(String.self)
                }
            }
            #expect(seen == "on")
            // Prepared ingest statements are planned for each execution (PostgresStore's comment).
            let planning = try await store.client.withConnection { connection in
                try await connection.query("SHOW plan_cache_mode", logger: Fixture.logger).collect().first?.decode(String.self)
            }
            #expect(planning == "force_custom_plan")
            await store.close()
        }
    }

    /// No server, or a client that stopped: every call fails as `unavailable` (HTTP 503), and
    /// the error says why without quoting the URL.
    @Test func unreachableOrClosedStoreIsUnavailable() async throws {
        try await TestSchema.with { schema in
            let store = try await schema.open()
            await store.close()
            let error = await #expect(throws: StoreError.self) { try await store.ingest(Fixture.delivery(id: "m1", generation: "g1", status: .queued)) }
            #expect(error?.kind == .unavailable)
            #expect(await store.isWritable() == false)

            // A port nothing listens on: readiness answers false within its own deadline.
            let nowhere = try PostgresLocation(url: "postgres://pipehook:do-not-print@127.0.0.1:1/none")
            let unreachable = PostgresStore(location: nowhere, logger: Fixture.logger)
            await unreachable.startClient()
            let started = ContinuousClock.now
            #expect(await unreachable.isWritable() == false)
            #expect(ContinuousClock.now - started < .seconds(5))
            await unreachable.close()
            let failed = await #expect(throws: StoreError.self) { try await PostgresStore.open(nowhere, leaseTimeout: .seconds(1), logger: Fixture.logger) }
            #expect(failed?.kind == .unavailable && failed?.message.contains("do-not-print") == false)
        }
    }
}
