import ArgumentParser
import Foundation
import Logging
import PipehookDaemon
import PipehookFormats
import PipehookLifecycle
import PipehookSettings
import PipehookStore

/// Thin executable: parses arguments, loads settings, calls into PipehookDaemon.
@main
struct Pipehook: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipehook",
        abstract: "Receive, verify, deduplicate and record Pipevideo generation webhooks.",
        version: PipehookVersion.current,
        subcommands: [
            Serve.self, CheckConfig.self, ConfigCommand.self, Status.self, Generations.self, Jobs.self, Retry.self, Replay.self, Reprocess.self,
            Send.self, Track.self, Submit.self, Cancel.self, Wait.self, Prune.self, Backup.self,
        ]
    )

    /// Maps argument-parser's usage errors to exit 2 (SPEC §8); everything else keeps its code.
    static func main() async {
        // What pipehook creates (the store, its WAL, archived videos) holds raw payloads and
        // signed URLs: folders 0750 and files 0640 at most, whatever umask it was started with.
        umask(0o027)
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as CommandFailure {
            report(code: "failed", message: failure.description, text: "pipehook: \(failure)")
            Foundation.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                report(code: "usage", message: fullMessage(for: error), text: fullMessage(for: error))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }

    /// An error on stderr: with `--json` as `{"error":{"code","message"}}` (the shape of the HTTP
    /// errors), so a script that asked for JSON gets JSON on failure too (SPEC §8).
    static func report(code: String, message: String, text: String) {
        let arguments = CommandLine.arguments.dropFirst().prefix { $0 != "--" }
        let line = arguments.contains("--json")
            ? #"{"error":{"code":"# + JSONText.quote(code) + #","message":"# + JSONText.quote(message) + "}}"
            : text
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Configuration file (default: ./pipehook.yaml, else built-in defaults).")
    var config: String?

    /// Only the store's keys: for commands that read (or only re-queue) what is stored, so
    /// they run without the webhook secrets.
    func loadStore() throws -> StoreSettings {
        do {
            return try SettingsLoader.loadStore(configPath: config)
        } catch {
            throw CommandFailure("invalid configuration:\n" + error.problems.map { "  \($0)" }.joined(separator: "\n"))
        }
    }

    func load(createSecret: Bool = false) throws -> SettingsLoader.Loaded {
        do {
            return try SettingsLoader.load(configPath: config, createSecret: createSecret)
        } catch {
            throw CommandFailure("invalid configuration:\n" + error.problems.map { "  \($0)" }.joined(separator: "\n"))
        }
    }
}

func write(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the webhook receiver.")
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let loaded = try options.load(createSecret: true)
        let control = LogSetup.bootstrap(format: loaded.settings.logFormat, level: loaded.settings.logLevel)
        try await Daemon.serve(loaded, logger: Logger(label: "pipehook"), logControl: control)
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate the configuration; list every problem with its key path.")
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let (text, ok) = Commands.checkConfig(path: options.config)
        write(text)
        if !ok { throw ExitCode(1) }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the configuration in force (every default filled in, secrets redacted) as JSON."
    )
    @OptionGroup var options: ConfigOption

    func run() async throws {
        write(EffectiveConfiguration.document(try options.load()))
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a generation's state and timeline.")
    @OptionGroup var options: ConfigOption
    @Argument(help: "The generation id, e.g. gen_abc123.") var generationID: String
    @Option(help: "Only this source.") var source: String?
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let store = try await Daemon.openStore(try options.loadStore(), readOnly: true)
        write(try await Commands.status(generationID: generationID, source: source, store: store, json: json))
    }
}

extension GenerationStatus: ExpressibleByArgument {
    public init?(argument: String) { self.init(providerValue: argument) }
}

struct Generations: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List generations, most recently updated first, a page at a time.")
    @OptionGroup var options: ConfigOption
    @Option(help: "Only generations with this status.") var status: GenerationStatus?
    @Option(help: "Only generations of this source.") var source: String?
    @Option(help: "Only generations with a job of this route.") var route: String?
    @Option(help: "Only generations with a job in this state (pending, running, succeeded, dead).") var jobState: JobState?
    @Option(help: "The page after this cursor (printed as `more: --after …` under a full page).") var after: String?
    @Option(help: "At most this many.") var limit: Int = 50
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be positive") }
        if let after, GenerationCursor(token: after) == nil { throw ValidationError("--after is not a cursor printed by a previous page") }
    }

    func run() async throws {
        let store = try await Daemon.openStore(try options.loadStore(), readOnly: true)
        let query = GenerationQuery(
            status: status, source: source, route: route, jobState: jobState, after: after.flatMap(GenerationCursor.init(token:)), limit: limit
        )
        write(try await Commands.generations(query, store: store, json: json))
    }
}

struct Prune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget delivery ids past the dedup window and finished history past retention.")
    @OptionGroup var options: ConfigOption
    @Flag(help: "Also delete dead jobs past retention (they are kept for `retry` otherwise).") var dead = false
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let settings = try options.load().settings
        let store = try await Daemon.openStore(settings)
        write(try await Commands.prune(settings: settings, store: store, includingDead: dead, json: json))
    }
}

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sign and POST a Pipevideo-shaped test event to a running receiver.")
    @OptionGroup var options: ConfigOption
    @Option(help: "Receiver URL (default: the configured listener and first source).") var url: String?
    @Option(help: "Signing secret, whsec_… (default: the first source's first secret).") var secret: String?
    @Option(help: "Source to take URL and secret from (default: the first).") var source: String?
    @Option(name: .customLong("generation-id"), help: "Generation id (default: random).") var generationID: String?
    @Option(help: "Status: queued, in_progress, completed, failed, cancelled, incomplete.") var status: String = "completed"
    @Option(name: .customLong("output-url"), help: "outputUrl (default for completed: an example URL).") var outputURL: String?
    @Option(name: .customLong("error-message"), help: "errorMessage.") var errorMessage: String?
    @Option(help: "Delivery id (default: random msg_…).") var id: String?
    @Option(help: "Unix timestamp to sign with (default: now).") var timestamp: Int64?

    func run() async throws {
        var send = Commands.SendOptions()
        send.url = url
        send.secret = secret
        send.source = source
        send.generationID = generationID
        send.status = status
        send.outputURL = outputURL
        send.errorMessage = errorMessage
        send.id = id
        send.timestamp = timestamp
        // URL and secret may both be given, in which case no configuration is needed.
        let settings = (url != nil && secret != nil) ? (try? options.load().settings) : try options.load().settings
        let result = try await Commands.send(send, settings: settings)
        write("HTTP \(result.status) \(result.body)")
        if !(200..<300).contains(result.status) { throw ExitCode(1) }
    }
}

extension JobState: ExpressibleByArgument {}

struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs (route runs), most recently updated first.")
    @OptionGroup var options: ConfigOption
    @Option(help: "Only jobs in this state: pending, running, succeeded, dead.") var state: JobState?
    @Option(help: "At most this many.") var limit: Int = 50
    @Flag(help: "Machine-readable output.") var json = false

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be positive") }
    }

    func run() async throws {
        let store = try await Daemon.openStore(try options.loadStore(), readOnly: true)
        write(try await Commands.jobs(state: state, limit: limit, store: store, json: json))
    }
}

struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Queue a dead job again (or all of them with --dead); steps that succeeded are not re-run.")
    @OptionGroup var options: ConfigOption
    @Argument(help: "The job id, e.g. job_0123456789abcdef.") var jobID: String?
    @Flag(help: "Every dead job.") var dead = false

    func validate() throws {
        guard (jobID == nil) != (!dead) else { throw ValidationError("give either a JOB_ID or --dead") }
    }

    func run() async throws {
        let store = try await Daemon.openStore(try options.loadStore())
        write(try await Commands.retry(jobID: jobID, allDead: dead, store: store))
    }
}

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the routes again for a stored event, as new jobs.")
    @OptionGroup var options: ConfigOption
    @Argument(help: "The event id (the delivery's svix-id / webhook-id).") var eventID: String
    @Option(help: "The source, when the id exists in several.") var source: String?
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let settings = try options.load().settings
        let store = try await Daemon.openStore(settings)
        write(try await Commands.replay(eventID: eventID, source: source, settings: settings, store: store, json: json))
    }
}

struct Reprocess: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read unrecognized deliveries again with the current formats.")
    @OptionGroup var options: ConfigOption
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let settings = try options.load().settings
        let store = try await Daemon.openStore(settings)
        write(try await Commands.reprocess(settings: settings, store: store, json: json))
    }
}

struct Track: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make sure a generation ends in the store: the daemon polls the Pipevideo API for it until it does."
    )
    @OptionGroup var options: ConfigOption
    @Argument(help: "The generation id, e.g. gen_abc123.") var generationID: String
    @Option(help: "The pipevideo source it belongs to (default: the first).") var source: String?
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let settings = try options.load().settings
        let store = try await Daemon.openStore(settings)
        write(try await Commands.track(generationID: generationID, source: source, settings: settings, store: store, json: json))
    }
}

struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a generation through the Pipevideo API, record it as queued and print its id; the daemon follows it to the end."
    )
    @OptionGroup var options: ConfigOption
    @Option(help: "The prompt (the create body's input).") var prompt: String?
    @Option(name: .customLong("input-file"), help: "A full JSON create body (for message-item input), or - for stdin.") var inputFile: String?
    @Option(help: "Model (default: api.defaults.model).") var model: String?
    @Option(help: "Instructions.") var instructions: String?
    @Option(help: "Engine: hyperframes, lottie or auto (default: api.defaults.engine).") var engine: String?
    @Option(help: "Width in pixels.") var width: Int?
    @Option(help: "Height in pixels.") var height: Int?
    @Option(name: .customLong("aspect-ratio"), help: "Aspect ratio, e.g. 16:9.") var aspectRatio: String?
    @Flag(name: .customLong("expand-prompt"), help: "Let Pipevideo expand the prompt.") var expandPrompt = false
    @Option(name: .customLong("provider-order"), help: "Providers in order, comma-separated.") var providerOrder: String?
    @Option(name: .customLong("idempotency-key"), help: "Create at most once for this key, however often the command is repeated.")
    var idempotencyKey: String?
    @Option(help: "The pipevideo source to record it under (default: the first).") var source: String?
    @Flag(help: "Then wait for the end, as `pipehook wait` (and exit as it does).") var wait = false
    @Option(help: "With --wait: how long at most, e.g. 10m.") var timeout: String = "10m"
    @Flag(help: "Print Pipevideo's create answer (with --wait: the final document).") var json = false

    func validate() throws {
        guard (prompt == nil) != (inputFile == nil) else { throw ValidationError("give either --prompt or --input-file") }
        if inputFile != nil, model != nil || instructions != nil || engine != nil || width != nil || height != nil
            || aspectRatio != nil || expandPrompt || providerOrder != nil {
            throw ValidationError("--input-file is a full create body: the other create options cannot be combined with it")
        }
        _ = try Wait.parseTimeout(timeout)
    }

    func run() async throws {
        let settings = try options.load().settings
        let input: Commands.SubmitInput
        if let inputFile {
            let data = inputFile == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: inputFile)
            guard let data else { throw CommandFailure("cannot read \(inputFile)") }
            input = .body(Array(data))
        } else {
            input = .options(CreateRequest(
                prompt: prompt ?? "", model: model, instructions: instructions, engine: engine, expandPrompt: expandPrompt ? true : nil,
                width: width, height: height, aspectRatio: aspectRatio,
                providerOrder: providerOrder.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            ))
        }
        let store = try await Daemon.openStore(settings)
        let created = try await Commands.submit(input, idempotencyKey: idempotencyKey, source: source, settings: settings, store: store, json: json && !wait)
        guard wait else { return write(created.output) }
        let result = try await Commands.wait(generationID: created.generationID, source: source, timeout: try Wait.parseTimeout(timeout), store: store, json: json)
        write(result.output)
        if result.exit != .completed { throw ExitCode(result.exit.rawValue) }
    }
}

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a generation through the Pipevideo API; it becomes cancelled and its cancelled routes run.")
    @OptionGroup var options: ConfigOption
    @Argument(help: "The generation id.") var generationID: String
    @Option(help: "The pipevideo source it belongs to (default: the first).") var source: String?
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        let settings = try options.load().settings
        let store = try await Daemon.openStore(settings)
        write(try await Commands.cancel(generationID: generationID, source: source, settings: settings, store: store, json: json))
    }
}

struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the SQLite store to FILE while the daemon runs (SQLite's online backup; never overwrites)."
    )
    @OptionGroup var options: ConfigOption
    @Argument(help: "The file to create, e.g. /var/backups/pipehook-$(date +%F).sqlite.") var file: String
    @Flag(help: "Machine-readable output.") var json = false

    func run() async throws {
        write(try Commands.backup(try options.loadStore(), to: file, json: json))
    }
}

struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until a generation has ended and its routes have run; print its final state.",
        discussion: "Exit 0 completed, 3 failed/cancelled/incomplete, 4 timed out, 1 error, 2 usage."
    )
    @OptionGroup var options: ConfigOption
    @Argument(help: "The generation id.") var generationID: String
    @Option(help: "The source (default: any).") var source: String?
    @Option(help: "How long at most, e.g. 90s, 10m, 1h.") var timeout: String = "10m"
    @Flag(help: "Print the final status document as JSON.") var json = false

    static func parseTimeout(_ text: String) throws -> Duration {
        guard let milliseconds = Units.milliseconds(text), milliseconds > 0 else {
            throw ValidationError("--timeout must be a duration such as 90s, 10m or 1h, not \(text)")
        }
        return .milliseconds(milliseconds)
    }

    func validate() throws { _ = try Self.parseTimeout(timeout) }

    func run() async throws {
        let store = try await Daemon.openStore(try options.loadStore(), readOnly: true)
        let result = try await Commands.wait(generationID: generationID, source: source, timeout: try Self.parseTimeout(timeout), store: store, json: json)
        write(result.output)
        if result.exit != .completed { throw ExitCode(result.exit.rawValue) }
    }
}

