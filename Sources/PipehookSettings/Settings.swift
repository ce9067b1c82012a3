import PipehookFormats
import PipehookLifecycle
import PipehookSignature

/// The whole validated configuration (SPEC §6). Built only by `SettingsParser` or
/// `Settings.builtInDefaults`, so every value here has already been checked.
public struct Settings: Sendable {
    public var listen: ListenAddress
    public var dataDir: String
    public var store: StoreLocation
    public var maxBodyBytes: Int
    public var dedupWindowSeconds: Int64
    /// How long timelines and finished jobs are kept (dead jobs stay until pruned explicitly).
    public var retentionSeconds: Int64
    /// A request whose headers or body stall longer than this is cut off.
    public var readTimeoutMilliseconds: Int64
    public var logFormat: LogFormat
    public var logLevel: LogLevel
    public var adminToken: String?
    public var tls: TLSFiles?
    public var sources: [Source]
    public var api: API?
    public var retry: RetryPolicy
    /// How long a job's lease lasts; renewed while a step runs (SPEC §3.5).
    public var leaseMilliseconds: Int64 = 60_000
    /// Connections served at once; one more is answered 503 `overloaded` and closed.
    public var maxConnections = 2048
    /// The longest a request waits for the store (queued behind others or for a lock): then 503.
    public var storeTimeoutMilliseconds: Int64 = 5_000
    /// `gateway.tokens`: Bearer tokens of applications allowed to use the Responses-compatible
    /// gateway (`/v1/responses`) besides `admin_token`. Secrets: never described or logged.
    public var gatewayTokens: [String] = []
    public var routes: [Route]

    public func source(named name: String) -> Source? {
        sources.first { $0.name == name }
    }

    /// Sources whose generations the Pipevideo API knows (reconciliation polls only these).
    public var apiSources: [String] {
        api == nil ? [] : sources.filter { $0.format.name == PipevideoFormat().name }.map(\.name)
    }
}

public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public enum StoreLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(url: String)
}

public enum LogFormat: String, Sendable, CaseIterable { case json, text }

public enum LogLevel: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

public struct TLSFiles: Sendable, Equatable {
    public var certificatePath: String
    public var keyPath: String
}

/// One webhook sender served at `POST /webhooks/{name}`.
public struct Source: Sendable {
    public var name: String
    public var format: any EventFormat
    /// Several during rotation; any may match.
    public var secrets: [SigningSecret]
    public var toleranceSeconds: Int64

    public var verifier: SignatureVerifier {
        SignatureVerifier(secrets: secrets, toleranceSeconds: toleranceSeconds)
    }
}

public struct API: Sendable, Equatable {
    public var baseURL: String
    public var key: String
    public var requestsPerMinute: Int
    public var pollAfterSeconds: Int64
    /// What `pipehook submit` puts in a create body when its options do not say (`api.defaults`).
    public var defaults: CreateDefaults

    public init(baseURL: String, key: String, requestsPerMinute: Int, pollAfterSeconds: Int64, defaults: CreateDefaults = CreateDefaults()) {
        self.baseURL = baseURL
        self.key = key
        self.requestsPerMinute = requestsPerMinute
        self.pollAfterSeconds = pollAfterSeconds
        self.defaults = defaults
    }
}

/// `api.defaults`: the create body's model and engine when a submit does not name them.
public struct CreateDefaults: Sendable, Equatable {
    /// No built-in model: the API's model names are the account's business.
    public var model: String?
    public var engine: String?
    public init(model: String? = nil, engine: String? = nil) {
        self.model = model
        self.engine = engine
    }
}

public struct RetryPolicy: Sendable, Equatable {
    public var attempts: Int
    public var initialDelayMilliseconds: Int64
    public var maxDelayMilliseconds: Int64

    public init(attempts: Int, initialDelayMilliseconds: Int64, maxDelayMilliseconds: Int64) {
        self.attempts = attempts
        self.initialDelayMilliseconds = initialDelayMilliseconds
        self.maxDelayMilliseconds = maxDelayMilliseconds
    }

    public static let standard = RetryPolicy(attempts: 10, initialDelayMilliseconds: 2_000, maxDelayMilliseconds: 900_000)
}

/// "When a generation enters one of these statuses, run these steps in order."
public struct Route: Sendable {
    public var name: String
    public var on: Set<GenerationStatus>
    public var steps: [Step]
    /// The route as written, canonical JSON with `${VAR}` unexpanded (so it holds no secret value)
    /// and the effective global retry policy: what a job is pinned to, and what rebuilds its steps
    /// after a reload or restart (`SettingsParser.pinnedRoute`).
    public var definition: String
    /// SHA-256 of `definition`, hex: two routes with the same text are the same version.
    public var version: String
    /// Secrets written literally in the route (a post step's `secret`), by the fingerprint that
    /// stands for them in `definition`: a pinned route is rebuilt with them while they are still
    /// configured. Never in a description.
    public var literalSecrets: [String: String] = [:]
}

extension Route: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "Route(\(name), on: \(on.map(\.rawValue).sorted()), \(steps.count) step(s), version \(version.prefix(12)))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["name": name, "on": on, "steps": steps, "version": version]) }
}

public struct Step: Sendable {
    public enum Action: Sendable {
        case exec(ExecStep)
        case download(DownloadStep)
        case post(PostStep)
    }

    public var action: Action
    /// The step's own retry policy, or the global one.
    public var retry: RetryPolicy

    /// The most runs of this step at once (exec's `concurrency`), or no limit.
    public var concurrency: Int? {
        if case .exec(let exec) = action { return exec.concurrency }
        return nil
    }

    public var kind: String {
        switch action {
        case .exec: "exec"
        case .download: "download"
        case .post: "post"
        }
    }
}

public struct ExecStep: Sendable, Equatable {
    public var command: [String]
    public var timeoutMilliseconds: Int64
    public var environment: [String: String]
    public var permanentExitCodes: Set<Int32>
    public var concurrency: Int?

    public init(command: [String], timeoutMilliseconds: Int64, environment: [String: String] = [:], permanentExitCodes: Set<Int32> = [], concurrency: Int? = nil) {
        self.command = command
        self.timeoutMilliseconds = timeoutMilliseconds
        self.environment = environment
        self.permanentExitCodes = permanentExitCodes
        self.concurrency = concurrency
    }
}

public struct DownloadStep: Sendable, Equatable {
    public var directory: String
    public var pathTemplate: PathTemplate
    public var maxBytes: Int64
    public var allowHTTP: Bool
    public var timeoutMilliseconds: Int64

    public init(directory: String, pathTemplate: PathTemplate, maxBytes: Int64, allowHTTP: Bool, timeoutMilliseconds: Int64) {
        self.directory = directory
        self.pathTemplate = pathTemplate
        self.maxBytes = maxBytes
        self.allowHTTP = allowHTTP
        self.timeoutMilliseconds = timeoutMilliseconds
    }
}

public struct PostStep: Sendable {
    public enum Body: String, Sendable, CaseIterable { case event, multipart }
    public var url: String
    public var secret: SigningSecret?
    public var body: Body
    public var timeoutMilliseconds: Int64

    public init(url: String, secret: SigningSecret?, body: Body, timeoutMilliseconds: Int64) {
        self.url = url
        self.secret = secret
        self.body = body
        self.timeoutMilliseconds = timeoutMilliseconds
    }
}

/// A download path such as `{yyyy}/{mm}/{generation_id}.{ext}`, checked at load time.
public struct PathTemplate: Sendable, Equatable {
    public static let placeholders: Set<String> = ["generation_id", "source", "status", "yyyy", "mm", "dd", "ext"]

    public enum Piece: Sendable, Equatable {
        case literal(String)
        case placeholder(String)
    }

    public let text: String
    public let pieces: [Piece]

    public enum ParseError: Error, Equatable {
        case unknownPlaceholder(String)
        case unbalanced
        case empty
        case absolute
    }

    public init(_ text: String) throws(ParseError) {
        guard !text.isEmpty else { throw .empty }
        guard !text.hasPrefix("/") else { throw .absolute }
        var pieces: [Piece] = []
        var literal = ""
        var index = text.startIndex
        while index < text.endIndex {
            let char = text[index]
            if char == "{" {
                guard let close = text[index...].firstIndex(of: "}") else { throw .unbalanced }
                let name = String(text[text.index(after: index)..<close])
                guard Self.placeholders.contains(name) else { throw .unknownPlaceholder(name) }
                if !literal.isEmpty { pieces.append(.literal(literal)); literal = "" }
                pieces.append(.placeholder(name))
                index = text.index(after: close)
            } else if char == "}" {
                throw .unbalanced
            } else {
                literal.append(char)
                index = text.index(after: index)
            }
        }
        if !literal.isEmpty { pieces.append(.literal(literal)) }
        self.text = text
        self.pieces = pieces
    }
}

// Credentials must not reach a log through `String(describing:)`, `dump` or a mirror (the
// service lifecycle logs its services that way at debug level).
extension API: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "API(baseURL: \(baseURL), key: <redacted>, requestsPerMinute: \(requestsPerMinute), pollAfterSeconds: \(pollAfterSeconds))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["baseURL": baseURL, "requestsPerMinute": requestsPerMinute, "pollAfterSeconds": pollAfterSeconds])
    }
}

extension Settings: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "Settings(listen: \(listen), store: \(store), sources: \(sources.map(\.name)), routes: \(routes.map(\.name)), api: \(api.map { "\($0)" } ?? "none"), admin_token: \(adminToken == nil ? "none" : "<redacted>"), gateway_tokens: \(gatewayTokens.count))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: ["listen": listen, "store": store, "sources": sources.map(\.name), "routes": routes.map(\.name)])
    }
}

extension StoreLocation: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// A PostgreSQL URL's password is replaced.
    public var description: String {
        switch self {
        case .sqlite(let path): return "sqlite:\(path)"
        case .postgres(let url):
            guard let at = url.lastIndex(of: "@"), let scheme = url.range(of: "://"),
                let colon = url[scheme.upperBound..<at].firstIndex(of: ":")
            else { return url }
            return String(url[..<url.index(after: colon)]) + "<redacted>" + String(url[at...])
        }
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["location": description]) }
}

/// What a command that only reads or edits the store needs: `status`, `generations` and `jobs`
/// run with only this, so they work without the webhook secrets (which may live in an
/// environment only the daemon has).
public struct StoreSettings: Sendable, Equatable {
    public var dataDir: String
    public var store: StoreLocation
    public var storeTimeoutMilliseconds: Int64

    public init(dataDir: String, store: StoreLocation, storeTimeoutMilliseconds: Int64 = 5_000) {
        self.dataDir = dataDir
        self.store = store
        self.storeTimeoutMilliseconds = storeTimeoutMilliseconds
    }
}

extension Settings {
    public var storeSettings: StoreSettings {
        StoreSettings(dataDir: dataDir, store: store, storeTimeoutMilliseconds: storeTimeoutMilliseconds)
    }
}
