import Foundation
import Logging
import PipehookSettings
import Subprocess
import Synchronization

// `FilePath` for `Executable.path`: swift-subprocess uses System on Apple platforms and the
// swift-system package elsewhere (a dependency it brings along).
#if canImport(System)
import System
#else
import SystemPackage
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs one attempt of an `exec` step (SPEC §5) with swift-subprocess.
///
/// - argv only, never a shell; the event document on stdin, written concurrently with reading the
///   output so neither a large document nor a child that never reads stdin can block us.
/// - Environment: only `PATH`, `HOME`, `LANG` from `baseEnvironment`, the step's `env`, and the
///   `PIPEHOOK_*` variables. Never `Environment.inherit`.
/// - The child leads its own session (`createSession`, so its process group id is its pid).
///   On timeout the whole group gets SIGTERM, then SIGKILL after `killGrace`. Whatever is left of
///   the group when the command ends (background children holding our pipes) is SIGKILLed too:
///   a step's processes never outlive the step.
/// - stdout and stderr are one merged stream, drained to the end and capped at 64 KiB (the first
///   64 KiB are kept, the rest is read and dropped).
/// - A hard deadline (`timeout + killGrace + hardDeadlineMargin`) returns a failure even if the
///   library itself never came back (e.g. a spawn that wedges, swift-subprocess #374).
public struct ExecRunner: Sendable {
    private let logger: Logger
    private let baseEnvironment: [String: String]
    /// Where running step groups are listed, so a restart after SIGKILL can end them.
    private let ledger: StepProcessLedger?
    /// Time between SIGTERM and SIGKILL of the process group on timeout.
    public var killGrace: Duration = .seconds(2)
    /// Extra time after the SIGKILL before `run` gives up waiting for the library.
    public var hardDeadlineMargin: Duration = .seconds(5)

    /// The variables taken from the daemon's own environment; nothing else is inherited.
    public static let inheritedVariables = ["PATH", "HOME", "LANG"]

    public init(
        logger: Logger, baseEnvironment: [String: String] = ProcessInfo.processInfo.environment, ledger: StepProcessLedger? = nil
    ) {
        self.logger = logger
        self.baseEnvironment = baseEnvironment
        self.ledger = ledger
        _ = ignoreSIGPIPE
    }

    /// The longest value (UTF-8 bytes) put into a step's environment; longer values are cut and end
    /// in a marker (`truncatedMarker` for the event's values, whose whole text is in the event
    /// document on stdin; `truncatedConfigMarker` for the others).
    ///
    /// Linux refuses to exec when any one `NAME=value` string exceeds 128 KiB (MAX_ARG_STRLEN,
    /// 32 pages: E2BIG, "Argument list too long"), and argv plus environment together must stay under
    /// a quarter of the stack limit (2 MiB with the usual 8 MiB). An event with a 200 KiB error
    /// message or URL used to dead-letter every exec step of its route. 16 KiB keeps every real value
    /// whole (signed video URLs are a few KiB) and leaves the nine `PIPEHOOK_*` values at most
    /// 144 KiB together, far from both limits.
    public static let environmentValueLimit = 16 * 1024
    public static let truncatedMarker = "…[truncated, full value in the event document on stdin]"
    public static let truncatedConfigMarker = "…[truncated]"

    /// The exact environment the command gets (also used by tests).
    public func environment(for step: ExecStep, context: StepContext) -> [String: String] {
        var environment: [String: String] = [:]
        for name in Self.inheritedVariables {
            if let value = baseEnvironment[name] { environment[name] = Self.capped(value, marker: Self.truncatedConfigMarker) }
        }
        for (name, value) in step.environment { environment[name] = Self.capped(value, marker: Self.truncatedConfigMarker) }
        let document = context.document
        let fromEvent: [(String, String)] = [
            ("PIPEHOOK_EVENT_ID", document.eventID),
            ("PIPEHOOK_SOURCE", document.source),
            ("PIPEHOOK_GENERATION_ID", document.generationID),
            ("PIPEHOOK_STATUS", document.status.rawValue),
            ("PIPEHOOK_OUTPUT_URL", document.outputURL ?? ""),
            ("PIPEHOOK_ERROR_MESSAGE", document.errorMessage ?? ""),
            ("PIPEHOOK_FILE", document.artifact?.file ?? ""),
            ("PIPEHOOK_JOB_ID", context.jobID),
            ("PIPEHOOK_ATTEMPT", String(context.attempt)),
        ]
        for (name, value) in fromEvent { environment[name] = Self.capped(value, marker: Self.truncatedMarker) }
        return environment
    }

    /// `value` when it fits `environmentValueLimit`, else its head (cut between scalars) and
    /// `marker`, `environmentValueLimit` bytes at most together.
    static func capped(_ value: String, marker: String) -> String {
        let limit = environmentValueLimit
        guard value.utf8.count > limit else { return value }
        let room = limit - marker.utf8.count
        var head = String.UnicodeScalarView()
        var bytes = 0
        for scalar in value.unicodeScalars {
            let width = UTF8.width(scalar)
            if bytes + width > room { break }
            head.append(scalar)
            bytes += width
        }
        return String(head) + marker
    }

    /// One attempt. Never throws: every failure is a `StepOutcome`.
    public func run(_ step: ExecStep, context: StepContext) async -> StepOutcome {
        guard let executable = step.command.first, !executable.isEmpty else {
            return StepOutcome(result: .permanent, summary: "empty command")
        }
        if step.command.contains(where: { $0.utf8.contains(0) }) {
            return StepOutcome(result: .permanent, summary: "command contains a NUL byte")
        }
        let timeout = Duration.milliseconds(max(1, step.timeoutMilliseconds))
        let logger = self.logger(for: context, executable: executable)
        logger.debug("exec starting", metadata: ["timeout_ms": "\(step.timeoutMilliseconds)"])

        let environment = Self.environmentRows(environment(for: step, context: context))
        let input = context.document.json()
        let state = ExecState(ledger: ledger)
        let grace = killGrace
        let hardDeadline = timeout + grace + hardDeadlineMargin
        let command = step.command

        let permanentExitCodes = step.permanentExitCodes

        // The attempt runs in its own task so that `run` can return at the hard deadline even if
        // the library never does (a wedged spawn); the first of (attempt finished, hard deadline,
        // cancellation + grace) decides the outcome.
        let race = AttemptRace()
        race.setAttempt(
            Task {
                let outcome = await Self.attempt(
                    command: command, environment: environment, input: input, timeout: timeout, grace: grace,
                    permanentExitCodes: permanentExitCodes, state: state
                )
                race.finish(outcome)
            }
        )
        let deadline = Task {
            do { try await Task.sleep(for: hardDeadline) } catch { return }
            // Still here: the library did not come back after SIGKILL. Kill again, give up.
            state.killGroup(SIGKILL)
            race.cancelAttempt()
            race.finish(
                StepOutcome(
                    result: .retryable(retryAfter: nil),
                    summary: "timed out after \(Self.format(timeout)) (process did not stop)", output: state.output()
                )
            )
        }
        let margin = hardDeadlineMargin
        let outcome = await withTaskCancellationHandler {
            await withCheckedContinuation { race.wait($0) }
        } onCancel: {
            // Shutdown: the library tears the group down (SIGTERM, grace, SIGKILL); wait for
            // that, but never longer than grace + margin.
            race.cancelAttempt()
            Task {
                try? await Task.sleep(for: grace + margin)
                state.killGroup(SIGKILL)
                race.finish(StepOutcome(result: .retryable(retryAfter: nil), summary: "cancelled", output: state.output()))
            }
        }
        deadline.cancel()
        logger.log(
            level: outcome.result == .succeeded ? .debug : .notice, "exec finished",
            metadata: ["summary": "\(outcome.summary)", "exit_code": "\(outcome.exitCode.map(String.init) ?? "-")"]
        )
        return outcome
    }

    // MARK: - The attempt

    private static func attempt(
        command: [String], environment: [[UInt8]], input: [UInt8], timeout: Duration, grace: Duration,
        permanentExitCodes: Set<Int32>, state: ExecState
    ) async -> StepOutcome {
        let executableName = command[0]
        let executable: Executable = executableName.contains("/") ? .path(FilePath(executableName)) : .name(executableName)
        var options = PlatformOptions()
        // Own session => own process group (pgid == pid). No processGroupID and no working
        // directory, so on glibc ≥ 2.34 the library takes its posix_spawn path (POSIX_SPAWN_SETSID)
        // rather than its fork/exec fallback, where the spawn hang of #374 lives.
        options.createSession = true
        // Used only if this task is cancelled (daemon shutdown): SIGTERM to the group, then SIGKILL.
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: grace)]

        let result: ExecutionResult<Void, SequenceOutput, CombinedErrorOutput>
        do {
            result = try await withThrowingTaskGroup(of: Void.self) { group in
                // The timeout watchdog covers spawn, I/O and waiting for the exit.
                group.addTask {
                    do { try await Task.sleep(for: timeout) } catch { return }
                    state.timeOut()
                    do { try await Task.sleep(for: grace) } catch {
                        // The run ended during the grace period; the final sweep below SIGKILLs
                        // whatever is left of the group.
                        return
                    }
                    state.killGroup(SIGKILL)
                }
                let result = try await Subprocess.run(
                    executable,
                    arguments: Arguments(Array(command.dropFirst())),
                    environment: .custom(environment),
                    platformOptions: options,
                    input: .inputWriter,
                    output: .sequence,
                    error: .combinedWithOutput
                ) { execution in
                    state.started(pid: execution.processIdentifier.value)
                    await withTaskGroup(of: Void.self) { io in
                        io.addTask {
                            // A child that exits without reading makes the library cancel this
                            // write (or it fails with EPIPE); both are fine.
                            _ = try? await execution.standardInputWriter.write(input)
                            try? await execution.standardInputWriter.finish()
                        }
                        do {
                            for try await chunk in execution.standardOutput {
                                chunk.withUnsafeBytes { state.append($0) }
                            }
                        } catch {
                            // The output ended abnormally; keep what we have.
                        }
                        await io.waitForAll()
                    }
                }
                group.cancelAll()
                return result
            }
        } catch {
            state.finished()
            if state.didTimeOut {
                return StepOutcome(
                    result: .retryable(retryAfter: nil), summary: "timed out after \(format(timeout))", output: state.output()
                )
            }
            if Task.isCancelled {
                return StepOutcome(result: .retryable(retryAfter: nil), summary: "cancelled", output: state.output())
            }
            return spawnFailure(error, executable: executableName, output: state.output())
        }
        // Sweep: nothing of the step's process group outlives the step.
        state.finished()

        let output = state.output()
        if state.didTimeOut {
            var outcome = StepOutcome(
                result: .retryable(retryAfter: nil), summary: "timed out after \(format(timeout))", output: output
            )
            if case .exited(let code) = result.terminationStatus { outcome.exitCode = code }
            return outcome
        }
        if Task.isCancelled {
            return StepOutcome(result: .retryable(retryAfter: nil), summary: "cancelled", output: output)
        }
        switch result.terminationStatus {
        case .exited(0):
            return StepOutcome(result: .succeeded, summary: "exit 0", exitCode: 0, output: output)
        case .exited(let code):
            if permanentExitCodes.contains(code) {
                return StepOutcome(result: .permanent, summary: "exit \(code) (permanent)", exitCode: code, output: output)
            }
            return StepOutcome(result: .retryable(retryAfter: nil), summary: "exit \(code)", exitCode: code, output: output)
        case .signaled(let signal):
            return StepOutcome(result: .retryable(retryAfter: nil), summary: "killed by signal \(signal)", output: output)
        }
    }

    private static func spawnFailure(_ error: any Error, executable: String, output: [UInt8]) -> StepOutcome {
        if let error = error as? SubprocessError {
            if error.code == .executableNotFound {
                return StepOutcome(result: .permanent, summary: "command not found: \(executable)", output: output)
            }
            if error.code == .spawnFailed, let errno = error.underlyingError?.rawValue {
                switch errno {
                case ENOENT, ENOTDIR:
                    return StepOutcome(result: .permanent, summary: "command not found: \(executable)", output: output)
                case EACCES, ENOEXEC, EISDIR:
                    return StepOutcome(
                        result: .permanent, summary: "command not executable: \(executable) (\(describe(errno: errno)))",
                        output: output
                    )
                default:
                    return StepOutcome(
                        result: .retryable(retryAfter: nil),
                        summary: "could not start \(executable): \(describe(errno: errno))", output: output
                    )
                }
            }
            // Never interpolate the error itself: a validation failure quotes environment values.
            return StepOutcome(
                result: .retryable(retryAfter: nil), summary: "could not run \(executable) (\(error.code))", output: output
            )
        }
        return StepOutcome(result: .retryable(retryAfter: nil), summary: "could not run \(executable)", output: output)
    }

    // MARK: - Helpers

    /// NUL-terminated `KEY=value` rows. Keys that are empty or contain `=`/NUL are dropped; NUL in a value is
    /// removed (a C environment cannot carry it).
    static func environmentRows(_ environment: [String: String]) -> [[UInt8]] {
        environment.keys.sorted().compactMap { key -> [UInt8]? in
            let keyBytes = Array(key.utf8)
            guard !keyBytes.isEmpty, !keyBytes.contains(UInt8(ascii: "=")), !keyBytes.contains(0),
                !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(keyBytes[0])
            else { return nil }
            // The trailing NUL is required: swift-subprocess 1.0.2 `strdup`s each raw row as is,
            // so an unterminated row reads past its end.
            return keyBytes + [UInt8(ascii: "=")] + environment[key]!.utf8.filter { $0 != 0 } + [0]
        }
    }

    static func format(_ duration: Duration) -> String {
        let milliseconds = duration.milliseconds
        if milliseconds % 60_000 == 0 { return "\(milliseconds / 60_000)m" }
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        return "\(milliseconds)ms"
    }

    private static func describe(errno code: Int32) -> String {
        String(cString: strerror(code))
    }

    private func logger(for context: StepContext, executable: String) -> Logger {
        var logger = self.logger
        logger[metadataKey: "job_id"] = "\(context.jobID)"
        logger[metadataKey: "attempt"] = "\(context.attempt)"
        StepLog.addEvent(context, to: &logger)
        // Only the program name: arguments and environment values may carry secrets.
        logger[metadataKey: "command"] = "\(DownloadPath.lastComponent(executable))"
        return logger
    }
}

/// Writing stdin to a child that already exited raises SIGPIPE, whose default action would kill
/// the daemon. Ignored once per process; children get default dispositions back at spawn
/// (swift-subprocess resets every signal in the child).
private let ignoreSIGPIPE: Void = {
    _ = signal(SIGPIPE, SIG_IGN)
}()

/// Shared between the attempt, its watchdog and the hard deadline.
private final class ExecState: Sendable {
    private struct Inner {
        var pid: pid_t?
        var timedOut = false
        var finished = false
        var output: [UInt8] = []
    }

    private let inner = Mutex(Inner())
    private let ledger: StepProcessLedger?

    init(ledger: StepProcessLedger?) { self.ledger = ledger }

    var didTimeOut: Bool { inner.withLock { $0.timedOut } }

    /// Called as soon as the child exists. If the timeout fired during the spawn, act now.
    func started(pid: pid_t) {
        ledger?.record(pid: pid)
        let timedOut = inner.withLock { state -> Bool in
            state.pid = pid
            return state.timedOut
        }
        if timedOut { _ = kill(-pid, SIGTERM) }
    }

    /// The step's timeout: SIGTERM to the whole group (or, if not spawned yet, as soon as it is).
    func timeOut() {
        let pid = inner.withLock { state -> pid_t? in
            state.timedOut = true
            return state.finished ? nil : state.pid
        }
        if let pid { _ = kill(-pid, SIGTERM) }
    }

    /// Signals the group unless the attempt already finished (then `finished()` swept it).
    func killGroup(_ signal: Int32) {
        let pid = inner.withLock { state -> pid_t? in state.finished ? nil : state.pid }
        if let pid { _ = kill(-pid, signal) }
    }

    /// The run is over: SIGKILL whatever is left of the group (background children, a grandchild
    /// that held our pipes). The group id stays reserved while any member lives, so this cannot
    /// hit an unrelated group unless the group is already empty and its id reused in between.
    func finished() {
        let pid = inner.withLock { state -> pid_t? in
            state.finished = true
            return state.pid
        }
        if let pid {
            _ = kill(-pid, SIGKILL)
            ledger?.remove(pid: pid)
        }
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        inner.withLock { state in
            let room = StepOutcome.outputLimit - state.output.count
            if room > 0 { state.output.append(contentsOf: bytes.prefix(room)) }
        }
    }

    func output() -> [UInt8] { inner.withLock { $0.output } }
}

/// The outcome of one attempt, decided once by whichever finishes first, and the attempt's task.
private final class AttemptRace: Sendable {
    private struct State {
        var continuation: CheckedContinuation<StepOutcome, Never>?
        var outcome: StepOutcome?
        var attempt: Task<Void, Never>?
        var cancelled = false
    }

    private let state = Mutex(State())

    /// The first call wins; later ones are ignored.
    func finish(_ outcome: StepOutcome) {
        let continuation = state.withLock { state -> CheckedContinuation<StepOutcome, Never>? in
            guard state.outcome == nil else { return nil }
            state.outcome = outcome
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(returning: outcome)
    }

    /// Called once, from `withCheckedContinuation`.
    func wait(_ continuation: CheckedContinuation<StepOutcome, Never>) {
        let outcome = state.withLock { state -> StepOutcome? in
            if let outcome = state.outcome { return outcome }
            state.continuation = continuation
            return nil
        }
        if let outcome { continuation.resume(returning: outcome) }
    }

    func setAttempt(_ task: Task<Void, Never>) {
        let cancelled = state.withLock { state -> Bool in
            state.attempt = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func cancelAttempt() {
        let task = state.withLock { state -> Task<Void, Never>? in
            state.cancelled = true
            return state.attempt
        }
        task?.cancel()
    }
}
