import Foundation
import PipehookFormats
import PipehookLifecycle
import PipehookSignature
import Yams

/// One thing wrong with a configuration, located by its key path (`sources.pipevideo.tolerance`).
public struct ConfigProblem: Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Every problem found, not only the first, so one `check-config` run shows them all.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigProblem]
    public init(_ problems: [ConfigProblem]) { self.problems = problems }
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Turns YAML text into validated `Settings`. Values never appear in messages, since they may
/// be secrets substituted from the environment.
public enum SettingsParser {
    public static func parse(yaml text: String, environment: [String: String]) throws(ConfigError) -> Settings {
        try read(yaml: text, environment: environment) { reader, root in reader.settings(root) }
    }

    /// Only the keys that locate the store (`data_dir`, `store`, `store_timeout`), with their
    /// defaults: every other key, its problems and its `${VAR}`s are left unread.
    public static func parseStore(yaml text: String, environment: [String: String]) throws(ConfigError) -> StoreSettings {
        try read(yaml: text, environment: environment) { reader, root in reader.storeSettings(root) }
    }

    /// Composes the YAML and runs `section` over its root: the value, or every problem found.
    private static func read<Value>(
        yaml text: String, environment: [String: String], _ section: (inout Reader, Node) -> Value?
    ) throws(ConfigError) -> Value {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigError([ConfigProblem(path: "", message: "not valid YAML: \(describe(error))")])
        } catch {
            throw ConfigError([ConfigProblem(path: "", message: "not valid YAML")])
        }
        var reader = Reader(environment: environment)
        let value = section(&reader, root ?? Node.mapping(.init([])))
        if let value, reader.problems.isEmpty { return value }
        throw ConfigError(reader.problems.isEmpty ? [ConfigProblem(path: "", message: "invalid configuration")] : reader.problems)
    }

    /// Rebuilds the route a job was pinned to from its stored `definition`, with `${VAR}` taken
    /// from `environment` now (so a rotated secret applies to jobs already queued).
    /// A literal post secret is stored only as its fingerprint; `secrets` (fingerprint → text, from
    /// the routes configured now or seen since start) gives it back.
    public static func pinnedRoute(
        definition: String, environment: [String: String], secrets: [String: String] = [:]
    ) throws(ConfigError) -> Route {
        let root: Node?
        do { root = try Yams.compose(yaml: definition) } catch {
            throw ConfigError([ConfigProblem(path: "", message: "the stored route definition is not readable")])
        }
        var reader = Reader(environment: environment)
        reader.pinnedSecrets = secrets
        guard let root, let entries = reader.mapping(root, "", allowed: ["retry", "route"]) else {
            throw ConfigError(reader.problems.isEmpty ? [ConfigProblem(path: "", message: "the stored route definition is not a mapping")] : reader.problems)
        }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let retry = values["retry"].flatMap { reader.retryPolicy($0, "retry", base: .standard) } ?? .standard
        guard let node = values["route"], var route = reader.route(node, "route", globalRetry: retry), reader.problems.isEmpty else {
            throw ConfigError(reader.problems.isEmpty ? [ConfigProblem(path: "route", message: "missing")] : reader.problems)
        }
        route.definition = definition
        route.version = Reader.fingerprint(definition)
        route.literalSecrets = [:]
        return route
    }

    /// The configuration `serve` runs on when no file exists (SPEC §6).
    public static func builtInDefaults(secret: SigningSecret) -> Settings {
        let dataDir = Reader.defaultDataDir
        // Parsed like a file's route, so it is pinned the same way.
        var reader = Reader(environment: [:])
        let archive = reader.route(
            try! Yams.compose(yaml: """
                {name: archive, on: [completed], steps: [{download: {dir: "\(dataDir)/videos", path: "{yyyy}/{mm}/{generation_id}.{ext}", max_bytes: 4GiB, timeout: 60s}}]}
                """)!,
            "routes[0]", globalRetry: .standard
        )!
        return Settings(
            listen: ListenAddress(host: "127.0.0.1", port: 8787),
            dataDir: dataDir,
            store: .sqlite(path: "\(dataDir)/pipehook.sqlite"),
            maxBodyBytes: 1 << 20,
            dedupWindowSeconds: 7 * 86_400,
            retentionSeconds: 30 * 86_400,
            readTimeoutMilliseconds: 30_000,
            logFormat: .json,
            logLevel: .info,
            adminToken: nil,
            tls: nil,
            sources: [Source(name: "pipevideo", format: PipevideoFormat(), secrets: [secret], toleranceSeconds: 300)],
            api: nil,
            retry: .standard,
            routes: [archive]
        )
    }

    static func describe(_ error: YamlError) -> String {
        // Only the problem and position: YamlError's own description quotes the offending line.
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return "\(problem) at line \(mark.line), column \(mark.column)"
        case .reader(let problem, _, _, _):
            return problem
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicated keys \(duplicates.joined(separator: ", "))"
        default:
            return "unreadable document"
        }
    }
}

/// Walks the YAML tree, collecting problems with their key paths.
struct Reader {
    let environment: [String: String]
    var problems: [ConfigProblem] = []
    /// Fingerprint → secret text, for `secret-sha256:` placeholders in a pinned route.
    var pinnedSecrets: [String: String] = [:]

    init(environment: [String: String]) { self.environment = environment }

    mutating func problem(_ path: String, _ message: String) {
        problems.append(ConfigProblem(path: path, message: message))
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    // MARK: primitives

    /// The mapping's entries, reporting unknown keys against `allowed`.
    mutating func mapping(_ node: Node, _ path: String, allowed: Set<String>? = nil) -> [(String, Node)]? {
        guard case .mapping(let mapping) = node else {
            problem(path, "must be a mapping")
            return nil
        }
        var entries: [(String, Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let key) = keyNode else {
                problem(path, "keys must be plain strings")
                continue
            }
            if let allowed, !allowed.contains(key.string) {
                problem(Self.join(path, key.string), "unknown key (expected one of: \(allowed.sorted().joined(separator: ", ")))")
                continue
            }
            entries.append((key.string, value))
        }
        return entries
    }

    mutating func sequence(_ node: Node, _ path: String) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            problem(path, "must be a list")
            return nil
        }
        return Array(sequence)
    }

    /// A scalar with `${VAR}` substituted. `null`/`~` count as absent.
    mutating func string(_ node: Node, _ path: String) -> String? {
        guard case .scalar(let scalar) = node else {
            problem(path, "must be a single value, not a list or mapping")
            return nil
        }
        switch EnvSubstitution.apply(scalar.string, environment: environment) {
        case .success(let value): return value
        case .failure(.missing(let name)): problem(path, "environment variable \(name) is not set")
        case .failure(.unterminated): problem(path, "unterminated ${ in value")
        case .failure(.invalidName(let name)): problem(path, "invalid environment variable name '\(name)'")
        }
        return nil
    }

    mutating func nonEmptyString(_ node: Node, _ path: String) -> String? {
        guard let value = string(node, path) else { return nil }
        guard !value.isEmpty else {
            problem(path, "must not be empty")
            return nil
        }
        return value
    }

    mutating func int(_ node: Node, _ path: String, range: ClosedRange<Int>) -> Int? {
        guard let text = string(node, path) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            problem(path, "must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, _ path: String) -> Bool? {
        guard let text = string(node, path) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            problem(path, "must be true or false")
            return nil
        }
    }

    mutating func milliseconds(_ node: Node, _ path: String, minimum: Int64 = 0) -> Int64? {
        guard let text = string(node, path) else { return nil }
        guard let value = Units.milliseconds(text), value >= minimum else {
            problem(path, "must be a duration such as 30s, 5m, 2h or 7d\(minimum > 0 ? " (at least \(minimum) ms)" : "")")
            return nil
        }
        return value
    }

    mutating func seconds(_ node: Node, _ path: String, minimum: Int64 = 0) -> Int64? {
        guard let ms = milliseconds(node, path, minimum: minimum * 1000) else { return nil }
        return ms / 1000
    }

    mutating func bytes(_ node: Node, _ path: String, minimum: Int64 = 1) -> Int64? {
        guard let text = string(node, path) else { return nil }
        guard let value = Units.bytes(text), value >= minimum else {
            problem(path, "must be a size such as 1048576, 512KiB, 10MB or 4GiB (at least \(minimum) bytes)")
            return nil
        }
        return value
    }

    /// A secret written in place, or `file:/PATH`: that file's contents without surrounding
    /// whitespace, read whenever the configuration is (so `SIGHUP` picks up a rotated file, e.g.
    /// from systemd's `LoadCredential=`). A problem names the file, never what it holds.
    mutating func secretText(_ node: Node, _ path: String) -> String? {
        guard let text = nonEmptyString(node, path) else { return nil }
        guard text.hasPrefix(Self.filePrefix) else { return text }
        let file = String(text.dropFirst(Self.filePrefix.count))
        guard file.hasPrefix("/") else {
            problem(path, "file: needs an absolute path (file:/run/credentials/…)")
            return nil
        }
        // A regular file (through any symbolic links) of a secret's size: never a device or a FIFO
        // that would block the reload.
        var info = stat()
        if stat(file, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
            problem(path, "the secret file \(file) is not a regular file")
            return nil
        }
        guard let handle = FileHandle(forReadingAtPath: file), let data = try? handle.read(upToCount: Self.maxSecretFileBytes + 1) ?? Data() else {
            problem(path, "cannot read the secret file \(file) (missing or not readable by this user)")
            return nil
        }
        try? handle.close()
        guard data.count <= Self.maxSecretFileBytes else {
            problem(path, "the secret file \(file) is larger than \(Self.maxSecretFileBytes) bytes")
            return nil
        }
        guard let contents = String(data: data, encoding: .utf8) else {
            problem(path, "the secret file \(file) is not UTF-8 text")
            return nil
        }
        let secret = contents.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !secret.isEmpty else {
            problem(path, "the secret file \(file) is empty")
            return nil
        }
        return secret
    }

    static let filePrefix = "file:"
    static let maxSecretFileBytes = 65_536

    /// A list of non-empty strings; with `secrets`, each item read as `secretText`.
    mutating func stringList(_ node: Node, _ path: String, secrets: Bool = false) -> [String]? {
        guard let items = sequence(node, path) else { return nil }
        var out: [String] = []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            if let value = secrets ? secretText(item, itemPath) : nonEmptyString(item, itemPath) { out.append(value) }
        }
        return out.count == items.count ? out : nil
    }

    // MARK: sections

    /// The store's keys read as `settings` reads them (one definition of their defaults).
    mutating func storeSettings(_ root: Node) -> StoreSettings? {
        guard let entries = mapping(root, "") else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let dataDir = values["data_dir"].flatMap { nonEmptyString($0, "data_dir") } ?? Self.defaultDataDir
        let store = values["store"].map { storeLocation($0, "store") } ?? .sqlite(path: "\(dataDir)/pipehook.sqlite")
        let storeTimeout = values["store_timeout"].map { milliseconds($0, "store_timeout", minimum: 100) } ?? 5_000
        if let storeTimeout, storeTimeout > 60_000 { problem("store_timeout", "must be at most 60s") }
        guard let store, let storeTimeout else { return nil }
        return StoreSettings(dataDir: dataDir, store: store, storeTimeoutMilliseconds: storeTimeout)
    }

    static let defaultDataDir = "./pipehook-data"

    mutating func settings(_ root: Node) -> Settings? {
        let top: Set<String> = [
            "listen", "data_dir", "store", "max_body_bytes", "dedup_window", "retention", "read_timeout",
            "log_format", "log_level", "admin_token", "tls", "sources", "api", "retry", "routes", "lease",
            "max_connections", "store_timeout", "gateway",
        ]
        guard let entries = mapping(root, "", allowed: top) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })

        let listen = values["listen"].map { listenAddress($0, "listen") } ?? ListenAddress(host: "127.0.0.1", port: 8787)
        let located = storeSettings(root)
        let maxBody = values["max_body_bytes"].map { bytes($0, "max_body_bytes").map(Int.init) } ?? (1 << 20)
        if let maxBody, maxBody > 64 << 20 { problem("max_body_bytes", "must be at most 64MiB") }
        let dedup = values["dedup_window"].map { seconds($0, "dedup_window", minimum: 60) } ?? 7 * 86_400
        let retention = values["retention"].map { seconds($0, "retention", minimum: 60) } ?? 30 * 86_400
        let readTimeout = values["read_timeout"].map { milliseconds($0, "read_timeout", minimum: 100) } ?? 30_000
        let logFormat = values["log_format"].map { enumValue($0, "log_format", LogFormat.self) } ?? .json
        let logLevel = values["log_level"].map { enumValue($0, "log_level", LogLevel.self) } ?? .info
        let adminToken = values["admin_token"].flatMap { secretText($0, "admin_token") }
        if let adminToken, adminToken.utf8.count < 16 { problem("admin_token", "must be at least 16 characters") }
        let tls = values["tls"].flatMap { tlsFiles($0, "tls") }
        let sources = values["sources"].map { sourceList($0, "sources") } ?? []
        if values["sources"] == nil { problem("sources", "at least one source is required") }
        let api = values["api"].flatMap { apiSettings($0, "api") }
        if values["api"] != nil, let sources, !sources.contains(where: { $0.format.name == PipevideoFormat().name }) {
            problem("api", "needs a source with format pipevideo: the API only knows Pipevideo generations")
        }
        let retry = values["retry"].map { retryPolicy($0, "retry", base: .standard) } ?? .standard
        let routes = values["routes"].map { routeList($0, "routes", globalRetry: retry ?? .standard) } ?? []
        let lease = values["lease"].map { milliseconds($0, "lease", minimum: 1_000) } ?? 60_000
        let maxConnections = values["max_connections"].map { int($0, "max_connections", range: 1...1_000_000) } ?? 2048
        let gatewayTokens = values["gateway"].map { gatewayTokenList($0, "gateway") } ?? []
        if values["gateway"] != nil, api == nil, values["api"] == nil {
            problem("gateway", "needs the `api` section: the gateway creates and cancels through the Pipevideo API")
        }

        guard let listen, let located, let maxBody, let dedup, let retention, let readTimeout, let logFormat,
              let logLevel, let sources, let retry, let routes, let lease, let maxConnections, let gatewayTokens
        else { return nil }
        var settings = Settings(
            listen: listen, dataDir: located.dataDir, store: located.store, maxBodyBytes: maxBody,
            dedupWindowSeconds: dedup, retentionSeconds: retention, readTimeoutMilliseconds: readTimeout,
            logFormat: logFormat, logLevel: logLevel, adminToken: adminToken, tls: tls, sources: sources,
            api: api, retry: retry, leaseMilliseconds: lease, maxConnections: maxConnections,
            storeTimeoutMilliseconds: located.storeTimeoutMilliseconds, routes: routes
        )
        settings.gatewayTokens = gatewayTokens
        return settings
    }

    /// `gateway: {tokens: [...]}`: each at least 16 characters, like `admin_token`.
    mutating func gatewayTokenList(_ node: Node, _ path: String) -> [String]? {
        guard let entries = mapping(node, path, allowed: ["tokens"]) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let tokensPath = Self.join(path, "tokens")
        guard let node = values["tokens"] else {
            problem(tokensPath, "is required (Bearer tokens of the applications that may use the gateway)")
            return nil
        }
        guard let tokens = stringList(node, tokensPath, secrets: true) else { return nil }
        var ok = true
        for (index, token) in tokens.enumerated() where token.utf8.count < 16 {
            problem("\(tokensPath)[\(index)]", "must be at least 16 characters")
            ok = false
        }
        return ok ? tokens : nil
    }

    mutating func enumValue<E: RawRepresentable & CaseIterable>(_ node: Node, _ path: String, _: E.Type) -> E?
    where E.RawValue == String {
        guard let text = string(node, path) else { return nil }
        guard let value = E(rawValue: text) else {
            problem(path, "must be one of: \(E.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return value
    }

    mutating func listenAddress(_ node: Node, _ path: String) -> ListenAddress? {
        guard let text = nonEmptyString(node, path) else { return nil }
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                problem(path, "must be HOST:PORT, e.g. 127.0.0.1:8787 or [::1]:8787")
                return nil
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                problem(path, "must be HOST:PORT, e.g. 127.0.0.1:8787")
                return nil
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        if host.isEmpty { host = "0.0.0.0" }
        guard let port = Int(portText), (0...65535).contains(port) else {
            problem(path, "port must be a number from 0 to 65535")
            return nil
        }
        return ListenAddress(host: String(host), port: port)
    }

    mutating func storeLocation(_ node: Node, _ path: String) -> StoreLocation? {
        guard let text = nonEmptyString(node, path) else { return nil }
        if text.hasPrefix("sqlite:") {
            let file = String(text.dropFirst("sqlite:".count))
            guard !file.isEmpty else {
                problem(path, "sqlite: needs a file path, e.g. sqlite:./pipehook-data/pipehook.sqlite")
                return nil
            }
            return .sqlite(path: file)
        }
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            return .postgres(url: text)
        }
        problem(path, "must start with sqlite: or postgres://")
        return nil
    }

    mutating func tlsFiles(_ node: Node, _ path: String) -> TLSFiles? {
        guard let entries = mapping(node, path, allowed: ["cert", "key"]) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let cert = values["cert"].flatMap { nonEmptyString($0, Self.join(path, "cert")) }
        let key = values["key"].flatMap { nonEmptyString($0, Self.join(path, "key")) }
        if values["cert"] == nil { problem(Self.join(path, "cert"), "is required") }
        if values["key"] == nil { problem(Self.join(path, "key"), "is required") }
        guard let cert, let key else { return nil }
        return TLSFiles(certificatePath: cert, keyPath: key)
    }

    mutating func sourceList(_ node: Node, _ path: String) -> [Source]? {
        guard let entries = mapping(node, path) else { return nil }
        if entries.isEmpty { problem(path, "at least one source is required") }
        var sources: [Source] = []
        var failed = false
        for (name, value) in entries {
            let sourcePath = Self.join(path, name)
            if !Self.isValidName(name) {
                problem(sourcePath, "source names may use only letters, digits, '-' and '_' (they appear in the URL)")
                failed = true
                continue
            }
            if let source = source(name: name, value, sourcePath) { sources.append(source) } else { failed = true }
        }
        return failed ? nil : sources
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }
    }

    mutating func source(name: String, _ node: Node, _ path: String) -> Source? {
        guard let entries = mapping(node, path, allowed: ["format", "secrets", "tolerance"]) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        var format: (any EventFormat)? = PipevideoFormat()
        if let node = values["format"], let formatName = string(node, Self.join(path, "format")) {
            format = EventFormats.named(formatName)
            if format == nil {
                problem(Self.join(path, "format"), "unknown format (known: \(EventFormats.names.joined(separator: ", ")))")
            }
        }
        var secrets: [SigningSecret]?
        let secretsPath = Self.join(path, "secrets")
        if let node = values["secrets"], let texts = stringList(node, secretsPath, secrets: true) {
            if texts.isEmpty { problem(secretsPath, "at least one secret is required") }
            var parsed: [SigningSecret] = []
            for (index, text) in texts.enumerated() {
                do {
                    parsed.append(try SigningSecret(text))
                } catch {
                    problem("\(secretsPath)[\(index)]", "is not a whsec_ secret (base64 after the whsec_ prefix)")
                }
            }
            if parsed.count == texts.count, !parsed.isEmpty { secrets = parsed }
        } else if values["secrets"] == nil {
            problem(secretsPath, "is required (the endpoint's signing secret, whsec_…)")
        }
        let tolerance = values["tolerance"].map { seconds($0, Self.join(path, "tolerance"), minimum: 1) } ?? 300
        guard let format, let secrets, let tolerance else { return nil }
        return Source(name: name, format: format, secrets: secrets, toleranceSeconds: tolerance)
    }

    mutating func apiSettings(_ node: Node, _ path: String) -> API? {
        guard let entries = mapping(node, path, allowed: ["base_url", "key", "requests_per_minute", "poll_after", "defaults"]) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let baseURL = values["base_url"].flatMap { nonEmptyString($0, Self.join(path, "base_url")) } ?? "https://api.pipevideo.co"
        if !(baseURL.hasPrefix("https://") || baseURL.hasPrefix("http://")) {
            problem(Self.join(path, "base_url"), "must be an http:// or https:// URL")
        }
        let key = values["key"].flatMap { secretText($0, Self.join(path, "key")) }
        if values["key"] == nil { problem(Self.join(path, "key"), "is required (a pv_… API key)") }
        let rpm = values["requests_per_minute"].map { int($0, Self.join(path, "requests_per_minute"), range: 1...100_000) } ?? 100
        let pollAfter = values["poll_after"].map { seconds($0, Self.join(path, "poll_after"), minimum: 1) } ?? 600
        let defaults = values["defaults"].map { createDefaults($0, Self.join(path, "defaults")) } ?? CreateDefaults()
        guard let key, let rpm, let pollAfter, let defaults else { return nil }
        return API(baseURL: baseURL, key: key, requestsPerMinute: rpm, pollAfterSeconds: pollAfter, defaults: defaults)
    }

    mutating func createDefaults(_ node: Node, _ path: String) -> CreateDefaults? {
        guard let entries = mapping(node, path, allowed: ["model", "engine"]) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        var defaults = CreateDefaults()
        if let node = values["model"] {
            guard let model = nonEmptyString(node, Self.join(path, "model")) else { return nil }
            defaults.model = model
        }
        if let node = values["engine"] {
            guard let engine = nonEmptyString(node, Self.join(path, "engine")) else { return nil }
            guard CreateRequest.engines.contains(engine) else {
                problem(Self.join(path, "engine"), "must be one of \(CreateRequest.engines.joined(separator: ", ")), not \(engine)")
                return nil
            }
            defaults.engine = engine
        }
        return defaults
    }

    mutating func retryPolicy(_ node: Node, _ path: String, base: RetryPolicy) -> RetryPolicy? {
        guard let entries = mapping(node, path, allowed: ["attempts", "initial_delay", "max_delay"]) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let attempts = values["attempts"].map { int($0, Self.join(path, "attempts"), range: 1...1000) } ?? base.attempts
        let initial = values["initial_delay"].map { milliseconds($0, Self.join(path, "initial_delay")) } ?? base.initialDelayMilliseconds
        let maximum = values["max_delay"].map { milliseconds($0, Self.join(path, "max_delay")) } ?? base.maxDelayMilliseconds
        guard let attempts, let initial, let maximum else { return nil }
        if maximum < initial {
            problem(Self.join(path, "max_delay"), "must not be shorter than initial_delay")
            return nil
        }
        return RetryPolicy(attempts: attempts, initialDelayMilliseconds: initial, maxDelayMilliseconds: maximum)
    }

    mutating func routeList(_ node: Node, _ path: String, globalRetry: RetryPolicy) -> [Route]? {
        guard let items = sequence(node, path) else { return nil }
        var routes: [Route] = []
        var names: Set<String> = []
        var failed = false
        for (index, item) in items.enumerated() {
            let routePath = "\(path)[\(index)]"
            // The name is checked for duplicates even when the rest of the route has problems:
            // one run of check-config shows them all.
            if case .mapping(let mapping) = item, let nameNode = mapping["name"], case .scalar(let scalar) = nameNode,
               !names.insert(scalar.string).inserted
            {
                problem(Self.join(routePath, "name"), "duplicate route name")
                failed = true
            }
            guard let route = route(item, routePath, globalRetry: globalRetry) else {
                failed = true
                continue
            }
            routes.append(route)
        }
        return failed ? nil : routes
    }

    mutating func route(_ node: Node, _ path: String, globalRetry: RetryPolicy) -> Route? {
        guard let entries = mapping(node, path, allowed: ["name", "on", "steps"]) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let name = values["name"].flatMap { nonEmptyString($0, Self.join(path, "name")) }
        if values["name"] == nil { problem(Self.join(path, "name"), "is required") }
        if let name, !Self.isValidName(name) {
            problem(Self.join(path, "name"), "may use only letters, digits, '-' and '_'")
        }
        var statuses: Set<GenerationStatus>?
        let onPath = Self.join(path, "on")
        if let node = values["on"], let words = stringList(node, onPath) {
            var set: Set<GenerationStatus> = []
            for (index, word) in words.enumerated() {
                if let status = GenerationStatus(rawValue: word) {
                    set.insert(status)
                } else {
                    problem("\(onPath)[\(index)]", "unknown status (expected: \(GenerationStatus.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
            }
            if words.isEmpty { problem(onPath, "must list at least one status") }
            if set.count == words.count, !set.isEmpty { statuses = set }
        } else if values["on"] == nil {
            problem(onPath, "is required (the statuses that start this route)")
        }
        var steps: [Step]?
        let stepsPath = Self.join(path, "steps")
        if let node = values["steps"], let items = sequence(node, stepsPath) {
            if items.isEmpty { problem(stepsPath, "must have at least one step") }
            let parsed = items.enumerated().compactMap { step($0.element, "\(stepsPath)[\($0.offset)]", globalRetry: globalRetry) }
            if parsed.count == items.count, !parsed.isEmpty { steps = parsed }
        } else if values["steps"] == nil {
            problem(stepsPath, "is required")
        }
        guard let name, Self.isValidName(name), let statuses, let steps else { return nil }
        var secrets: [String: String] = [:]
        let definition = Self.pinDefinition(route: node, globalRetry: globalRetry, secrets: &secrets)
        return Route(
            name: name, on: statuses, steps: steps, definition: definition, version: Self.fingerprint(definition),
            literalSecrets: secrets
        )
    }

    static let secretPlaceholder = "secret-sha256:"

    /// `{"retry":{…the global policy in force…},"route":{…as written…}}`, keys sorted, every
    /// scalar as its unexpanded text: the same route text always gives the same version. A
    /// `secret` written literally is replaced by its fingerprint (collected into `secrets`), so a
    /// stored definition never holds a secret value; `${VAR}` and `file:` references stay as they are.
    static func pinDefinition(route node: Node, globalRetry: RetryPolicy, secrets: inout [String: String]) -> String {
        let retry = #"{"attempts":"\#(globalRetry.attempts)","initial_delay":"\#(globalRetry.initialDelayMilliseconds)ms","max_delay":"\#(globalRetry.maxDelayMilliseconds)ms"}"#
        return #"{"retry":"# + retry + #","route":"# + canonicalJSON(node, secrets: &secrets) + "}"
    }

    static func canonicalJSON(_ node: Node, key: String? = nil, secrets: inout [String: String]) -> String {
        switch node {
        case .scalar(let scalar):
            let text = scalar.string
            if key == "secret", !text.contains("${"), !text.hasPrefix("file:"), !text.hasPrefix(secretPlaceholder) {
                let hash = fingerprint(text)
                secrets[hash] = text
                return JSONText.quote(secretPlaceholder + hash)
            }
            return JSONText.quote(text)
        case .sequence(let sequence):
            var items: [String] = []
            for item in sequence { items.append(canonicalJSON(item, secrets: &secrets)) }
            return "[" + items.joined(separator: ",") + "]"
        case .mapping(let mapping):
            var pairs: [(String, String)] = []
            for (keyNode, value) in mapping {
                let name: String
                if case .scalar(let scalar) = keyNode { name = scalar.string } else { name = canonicalJSON(keyNode, secrets: &secrets) }
                pairs.append((name, canonicalJSON(value, key: name, secrets: &secrets)))
            }
            pairs.sort { $0.0 < $1.0 }
            return "{" + pairs.map { JSONText.quote($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
        case .alias(let alias): return JSONText.quote(alias.anchor.rawValue)
        }
    }

    static func fingerprint(_ definition: String) -> String {
        let bytes = Array(definition.utf8)
        return bytes.withUnsafeBytes { Crypto.sha256($0) }.hexString
    }

    mutating func step(_ node: Node, _ path: String, globalRetry: RetryPolicy) -> Step? {
        guard let entries = mapping(node, path, allowed: ["exec", "download", "post"]) else { return nil }
        guard entries.count == 1, let (kind, body) = entries.first else {
            problem(path, "a step has exactly one of exec, download or post")
            return nil
        }
        let bodyPath = Self.join(path, kind)
        switch kind {
        case "exec": return execStep(body, bodyPath, globalRetry: globalRetry)
        case "download": return downloadStep(body, bodyPath, globalRetry: globalRetry)
        default: return postStep(body, bodyPath, globalRetry: globalRetry)
        }
    }

    mutating func stepRetry(_ values: [String: Node], _ path: String, globalRetry: RetryPolicy) -> RetryPolicy? {
        values["retry"].map { retryPolicy($0, Self.join(path, "retry"), base: globalRetry) } ?? globalRetry
    }

    mutating func execStep(_ node: Node, _ path: String, globalRetry: RetryPolicy) -> Step? {
        let allowed: Set<String> = ["command", "timeout", "env", "permanent_exit_codes", "concurrency", "retry"]
        guard let entries = mapping(node, path, allowed: allowed) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let command = values["command"].flatMap { stringList($0, Self.join(path, "command")) }
        if values["command"] == nil { problem(Self.join(path, "command"), "is required (an argv list, e.g. [\"./handlers/publish.sh\"])") }
        if let command, command.isEmpty { problem(Self.join(path, "command"), "must not be empty") }
        let timeout = values["timeout"].map { milliseconds($0, Self.join(path, "timeout"), minimum: 1) } ?? 300_000
        var environment: [String: String]? = [:]
        if let node = values["env"], let envEntries = mapping(node, Self.join(path, "env")) {
            for (name, value) in envEntries {
                let envPath = Self.join(Self.join(path, "env"), name)
                if !EnvSubstitution.isValidName(name) { problem(envPath, "is not a valid variable name"); environment = nil }
                if name.hasPrefix("PIPEHOOK_") { problem(envPath, "PIPEHOOK_ variables are set by pipehook"); environment = nil }
                if let text = string(value, envPath) { environment?[name] = text } else { environment = nil }
            }
        } else if values["env"] != nil {
            environment = nil
        }
        var codes: Set<Int32>? = []
        if let node = values["permanent_exit_codes"], let items = sequence(node, Self.join(path, "permanent_exit_codes")) {
            for (index, item) in items.enumerated() {
                if let code = int(item, "\(Self.join(path, "permanent_exit_codes"))[\(index)]", range: 1...255) {
                    codes?.insert(Int32(code))
                } else {
                    codes = nil
                }
            }
        } else if values["permanent_exit_codes"] != nil {
            codes = nil
        }
        var concurrency: Int?? = .some(nil)
        if let node = values["concurrency"] {
            concurrency = int(node, Self.join(path, "concurrency"), range: 1...1024).map { .some($0) }
        }
        let retry = stepRetry(values, path, globalRetry: globalRetry)
        guard let command, !command.isEmpty, let timeout, let environment, let codes, let concurrency, let retry else { return nil }
        return Step(
            action: .exec(ExecStep(
                command: command, timeoutMilliseconds: timeout, environment: environment,
                permanentExitCodes: codes, concurrency: concurrency
            )),
            retry: retry
        )
    }

    mutating func downloadStep(_ node: Node, _ path: String, globalRetry: RetryPolicy) -> Step? {
        let allowed: Set<String> = ["dir", "path", "max_bytes", "allow_http", "timeout", "retry"]
        guard let entries = mapping(node, path, allowed: allowed) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let dir = values["dir"].flatMap { nonEmptyString($0, Self.join(path, "dir")) }
        if values["dir"] == nil { problem(Self.join(path, "dir"), "is required (the archive folder)") }
        var template: PathTemplate?
        let templatePath = Self.join(path, "path")
        if let text = values["path"].flatMap({ nonEmptyString($0, templatePath) }) ?? (values["path"] == nil ? "{generation_id}.{ext}" : nil) {
            do {
                template = try PathTemplate(text)
            } catch .unknownPlaceholder(let name) {
                problem(templatePath, "unknown placeholder {\(name)} (known: \(PathTemplate.placeholders.sorted().map { "{\($0)}" }.joined(separator: ", ")))")
            } catch .absolute {
                problem(templatePath, "must be relative to dir")
            } catch {
                problem(templatePath, "has an unbalanced { or }")
            }
        }
        let maxBytes = values["max_bytes"].map { bytes($0, Self.join(path, "max_bytes")) } ?? (4 << 30)
        let allowHTTP = values["allow_http"].map { bool($0, Self.join(path, "allow_http")) } ?? false
        let timeout = values["timeout"].map { milliseconds($0, Self.join(path, "timeout"), minimum: 100) } ?? 60_000
        let retry = stepRetry(values, path, globalRetry: globalRetry)
        guard let dir, let template, let maxBytes, let allowHTTP, let timeout, let retry else { return nil }
        return Step(
            action: .download(DownloadStep(
                directory: dir, pathTemplate: template, maxBytes: maxBytes, allowHTTP: allowHTTP,
                timeoutMilliseconds: timeout
            )),
            retry: retry
        )
    }

    mutating func postStep(_ node: Node, _ path: String, globalRetry: RetryPolicy) -> Step? {
        let allowed: Set<String> = ["url", "secret", "body", "timeout", "retry"]
        guard let entries = mapping(node, path, allowed: allowed) else { return nil }
        let values = Dictionary(entries, uniquingKeysWith: { first, _ in first })
        let url = values["url"].flatMap { nonEmptyString($0, Self.join(path, "url")) }
        if values["url"] == nil { problem(Self.join(path, "url"), "is required") }
        if let url, !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
            problem(Self.join(path, "url"), "must be an http:// or https:// URL")
        }
        var secret: SigningSecret?? = .some(nil)
        if let node = values["secret"] {
            secret = nil
            if var text = secretText(node, Self.join(path, "secret")) {
                if text.hasPrefix(Self.secretPlaceholder) {
                    guard let known = pinnedSecrets[String(text.dropFirst(Self.secretPlaceholder.count))] else {
                        problem(Self.join(path, "secret"), "the secret this route version was created with is no longer configured (rotated?); `pipehook replay EVENT_ID` runs the route as configured now")
                        return nil
                    }
                    text = known
                }
                do { secret = .some(try SigningSecret(text)) } catch {
                    problem(Self.join(path, "secret"), "is not a whsec_ secret (base64 after the whsec_ prefix)")
                }
            }
        }
        let body = values["body"].map { enumValue($0, Self.join(path, "body"), PostStep.Body.self) } ?? .event
        let timeout = values["timeout"].map { milliseconds($0, Self.join(path, "timeout"), minimum: 100) } ?? 30_000
        let retry = stepRetry(values, path, globalRetry: globalRetry)
        guard let url, url.hasPrefix("http"), let secret, let body, let timeout, let retry else { return nil }
        return Step(action: .post(PostStep(url: url, secret: secret, body: body, timeoutMilliseconds: timeout)), retry: retry)
    }
}
