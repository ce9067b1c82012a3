import AsyncHTTPClient
import Foundation
import NIOCore
import PipehookDispatch
import PipehookFormats
import PipehookHTTP
import PipehookLifecycle
import PipehookSettings
import PipehookSignature
import PipehookSQLite
import PipehookStore

/// The bodies of the read and admin commands; the executable only parses arguments.
public enum Commands {
    // MARK: check-config

    /// Returns the report to print and whether the configuration is valid: every problem of the
    /// file, and, once it parses, every problem it would meet on this machine (TLS files, handler
    /// commands, folders to write).
    public static func checkConfig(path: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> (text: String, ok: Bool) {
        let location = path ?? SettingsLoader.defaultPath
        let loaded: SettingsLoader.Loaded
        do {
            loaded = try SettingsLoader.load(configPath: path, environment: environment, createSecret: false)
        } catch {
            return (report(location, error.problems.map(\.description)), false)
        }
        let settings = loaded.settings
        var problems: [String] = []
        if let tls = settings.tls {
            do { try Daemon.validateTLS(tls) } catch { problems.append(String(describing: error)) }
        }
        problems += ConfigChecks.machineProblems(settings, environment: environment).map(\.description)
        guard problems.isEmpty else { return (report(location, problems), false) }
        let where_: String
        switch loaded.origin {
        case .file(let file): where_ = file
        case .builtInDefaults: where_ = "built-in defaults (no \(SettingsLoader.defaultPath))"
        }
        let steps = settings.routes.reduce(0) { $0 + $1.steps.count }
        return ("configuration OK: \(where_): \(settings.sources.count) source(s), \(settings.routes.count) route(s), \(steps) step(s), listening on \(settings.listen)", true)
    }

    private static func report(_ location: String, _ problems: [String]) -> String {
        "configuration \(location) has \(problems.count) problem(s):\n" + problems.map { "  \($0)" }.joined(separator: "\n")
    }

    // MARK: backup

    /// `pipehook backup FILE`: SQLite's online backup of the store (needs only the store's keys).
    public static func backup(_ settings: StoreSettings, to file: String, json: Bool) throws -> String {
        guard case .sqlite(let path) = settings.store else {
            throw CommandFailure(
                "pipehook backup copies a SQLite store; back up a PostgreSQL store with pg_dump (or the server's own backups: pg_basebackup, WAL archiving)"
            )
        }
        var options = SQLiteStore.Options()
        options.readOnly = true
        options.busyTimeout = Double(settings.storeTimeoutMilliseconds) / 1000
        let size: Int64
        do {
            size = try SQLiteStore(path: path, options: options).backup(to: file)
        } catch {
            throw CommandFailure(error.message)
        }
        if json {
            return #"{"backup":"# + JSONText.quote(file) + #","store":"# + JSONText.quote(path) + #","bytes":\#(size)}"#
        }
        return "backed up \(path) to \(file) (\(size) bytes)"
    }

    // MARK: status / generations

    /// The `status --json` document (one object, or an array when several sources know the id);
    /// nil when the store has never heard of the id. Also `GET /api/generations/{id}`.
    public static func statusDocument(generationID: String, source: String? = nil, store: any Storage) async throws -> String? {
        let data = try await statusData(generationID: generationID, source: source, store: store)
        guard !data.isEmpty else { return nil }
        let documents = data.map { GenerationDocument($0.detail, source: $0.source, generationID: generationID, jobs: $0.jobs, polling: $0.polling) }
        return try Output.json(documents.count == 1 ? AnyEncodable(documents[0]) : AnyEncodable(documents))
    }

    /// What the store knows about one generation in one source: its state and timeline (nil
    /// when it is only tracked so far), jobs with attempts, and polling.
    struct StatusData {
        var source: String
        var detail: GenerationDetail?
        var jobs: [(JobRecord, [AttemptRecord])]
        var polling: PollRecord?
    }

    private static func statusData(generationID: String, source: String?, store: any Storage) async throws -> [StatusData] {
        let details = try await store.generations(withID: generationID)
        let polls = try await store.polling(generationID: generationID)
        var sources = Set(details.map(\.generation.source)).union(polls.map(\.source)).sorted()
        if let source { sources = sources.filter { $0 == source } }
        var result: [StatusData] = []
        for name in sources {
            var withAttempts: [(JobRecord, [AttemptRecord])] = []
            for job in try await store.jobs(generationID: generationID, source: name) {
                withAttempts.append((job, try await store.attempts(jobID: job.id)))
            }
            result.append(StatusData(
                source: name, detail: details.first { $0.generation.source == name }, jobs: withAttempts,
                polling: polls.first { $0.source == name }
            ))
        }
        return result
    }

    public static func status(generationID: String, source: String?, store: any Storage, json: Bool) async throws -> String {
        if json {
            guard let document = try await statusDocument(generationID: generationID, source: source, store: store) else {
                throw CommandFailure("no generation \(generationID) in the store")
            }
            return document
        }
        let data = try await statusData(generationID: generationID, source: source, store: store)
        guard !data.isEmpty else { throw CommandFailure("no generation \(generationID) in the store") }
        return data.map { item in
            var lines = ["generation \(generationID) (source \(item.source))"]
            if let g = item.detail?.generation {
                lines.append("  status:   \(g.status.rawValue)")
                lines.append("  updated:  \(Output.time(g.updatedAt))")
                if let url = g.outputURL { lines.append("  output:   \(url)") }
                if let message = g.errorMessage { lines.append("  error:    \(message)") }
            } else {
                lines.append("  status:   unknown (tracked; no webhook or poll has reported it yet)")
            }
            if let poll = item.polling {
                var text = "  polling:  \(poll.tracked ? "tracked, " : "")\(poll.state.rawValue)"
                if let last = poll.lastPolledAt { text += ", last \(Output.time(last)): \(poll.lastResult ?? "-")" }
                if poll.state == .active, !(item.detail?.generation.status.isTerminal ?? false) {
                    text += ", next \(Output.time(poll.nextPollAt))"
                }
                lines.append(text)
            }
            lines.append("  timeline:")
            for entry in item.detail?.timeline ?? [] {
                let from = entry.previousStatus?.rawValue ?? "-"
                lines.append("    \(Output.time(entry.receivedAt))  \(entry.origin.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(from) -> \(entry.status.rawValue)  [\(entry.transition.rawValue)]  \(entry.eventID)")
            }
            lines.append(item.jobs.isEmpty ? "  jobs:     none" : "  jobs:")
            for (job, attempts) in item.jobs {
                lines.append("    \(job.id)  route \(Output.route(job))  \(job.state.rawValue)  next step \(job.nextStep)\(job.lastError.map { "  last error: \($0)" } ?? "")")
                for attempt in attempts {
                    lines.append("      step \(attempt.step) \(attempt.stepKind) attempt \(attempt.attempt)  \(attempt.outcome.rawValue)  \(attempt.summary ?? "")  \(Output.time(attempt.startedAt))")
                }
            }
            return lines.joined(separator: "\n")
        }.joined(separator: "\n\n")
    }

    public static func generations(status: GenerationStatus?, limit: Int, store: any Storage, json: Bool) async throws -> String {
        try await generations(GenerationQuery(status: status, limit: limit), store: store, json: json)
    }

    /// `pipehook generations`: one page; the text form ends with the `--after` of the next one.
    public static func generations(_ query: GenerationQuery, store: any Storage, json: Bool) async throws -> String {
        let records = try await store.generations(query)
        if json { return try Output.json(records.map(GenerationSummary.init)) }
        if records.isEmpty { return query.after == nil ? "no generations" : "no more generations" }
        let header = "UPDATED                   STATUS       SOURCE       GENERATION"
        var lines = [header] + records.map {
            "\(Output.time($0.updatedAt).padding(toLength: 25, withPad: " ", startingAt: 0)) \($0.status.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)) \($0.source.padding(toLength: 12, withPad: " ", startingAt: 0)) \($0.generationID)"
        }
        if records.count == query.limit, let last = records.last {
            lines.append("more: --after \(GenerationCursor(after: last).token)")
        }
        return lines.joined(separator: "\n")
    }

    /// `GET /api/generations`: the page and the cursor of the next one (null on the last page).
    public static func generationPage(_ query: GenerationQuery, store: any Storage) async throws -> String {
        struct Page: Encodable {
            var generations: [GenerationSummary]
            var next: String?
            enum CodingKeys: String, CodingKey { case generations, next }
            // `next` is always there: null says "last page" (a missing key would say nothing).
            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(generations, forKey: .generations)
                try container.encode(next, forKey: .next)
            }
        }
        let records = try await store.generations(query)
        let next = records.count == query.limit ? records.last.map { GenerationCursor(after: $0).token } : nil
        return try Output.json(Page(generations: records.map(GenerationSummary.init), next: next))
    }

    public static func prune(settings: Settings, store: any Storage, includingDead: Bool = false, json: Bool) async throws -> String {
        let report = try await store.prune(
            nowMilliseconds: Int64(Date().timeIntervalSince1970 * 1000),
            dedupWindowSeconds: settings.dedupWindowSeconds, retentionSeconds: settings.retentionSeconds,
            includingDead: includingDead
        )
        if json { return try Output.json(report) }
        return "pruned \(report.deliveries) delivery id(s) past the dedup window; past retention: \(report.jobs) finished job(s)\(includingDead ? " (dead included)" : ""), \(report.generations) finished generation(s) with \(report.events) event(s), \(report.unrecognized) unrecognized delivery(ies)"
    }

    // MARK: jobs

    public static func jobs(state: JobState?, limit: Int, store: any Storage, json: Bool) async throws -> String {
        let jobs = try await store.jobs(state: state, limit: limit)
        if json { return try Output.json(jobs.map { JobDocument($0, attempts: nil) }) }
        if jobs.isEmpty { return "no jobs" }
        let header = "JOB                   STATE      ROUTE@VERSION                     GENERATION            STEP  TRIES  UPDATED                   LAST ERROR"
        return ([header] + jobs.map { job in
            [
                job.id.padding(toLength: 21, withPad: " ", startingAt: 0), job.state.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0),
                Output.route(job).padding(toLength: 33, withPad: " ", startingAt: 0), job.generationID.padding(toLength: 21, withPad: " ", startingAt: 0),
                String(job.nextStep).padding(toLength: 5, withPad: " ", startingAt: 0), String(job.attempts).padding(toLength: 6, withPad: " ", startingAt: 0),
                Output.time(job.updatedAt).padding(toLength: 25, withPad: " ", startingAt: 0), job.lastError ?? "",
            ].joined(separator: " ")
        }).joined(separator: "\n")
    }

    public static func retry(jobID: String?, allDead: Bool, store: any Storage) async throws -> String {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        if allDead {
            let count = try await store.retryDead(at: now)
            return "\(count) dead job(s) queued again"
        }
        guard let jobID else { throw CommandFailure("give a JOB_ID or --dead") }
        let job = try await store.retry(jobID: jobID, at: now)
        return "job \(job.id) (route \(job.route), generation \(job.generationID)) queued again from step \(job.nextStep)"
    }

    public static func replay(eventID: String, source: String?, settings: Settings, store: any Storage, json: Bool) async throws -> String {
        let jobs = try await store.replay(
            eventID: eventID, source: source, routes: routePins(settings),
            at: Int64(Date().timeIntervalSince1970 * 1000)
        )
        if json { return try Output.json(jobs.map { JobDocument($0, attempts: nil) }) }
        return jobs.map { "queued \($0.id) for route \($0.route)" }.joined(separator: "\n")
    }

    /// The routes a status starts, pinned to their current versions: what a command that records
    /// events (`replay`, `reprocess`, `submit`, `cancel`) creates jobs for.
    static func routePins(_ settings: Settings) -> @Sendable (GenerationStatus) -> [RoutePin] {
        let routes = settings.routes
        return { status in routes.filter { $0.on.contains(status) }.map(\.pin) }
    }

    public static func reprocess(settings: Settings, store: any Storage, json: Bool) async throws -> String {
        let result = try await store.reprocess(
            decode: { item in
                guard let format = settings.source(named: item.source)?.format else { return nil }
                return (try? format.decode(item.raw)).map { .event($0) }
            },
            routes: routePins(settings),
            at: Int64(Date().timeIntervalSince1970 * 1000)
        )
        if json { return try Output.json(["recognized": result.recognized, "unrecognized": result.unrecognized]) }
        return "\(result.recognized) delivery(ies) recognized and applied, \(result.unrecognized) still unrecognized"
    }

    // MARK: track

    /// `pipehook track GEN_ID`: recorded in the store; the running daemon's reconciler polls it
    /// within a second, then every `poll_after` until it ends.
    public static func track(generationID: String, source: String?, settings: Settings, store: any Storage, json: Bool) async throws -> String {
        guard let api = settings.api else {
            throw CommandFailure("track needs the `api` section in the configuration (nothing would poll the generation)")
        }
        let name = try apiSource(source, settings: settings)
        guard !generationID.isEmpty, generationID.utf8.count <= 256 else {
            throw CommandFailure("the generation id must be 1 to 256 bytes")
        }
        let outcome = try await store.track(source: name, generationID: generationID, at: Int64(Date().timeIntervalSince1970 * 1000))
        let result = switch outcome.result {
        case .tracked: "tracked"
        case .alreadyTracked: "already_tracked"
        case .alreadyFinished: "already_finished"
        }
        if json {
            return try Output.json(["result": result, "generation_id": generationID, "source": name, "status": outcome.status?.rawValue ?? "unknown"])
        }
        switch outcome.result {
        case .tracked, .alreadyTracked:
            return "\(result.replacingOccurrences(of: "_", with: " ")) \(generationID) (source \(name)): `pipehook serve` polls it now, then every \(api.pollAfterSeconds) s until it ends"
        case .alreadyFinished:
            return "\(generationID) (source \(name)) already ended: \(outcome.status?.rawValue ?? "?")"
        }
    }

    // MARK: send

    public struct SendOptions: Sendable {
        public var url: String?
        public var secret: String?
        public var source: String?
        public var generationID: String?
        public var status: String = "completed"
        public var outputURL: String?
        public var errorMessage: String?
        public var id: String?
        public var timestamp: Int64?
        public init() {}
    }

    /// Signs a Pipevideo-shaped event with the same code the verifier uses and POSTs it.
    /// Returns the response status and body; the caller maps non-2xx to exit 1.
    public static func send(_ options: SendOptions, settings: Settings?) async throws -> (status: Int, body: String, id: String) {
        let source = options.source.flatMap { name in settings?.source(named: name) } ?? settings?.sources.first
        if let name = options.source, settings?.source(named: name) == nil, options.url == nil {
            throw CommandFailure("no source \(name) in the configuration")
        }
        let secret: SigningSecret
        if let text = options.secret {
            do { secret = try SigningSecret(text) } catch { throw CommandFailure("--secret is not a whsec_ secret") }
        } else if let first = source?.secrets.first {
            secret = first
        } else {
            throw CommandFailure("no secret: pass --secret or configure a source")
        }
        let url: String
        if let explicit = options.url {
            url = explicit
        } else if let settings, let source {
            let host = ["0.0.0.0", "::", ""].contains(settings.listen.host) ? "127.0.0.1" : settings.listen.host
            let scheme = settings.tls == nil ? "http" : "https"
            let authority = host.contains(":") ? "[\(host)]:\(settings.listen.port)" : "\(host):\(settings.listen.port)"
            url = "\(scheme)://\(authority)/webhooks/\(source.name)"
        } else {
            throw CommandFailure("no URL: pass --url or configure a listener")
        }
        guard GenerationStatus(providerValue: options.status) != nil else {
            throw CommandFailure("--status must be one of: \(GenerationStatus.allCases.map(\.rawValue).joined(separator: ", ")), pending, processing")
        }
        let id = options.id ?? "msg_" + Crypto.randomBytes(12).hexString
        let generationID = options.generationID ?? "gen_" + Crypto.randomBytes(8).hexString
        let timestamp = options.timestamp ?? Int64(Date().timeIntervalSince1970)
        let outputURL = options.outputURL ?? (options.status == "completed" ? "https://example.com/videos/\(generationID).mp4" : nil)
        func field(_ value: String?) -> String { value.map { JSONText.quote($0) } ?? "null" }
        let body = #"{"eventType":"\#(PipevideoFormat.completedEventType)","generationId":\#(JSONText.quote(generationID)),"status":\#(JSONText.quote(options.status)),"outputUrl":\#(field(outputURL)),"errorMessage":\#(field(options.errorMessage))}"#
        let bytes = Array(body.utf8)
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "webhook-id", value: id)
        request.headers.add(name: "webhook-timestamp", value: String(timestamp))
        request.headers.add(name: "webhook-signature", value: Signer.signature(secret: secret, id: id, timestamp: timestamp, body: bytes))
        request.body = .bytes(ByteBuffer(bytes: bytes))
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            let answer = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), String(buffer: answer), id)
        } catch {
            throw CommandFailure("cannot POST to \(url): \(error)")
        }
    }
}


/// The `status --json` document (and later `GET /api/generations/{id}`).
public struct GenerationDocument: Encodable {
    public var source: String
    public var generationID: String
    /// nil while a tracked generation has not been reported by a webhook or a poll.
    public var status: String?
    public var outputURL: String?
    public var errorMessage: String?
    public var createdAt: String?
    public var updatedAt: String?
    public var timeline: [Entry]
    public var jobs: [JobDocument] = []
    public var polling: PollingDocument?

    public struct Entry: Encodable {
        var eventID: String
        var origin: String
        var status: String
        var previousStatus: String?
        var transition: String
        var outputURL: String?
        var errorMessage: String?
        var receivedAt: String
        var signedAt: String

        enum CodingKeys: String, CodingKey {
            case eventID = "event_id", origin, status, previousStatus = "previous_status", transition
            case outputURL = "output_url", errorMessage = "error_message", receivedAt = "received_at", signedAt = "signed_at"
        }
    }

    /// The reconciler's view: whether the id is tracked, and what polling last saw.
    public struct PollingDocument: Encodable {
        var tracked: Bool
        /// active, stopped (the API answered 404) or finished (the generation is terminal).
        var state: String
        var last_polled_at: String?
        var last_result: String?
        var next_poll_at: String?
        var failures: Int

        // Explicit so optional fields appear as null rather than disappearing.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(tracked, forKey: .tracked)
            try c.encode(state, forKey: .state)
            try c.encode(last_polled_at, forKey: .last_polled_at)
            try c.encode(last_result, forKey: .last_result)
            try c.encode(next_poll_at, forKey: .next_poll_at)
            try c.encode(failures, forKey: .failures)
        }

        enum CodingKeys: String, CodingKey { case tracked, state, last_polled_at, last_result, next_poll_at, failures }
    }

    enum CodingKeys: String, CodingKey {
        case source, generationID = "generation_id", status, outputURL = "output_url", errorMessage = "error_message"
        case createdAt = "created_at", updatedAt = "updated_at", timeline, jobs, polling
    }

    public init(
        _ detail: GenerationDetail?, source: String, generationID: String, jobs: [(JobRecord, [AttemptRecord])] = [],
        polling: PollRecord? = nil
    ) {
        self.source = source
        self.generationID = generationID
        self.jobs = jobs.map { JobDocument($0.0, attempts: $0.1) }
        let g = detail?.generation
        status = g?.status.rawValue
        outputURL = g?.outputURL
        errorMessage = g?.errorMessage
        createdAt = g.map { Output.time($0.createdAt) }
        updatedAt = g.map { Output.time($0.updatedAt) }
        timeline = (detail?.timeline ?? []).map {
            Entry(
                eventID: $0.eventID, origin: $0.origin.rawValue, status: $0.status.rawValue,
                previousStatus: $0.previousStatus?.rawValue, transition: $0.transition.rawValue,
                outputURL: $0.outputURL, errorMessage: $0.errorMessage,
                receivedAt: Output.time($0.receivedAt), signedAt: Output.time($0.signedAt * 1000)
            )
        }
        self.polling = polling.map { poll in
            let finished = g?.status.isTerminal ?? false
            return PollingDocument(
                tracked: poll.tracked, state: finished ? "finished" : poll.state.rawValue,
                last_polled_at: poll.lastPolledAt.map(Output.time), last_result: poll.lastResult,
                next_poll_at: (finished || poll.state == .stopped) ? nil : Output.time(poll.nextPollAt), failures: poll.failures
            )
        }
    }

    // Explicit so optional fields appear as null rather than disappearing.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(source, forKey: .source)
        try c.encode(generationID, forKey: .generationID)
        try c.encode(status, forKey: .status)
        try c.encode(outputURL, forKey: .outputURL)
        try c.encode(errorMessage, forKey: .errorMessage)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encode(timeline, forKey: .timeline)
        try c.encode(jobs, forKey: .jobs)
        try c.encode(polling, forKey: .polling)
    }
}

public struct JobDocument: Encodable {
    var id: String
    var source: String
    var generation_id: String
    var route: String
    /// The pinned route version's fingerprint (first 12 hex digits), null for an unpinned job.
    var route_version: String?
    var fence: Int64
    var event_id: String
    var state: String
    var next_step: Int
    var attempts_on_step: Int
    var run_at: String
    var last_error: String?
    var file: String?
    var sha256: String?
    var bytes: Int64?
    var updated_at: String
    var attempts: [AttemptDocument]?

    struct AttemptDocument: Encodable {
        var step: Int
        var kind: String
        var attempt: Int
        var outcome: String
        var summary: String?
        var exit_code: Int32?
        var http_status: Int?
        var started_at: String
        var ended_at: String?
        var output: String
    }

    init(_ job: JobRecord, attempts: [AttemptRecord]?) {
        id = job.id
        source = job.source
        generation_id = job.generationID
        route = job.route
        route_version = job.routeVersion.map { String($0.prefix(12)) }
        fence = job.fence
        event_id = job.eventID
        state = job.state.rawValue
        next_step = job.nextStep
        attempts_on_step = job.attempts
        run_at = Output.time(job.runAt)
        last_error = job.lastError
        file = job.artifact?.file
        sha256 = job.artifact?.sha256
        bytes = job.artifact?.bytes
        updated_at = Output.time(job.updatedAt)
        self.attempts = attempts?.map {
            AttemptDocument(
                step: $0.step, kind: $0.stepKind, attempt: $0.attempt, outcome: $0.outcome.rawValue, summary: $0.summary,
                exit_code: $0.exitCode, http_status: $0.httpStatus, started_at: Output.time($0.startedAt),
                ended_at: $0.endedAt.map(Output.time), output: String(decoding: $0.output, as: UTF8.self)
            )
        }
    }
}

struct GenerationSummary: Encodable {
    var source: String
    var generation_id: String
    var status: String
    var output_url: String?
    var error_message: String?
    var created_at: String
    var updated_at: String

    init(_ g: GenerationRecord) {
        source = g.source
        generation_id = g.generationID
        status = g.status.rawValue
        output_url = g.outputURL
        error_message = g.errorMessage
        created_at = Output.time(g.createdAt)
        updated_at = Output.time(g.updatedAt)
    }
}

struct AnyEncodable: Encodable {
    let value: any Encodable
    init(_ value: any Encodable) { self.value = value }
    func encode(to encoder: any Encoder) throws { try value.encode(to: encoder) }
}

enum Output {
    static func json(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// `name@version` (12 hex digits of the pinned version), or the bare name for an unpinned job.
    static func route(_ job: JobRecord) -> String {
        job.routeVersion.map { "\(job.route)@\($0.prefix(12))" } ?? job.route
    }

    /// RFC 3339 UTC with milliseconds, as in every JSON document pipehook writes.
    static func time(_ milliseconds: Int64) -> String { JSONText.timestamp(milliseconds: milliseconds) }
}
