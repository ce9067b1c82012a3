import AsyncHTTPClient
import Foundation
import Logging
import PipehookFormats
import PipehookLifecycle
import PipehookReconcile
import PipehookSettings
import PipehookStore

/// `pipehook submit`, `cancel` and `wait` (SPEC §7, §8): the generation life cycle from the command
/// line. The running daemon does the rest: its reconciler polls what no webhook reports within
/// `poll_after`, and its dispatcher runs the routes.
extension Commands {
    /// The exit codes of `wait` (SPEC §8).
    public enum WaitExit: Int32, Sendable {
        case completed = 0, error = 1, unsuccessful = 3, timedOut = 4
    }

    /// The configured Pipevideo source by name, or the first one.
    static func apiSource(_ name: String?, settings: Settings) throws -> String {
        let sources = settings.apiSources
        if let name {
            guard sources.contains(name) else {
                throw CommandFailure("source \(name) is not a configured pipevideo source (have: \(sources.joined(separator: ", ")))")
            }
            return name
        }
        guard let first = sources.first else { throw CommandFailure("no source with format pipevideo is configured") }
        return first
    }

    static func control(settings: Settings, store: any Storage, source: String?, command: String) throws -> GenerationControl {
        guard let api = settings.api else {
            throw CommandFailure("\(command) needs the `api` section in the configuration (base_url and key of the Pipevideo API)")
        }
        let quiet = Logger(label: "pipehook", factory: { _ in SwiftLogNoOpLogHandler() })
        return GenerationControl(
            store: store, api: PipevideoAPI(settings: api, httpClient: .shared, logger: quiet),
            source: try apiSource(source, settings: settings),
            routes: routePins(settings), logger: quiet
        )
    }

    /// What `submit` creates: a full body from `--input-file`, or one built from the options.
    public enum SubmitInput: Sendable {
        case options(CreateRequest)
        case body([UInt8])
    }

    /// Creates a generation; returns the generation id (or, with `json`, Pipevideo's create answer).
    public static func submit(
        _ input: SubmitInput, idempotencyKey: String?, source: String?, settings: Settings, store: any Storage, json: Bool
    ) async throws -> (output: String, generationID: String) {
        let control = try control(settings: settings, store: store, source: source, command: "submit")
        let defaults = settings.api?.defaults ?? CreateDefaults()
        let body: [UInt8]
        do throws(FormatError) {
            body = switch input {
            case .options(let request): try request.body(defaultModel: defaults.model, defaultEngine: defaults.engine)
            case .body(let raw): try CreateRequest.complete(raw, defaultModel: defaults.model, defaultEngine: defaults.engine)
            }
        } catch {
            throw CommandFailure(error.reason)
        }
        switch try await control.create(body, idempotencyKey: idempotencyKey) {
        case .created(let id, let answer, _):
            return (json ? String(decoding: answer, as: UTF8.self) : id, id)
        case .refused(let status, let message):
            throw CommandFailure(status == 0 ? "not sent: \(message)" : "Pipevideo refused the create: \(message)")
        case .outcomeUnknown(let key):
            throw CommandFailure(
                "outcome unknown: a create with idempotency key \(key) was cut short before its answer; check `pipehook generations` or Pipevideo, then use a new key if nothing was created"
            )
        case .keyReused(let key):
            throw CommandFailure("idempotency key \(key) was used for a different request")
        case .invalidKey(let problem):
            throw CommandFailure(problem)
        case .unknown(let reason):
            throw CommandFailure(
                "outcome unknown (\(reason)): Pipevideo may have created the generation"
                    + (idempotencyKey.map { "; repeating with idempotency key \($0) will not create a second one" } ?? "")
            )
        }
    }

    public static func cancel(generationID: String, source: String?, settings: Settings, store: any Storage, json: Bool) async throws -> String {
        let control = try control(settings: settings, store: store, source: source, command: "cancel")
        switch try await control.cancel(generationID) {
        case .cancelled(let transition):
            if json { return try Output.json(["result": "cancelled", "generation_id": generationID, "transition": transition.rawValue]) }
            return transition == .conflict
                ? "cancelled \(generationID) at Pipevideo, but the store had another final status first (kept; recorded as a conflict)"
                : "cancelled \(generationID)"
        case .alreadyFinished(let status):
            throw CommandFailure("\(generationID) is already \(status.rawValue): nothing to cancel (no API call made)")
        case .refused(let status, let message):
            throw CommandFailure("Pipevideo did not cancel \(generationID) (HTTP \(status)): \(message)")
        case .unavailable(let reason):
            throw CommandFailure("cannot cancel \(generationID) now: \(reason)")
        }
    }

    /// Blocks until the generation is terminal in the store and its jobs have settled (succeeded or
    /// dead, so an archived file is there), or `timeout` passes. Returns the output and exit code.
    public static func wait(
        generationID: String, source: String?, timeout: Duration, store: any Storage, json: Bool,
        interval: Duration = .milliseconds(200)
    ) async throws -> (output: String, exit: WaitExit) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let detail = try await store.generations(withID: generationID).first { source == nil || $0.generation.source == source }
            if let generation = detail?.generation, generation.status.isTerminal {
                let jobs = try await store.jobs(generationID: generationID, source: generation.source)
                if jobs.allSatisfy({ $0.state == .succeeded || $0.state == .dead }) {
                    let exit: WaitExit = generation.status == .completed ? .completed : .unsuccessful
                    return (try await waitOutput(generation, jobs: jobs, store: store, json: json), exit)
                }
            }
            if ContinuousClock.now >= deadline {
                let status = detail?.generation.status.rawValue ?? "unknown"
                return (
                    json
                        ? try Output.json(["result": "timed_out", "generation_id": generationID, "status": status])
                        : "timed out: \(generationID) is \(status)", .timedOut
                )
            }
            try await Task.sleep(for: interval)
        }
    }

    static func waitOutput(_ generation: GenerationRecord, jobs: [JobRecord], store: any Storage, json: Bool) async throws -> String {
        if json, let document = try await statusDocument(generationID: generation.generationID, source: generation.source, store: store) {
            return document
        }
        var lines = ["\(generation.generationID) \(generation.status.rawValue)"]
        if let url = generation.outputURL { lines.append("output:   \(url)") }
        if let message = generation.errorMessage { lines.append("error:    \(message)") }
        for job in jobs {
            if let artifact = job.artifact { lines.append("archived: \(artifact.file) (sha256 \(artifact.sha256), \(artifact.bytes) bytes)") }
            if job.state == .dead { lines.append("job \(job.id) (route \(job.route)) dead: \(job.lastError ?? "")") }
        }
        return lines.joined(separator: "\n")
    }
}
