import Logging
import PipehookDispatch
import PipehookHTTP
import PipehookSettings
import ServiceLifecycle
import UnixSignals

/// `SIGHUP` reloads the configuration file: validated first; sources, secrets, body limit,
/// routes, retry policies and log format/level are swapped whole, so a request or a step sees
/// either the old or the new configuration, never a mix. An invalid file keeps the running one.
/// The TLS certificate and key are re-read too: new handshakes use the new pair.
struct ReloadService: Service, CustomStringConvertible {
    var description: String { "ReloadService" }

    let configPath: String?
    let initial: Settings
    let intake: IntakeConfigurationBox
    let routes: RouteTable
    let logControl: LogControl?
    let logger: Logger
    /// The pair new TLS handshakes use, when the daemon serves TLS itself.
    var tls: TLSCredentials?
    var notifier = SystemdNotifier(environment: [:])
    /// Applies the parts owned by other services (the API client, the reconciler).
    var onReload: @Sendable (Settings) async -> Void = { _ in }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            var running = initial
            for await _ in signals {
                notifier.reloading()
                let (next, applied) = reload(from: running)
                await onReload(next)
                running = next
                notifier.reloaded(status: applied ? "configuration reloaded" : "reload failed; the running configuration stays")
            }
        }
    }

    /// Returns the settings now in force, and whether they are the file's.
    func reload(from running: Settings) -> (Settings, applied: Bool) {
        guard let configPath else {
            logger.notice("SIGHUP ignored: running on built-in defaults, there is no file to reload")
            return (running, false)
        }
        let next: Settings
        do {
            next = try SettingsLoader.load(configPath: configPath, createSecret: false).settings
        } catch {
            logger.error("reload failed; the running configuration stays", metadata: [
                "config": .string(configPath),
                "problems": .array(error.problems.map { .string($0.description) }),
            ])
            return (running, false)
        }
        // The certificate and key are re-read on every reload (a renewed certificate usually
        // keeps its paths); a pair that does not load refuses the whole reload.
        var pair: TLSCredentials.Pair?
        if let files = next.tls, tls != nil {
            do {
                pair = try Daemon.tlsPair(files)
            } catch {
                logger.error("reload failed; the running configuration stays", metadata: [
                    "config": .string(configPath), "problems": .array([.string(String(describing: error))]),
                ])
                return (running, false)
            }
        }
        var needsRestart: [String] = []
        if next.listen != running.listen { needsRestart.append("listen") }
        if next.store != running.store { needsRestart.append("store") }
        if next.dataDir != running.dataDir { needsRestart.append("data_dir") }
        if (next.tls == nil) != (running.tls == nil) { needsRestart.append("tls") }
        if next.readTimeoutMilliseconds != running.readTimeoutMilliseconds { needsRestart.append("read_timeout") }
        if (next.api == nil) != (running.api == nil) { needsRestart.append("api") }
        if next.adminToken != running.adminToken { needsRestart.append("admin_token") }
        if next.leaseMilliseconds != running.leaseMilliseconds { needsRestart.append("lease") }
        if next.maxConnections != running.maxConnections { needsRestart.append("max_connections") }
        if next.storeTimeoutMilliseconds != running.storeTimeoutMilliseconds { needsRestart.append("store_timeout") }
        if let pair { tls?.replace(pair) }
        intake.replace(Daemon.intakeConfiguration(next))
        routes.replace(next.routes)
        logControl?.update(format: next.logFormat, level: next.logLevel)
        var metadata: Logger.Metadata = [
            "config": .string(configPath),
            "sources": .array(next.sources.map { .string($0.name) }),
            "routes": .array(next.routes.map { .string($0.name) }),
        ]
        if !needsRestart.isEmpty {
            metadata["needs_restart"] = .array(needsRestart.map { .string($0) })
        }
        logger.notice("configuration reloaded", metadata: metadata)
        return (next, true)
    }
}
