import Foundation
import PipehookSettings
import PipehookSignature

/// `pipehook config`: the configuration in force, with every default filled in (the built-in
/// defaults' route included) and every secret replaced by `<redacted sha256:…>` — the first 8 hex
/// digits of its SHA-256, enough to tell which secret is loaded during a rotation, never enough
/// to recover it.
public enum EffectiveConfiguration {
    public static func document(_ loaded: SettingsLoader.Loaded) -> String {
        let settings = loaded.settings
        var root: [String: Any] = [:]
        switch loaded.origin {
        case .file(let path): root["origin"] = path
        case .builtInDefaults(let secretFrom, _): root["origin"] = "built-in defaults (secret from \(secretFrom))"
        }
        root["listen"] = settings.listen.description
        root["data_dir"] = settings.dataDir
        switch settings.store {
        case .sqlite(let path): root["store"] = "sqlite:" + path
        case .postgres(let url): root["store"] = redactedURL(url)
        }
        root["max_body_bytes"] = settings.maxBodyBytes
        root["dedup_window"] = seconds(settings.dedupWindowSeconds)
        root["retention"] = seconds(settings.retentionSeconds)
        root["read_timeout"] = milliseconds(settings.readTimeoutMilliseconds)
        root["store_timeout"] = milliseconds(settings.storeTimeoutMilliseconds)
        root["lease"] = milliseconds(settings.leaseMilliseconds)
        root["max_connections"] = settings.maxConnections
        root["log_format"] = settings.logFormat.rawValue
        root["log_level"] = settings.logLevel.rawValue
        root["admin_token"] = settings.adminToken.map(redacted) ?? NSNull()
        root["tls"] = settings.tls.map { ["cert": $0.certificatePath, "key": $0.keyPath] } ?? NSNull()
        var sources: [String: Any] = [:]
        for source in settings.sources {
            sources[source.name] = [
                "format": source.format.name,
                "secrets": source.secrets.map { redacted($0.key) },
                "tolerance": seconds(source.toleranceSeconds),
            ] as [String: Any]
        }
        root["sources"] = sources
        if let api = settings.api {
            root["api"] = [
                "base_url": redactedURL(api.baseURL), "key": redacted(api.key),
                "requests_per_minute": api.requestsPerMinute, "poll_after": seconds(api.pollAfterSeconds),
                "defaults": ["model": api.defaults.model ?? NSNull(), "engine": api.defaults.engine ?? NSNull()] as [String: Any],
            ] as [String: Any]
        } else {
            root["api"] = NSNull()
        }
        root["gateway"] = ["tokens": settings.gatewayTokens.map(redacted)]
        root["retry"] = retry(settings.retry)
        root["routes"] = settings.routes.map(route)
        let data = (try? JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    static func route(_ route: Route) -> [String: Any] {
        [
            "name": route.name,
            "on": route.on.map(\.rawValue).sorted(),
            // What `status` and `jobs` show as the route version a job runs.
            "version": String(route.version.prefix(12)),
            "steps": route.steps.map(step),
        ]
    }

    static func step(_ step: Step) -> [String: Any] {
        var body: [String: Any] = ["retry": retry(step.retry)]
        let kind: String
        switch step.action {
        case .exec(let exec):
            kind = "exec"
            body["command"] = exec.command
            body["timeout"] = milliseconds(exec.timeoutMilliseconds)
            // A value may be a secret substituted from the environment: names only.
            body["env"] = Dictionary(uniqueKeysWithValues: exec.environment.keys.map { ($0, "<redacted>") })
            body["permanent_exit_codes"] = exec.permanentExitCodes.sorted().map(Int.init)
            body["concurrency"] = exec.concurrency ?? NSNull()
        case .download(let download):
            kind = "download"
            body["dir"] = download.directory
            body["path"] = download.pathTemplate.text
            body["max_bytes"] = download.maxBytes
            body["allow_http"] = download.allowHTTP
            body["timeout"] = milliseconds(download.timeoutMilliseconds)
        case .post(let post):
            kind = "post"
            body["url"] = redactedURL(post.url)
            body["secret"] = post.secret.map { redacted($0.key) } ?? NSNull()
            body["body"] = post.body.rawValue
            body["timeout"] = milliseconds(post.timeoutMilliseconds)
        }
        return [kind: body]
    }

    static func retry(_ policy: RetryPolicy) -> [String: Any] {
        [
            "attempts": policy.attempts, "initial_delay": milliseconds(policy.initialDelayMilliseconds),
            "max_delay": milliseconds(policy.maxDelayMilliseconds),
        ]
    }

    static func redacted(_ text: String) -> String { redacted(Array(text.utf8)) }

    static func redacted(_ bytes: [UInt8]) -> String {
        let digest = bytes.withUnsafeBytes { Crypto.sha256($0) }.hexString
        return "<redacted sha256:\(digest.prefix(8))>"
    }

    /// A URL with its password and query (where tokens travel) redacted.
    static func redactedURL(_ text: String) -> String {
        guard var components = URLComponents(string: text) else { return "<redacted: not a URL>" }
        if components.password != nil { components.password = "redacted" }
        if components.query != nil { components.query = "redacted" }
        return components.string ?? "<redacted>"
    }

    static func seconds(_ value: Int64) -> String { "\(value)s" }
    static func milliseconds(_ value: Int64) -> String { value % 1_000 == 0 ? "\(value / 1_000)s" : "\(value)ms" }
}
