import Foundation
import PipehookStore
import PostgresNIO

/// Where the PostgreSQL store lives, read from `store: postgres://user:pass@host:port/db?…`.
///
/// Query parameters (all optional):
/// - `sslmode=disable|prefer|require|verify-full`, libpq's meanings: `require` encrypts without
///   checking the certificate, `verify-full` also checks it against the system's trust roots and
///   the host name. Default: `disable` for a loopback host or a Unix socket (nothing crosses a
///   network), `verify-full` otherwise, so a password never travels in clear or to an impostor by
///   accident.
/// - `host=/path/to/socket/dir`: connect through the Unix socket `.s.PGSQL.<port>` in that folder.
/// - `search_path=schema`: the schema pipehook's tables live in (several deployments, or tests,
///   can share one database). It must exist.
/// - `pool_max=N`: connections this process may open (default 20).
///
/// Errors never quote the URL: it carries the password.
public struct PostgresLocation: Sendable {
    public var client: PostgresClient.Configuration
    public var searchPath: String?
    /// The same server, user, database and TLS for one direct connection: `PostgresStore.open`
    /// tries it first, so that a wrong password, a missing database or schema, a TLS failure or
    /// a refused connection is named at once (the pool would only say it got no connection).
    public var probe: PostgresConnection.Configuration?

    public init(client: PostgresClient.Configuration, searchPath: String? = nil, probe: PostgresConnection.Configuration? = nil) {
        self.client = client
        self.searchPath = searchPath
        self.probe = probe
        if let searchPath {
            self.client.options.additionalStartupParameters.append(("search_path", searchPath))
            self.probe?.options.additionalStartupParameters.append(("search_path", searchPath))
        }
    }

    public init(url text: String) throws(StoreError) {
        func invalid(_ why: String) -> StoreError { StoreError(.invalid, "store: the postgres URL \(why)") }
        guard let components = URLComponents(string: text), let scheme = components.scheme,
              scheme == "postgres" || scheme == "postgresql"
        else { throw invalid("is not a valid postgres://user:password@host:port/database URL") }
        guard let user = components.user, !user.isEmpty else { throw invalid("names no user (postgres://USER:password@host/database)") }
        let port = components.port ?? 5432
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        guard !database.isEmpty, !database.contains("/") else { throw invalid("names no database (postgres://user:password@host/DATABASE)") }

        var parameters: [String: String] = [:]
        for item in components.queryItems ?? [] { parameters[item.name] = item.value ?? "" }
        let known: Set = ["sslmode", "host", "search_path", "pool_max"]
        if let unknown = parameters.keys.sorted().first(where: { !known.contains($0) }) {
            throw invalid("has an unknown parameter '\(unknown)' (known: \(known.sorted().joined(separator: ", ")))")
        }

        let socketDirectory = parameters["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        let host = components.host.map { $0.hasPrefix("[") ? String($0.dropFirst().dropLast()) : $0 } ?? ""
        if socketDirectory == nil, host.isEmpty { throw invalid("names no host (postgres://user:password@HOST/database)") }
        let local = socketDirectory != nil || ["localhost", "127.0.0.1", "::1"].contains(host.lowercased()) || host.hasPrefix("127.")

        let tls: PostgresClient.Configuration.TLS
        let probeTLS: PostgresConnection.Configuration.TLS
        switch parameters["sslmode"] ?? (local ? "disable" : "verify-full") {
        case "disable":
            tls = .disable
            probeTLS = .disable
        case "prefer", "allow":
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            tls = .prefer(configuration)
            probeTLS = .prefer(try Self.context(configuration))
        case "require":
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            tls = .require(configuration)
            probeTLS = .require(try Self.context(configuration))
        case "verify-ca", "verify-full":
            tls = .require(.makeClientConfiguration())
            probeTLS = .require(try Self.context(.makeClientConfiguration()))
        case let other: throw invalid("has sslmode=\(other); use disable, prefer, require or verify-full")
        }

        var client: PostgresClient.Configuration
        var probe: PostgresConnection.Configuration
        if let socketDirectory {
            client = PostgresClient.Configuration(
                unixSocketPath: socketDirectory + "/.s.PGSQL.\(port)", username: user, password: components.password, database: database
            )
            probe = PostgresConnection.Configuration(
                unixSocketPath: socketDirectory + "/.s.PGSQL.\(port)", username: user, password: components.password, database: database
            )
        } else {
            client = PostgresClient.Configuration(
                host: host, port: port, username: user, password: components.password, database: database, tls: tls
            )
            probe = PostgresConnection.Configuration(
                host: host, port: port, username: user, password: components.password, database: database, tls: probeTLS
            )
        }
        // A refused or unreachable server answers at once; a timeout is left to the pool.
        probe.options.connectTimeout = .seconds(5)
        if let text = parameters["pool_max"] {
            guard let count = Int(text), count >= 1 else { throw invalid("has pool_max=\(text); it must be a positive number") }
            client.options.maximumConnections = count
        }
        client.options.connectTimeout = .seconds(5)
        let searchPath = parameters["search_path"].flatMap { $0.isEmpty ? nil : $0 }
        self.init(client: client, searchPath: searchPath, probe: probe)
    }

    private static func context(_ configuration: TLSConfiguration) throws(StoreError) -> NIOSSLContext {
        do { return try NIOSSLContext(configuration: configuration) } catch {
            throw StoreError(.invalid, "store: cannot set up TLS for PostgreSQL: \(error)")
        }
    }
}

/// Never prints the password, whoever describes it (a log line, a debugger, ServiceLifecycle).
extension PostgresLocation: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        let target = client.unixSocketPath ?? "\(client.host ?? "?"):\(client.port ?? 5432)"
        let schema = searchPath.map { " search_path=\($0)" } ?? ""
        return "postgres://\(client.username):<redacted>@\(target)/\(client.database ?? "")\(schema)"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["location": description]) }
}
