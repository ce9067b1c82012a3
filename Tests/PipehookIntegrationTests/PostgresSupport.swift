import Foundation
import Logging
import PipehookPostgres
import PipehookStore
import PostgresNIO
import Testing

/// The PostgreSQL the tests run against: `PIPEHOOK_TEST_POSTGRES_URL`, e.g.
/// `postgres://pipehook:pipehook@127.0.0.1:5432/pipehook_test`. Unset, the PostgreSQL suites are
/// skipped locally and fail on CI (`CI` set), where `.ci/run` starts a server.
enum PostgresTestDatabase {
    static let url: String? = ProcessInfo.processInfo.environment["PIPEHOOK_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    static let onCI: Bool = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty && $0 != "false" && $0 != "0" } ?? false
    static let note: Comment = "PIPEHOOK_TEST_POSTGRES_URL is not set: PostgreSQL store tests skipped (see .ci/run to start a server)"
}

@Suite struct PostgresTestSetup {
    /// On CI a missing database must not pass as "nothing to test".
    @Test(.enabled(if: PostgresTestDatabase.url == nil && PostgresTestDatabase.onCI))
    func postgresIsConfiguredOnCI() {
        Issue.record("CI is set but PIPEHOOK_TEST_POSTGRES_URL is not: the PostgreSQL store tests cannot run. .ci/run must start PostgreSQL and export it.")
    }
}

/// A fresh schema of the test database per test, so tests run in parallel without seeing each
/// other; dropped at the end. Stores opened on it find their tables there through `search_path`.
struct TestSchema {
    let name: String
    let base: String

    /// The URL of this schema: the test database's with `search_path` (and a small pool, so that
    /// parallel tests stay well under the server's `max_connections`).
    func url(poolMax: Int = 6) -> String {
        base + (base.contains("?") ? "&" : "?") + "search_path=\(name)&pool_max=\(poolMax)"
    }

    /// Short timeouts: a test about a dead instance must not wait a minute for it.
    func open(poolMax: Int = 6, migrate: Bool = true, logger: Logger = Fixture.logger) async throws -> PostgresStore {
        try await PostgresStore.open(
            try PostgresLocation(url: url(poolMax: poolMax)), migrate: migrate, leaseTimeout: .seconds(10), answerTimeout: .seconds(20),
            logger: logger
        )
    }

    static func with<T: Sendable>(_ body: (TestSchema) async throws -> T) async throws -> T {
        let base = try #require(PostgresTestDatabase.url)
        let schema = TestSchema(name: "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased(), base: base)
        try await admin(base) { "CREATE SCHEMA \(unescaped: schema.name)" }
        do {
            let value = try await body(schema)
            try await admin(base) { "DROP SCHEMA \(unescaped: schema.name) CASCADE" }
            return value
        } catch {
            try? await admin(base) { "DROP SCHEMA \(unescaped: schema.name) CASCADE" }
            throw error
        }
    }

    private static func admin(_ base: String, _ query: () -> PostgresQuery) async throws {
        let query = query()
        _ = try await PostgresStore.withStore(try PostgresLocation(url: base), migrate: false, logger: Fixture.logger) { store in
            try await store.client.query(query, logger: Fixture.logger).collect().count
        }
    }
}
