import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import AsyncHTTPClient
import PipehookDispatch
import PipehookHandlers
import PipehookHTTP
import PipehookMetrics
import PipehookReconcile
import Prometheus
import PipehookPostgres
import PipehookSettings
import PipehookSQLite
import PipehookStore
import ServiceLifecycle
import Synchronization

/// A command failed for a reason the user can act on; printed to stderr, exit 1.
public struct CommandFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A private Prometheus registry and the series pipehook records into it. Not the global
/// MetricsSystem: a process may build several applications (tests do).
public struct Telemetry: Sendable {
    public let registry = PrometheusCollectorRegistry()
    public let metrics: PipehookMetrics

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300),
        ]
        metrics = PipehookMetrics(factory: factory)
    }
}

/// Lets services built before the dispatcher wake it.
final class Wake: Sendable {
    private let target = Mutex<Dispatcher?>(nil)
    var dispatcher: Dispatcher? {
        get { target.withLock { $0 } }
        set { target.withLock { $0 = newValue } }
    }
    func jobsCreated() { dispatcher?.notify() }
}

/// Composition root: settings → store → HTTP intake → one service group.
public enum Daemon {
    /// Opens the configured store for a CLI command (read-write and migrated unless `readOnly`).
    /// A PostgreSQL store keeps its client running until the process exits.
    public static func openStore(_ settings: Settings, readOnly: Bool = false) async throws -> any Storage {
        try await openStore(settings.storeSettings, readOnly: readOnly)
    }

    /// As above, from only the keys that locate the store.
    public static func openStore(_ settings: StoreSettings, readOnly: Bool = false) async throws -> any Storage {
        // Commands report failures through what they throw; their stdout is for their output.
        let quiet = Logger(label: "pipehook", factory: { _ in SwiftLogNoOpLogHandler() })
        return try await openStore(settings, readOnly: readOnly, daemon: false, logger: quiet).store
    }

    /// An opened store, the services that keep it healthy while the daemon runs (to be placed
    /// first: they stop last), and, when several instances share it, the PostgreSQL store that
    /// the single-instance parts (reconciliation) take their lock from.
    struct OpenedStore {
        var store: any Storage
        var services: [any Service]
        var shared: PostgresStore?
    }

    static func openStore(_ settings: StoreSettings, readOnly: Bool, daemon: Bool, logger: Logger) async throws -> OpenedStore {
        switch settings.store {
        case .sqlite(let path):
            var options = SQLiteStore.Options()
            options.readOnly = readOnly
            options.checkpointInBackground = daemon
            // A write waits for another process's lock no longer than a request waits for it.
            options.busyTimeout = Double(settings.storeTimeoutMilliseconds) / 1000
            do {
                let store = try SQLiteStore(path: path, options: options)
                return OpenedStore(store: store, services: daemon ? [CheckpointService(store: store)] : [], shared: nil)
            } catch {
                throw CommandFailure(error.message)
            }
        case .postgres(let url):
            // Never `url` in a message: it carries the password.
            do {
                let location = try PostgresLocation(url: url)
                // Read-only commands do not migrate: they must not change a schema a daemon of
                // another version may be using; a missing table then reads as an error.
                let store = try await PostgresStore.open(location, migrate: !readOnly, logger: logger)
                return OpenedStore(store: store, services: daemon ? [PostgresClientService(store: store)] : [], shared: store)
            } catch {
                throw CommandFailure(error.message)
            }
        }
    }

    static func reconcileConfiguration(_ settings: Settings) -> Reconciler.Configuration {
        let routes = intakeConfiguration(settings).routesByStatus
        return Reconciler.Configuration(
            sources: Set(settings.apiSources), pollAfterMilliseconds: (settings.api?.pollAfterSeconds ?? 600) * 1000,
            routes: { routes[$0] ?? [] }
        )
    }

    public static func intakeConfiguration(_ settings: Settings) -> IntakeConfiguration {
        var configuration = IntakeConfiguration(
            sources: settings.sources.map { IntakeSource(name: $0.name, format: $0.format, verifier: $0.verifier) },
            maxBodyBytes: settings.maxBodyBytes,
            routesByStatus: Dictionary(grouping: settings.routes.flatMap { route in route.on.map { ($0, route.pin) } }, by: \.0)
                .mapValues { $0.map(\.1) }
        )
        var folders: [String] = []
        for case .download(let download) in settings.routes.flatMap({ $0.steps.map(\.action) }) where !folders.contains(download.directory) {
            folders.append(download.directory)
        }
        configuration.archiveDirectories = folders
        return configuration
    }

    /// Builds the application without running it, so tests can drive it in-process.
    public static func application(
        settings: Settings, store: any Storage, services: [any Service] = [], logger: Logger,
        metrics: Telemetry? = nil, intakeConfiguration box: IntakeConfigurationBox? = nil, server: HTTPServerBuilder? = nil,
        onJobsCreated: @escaping @Sendable () -> Void = {},
        track: (@Sendable (String) async throws(StoreError) -> TrackOutcome)? = nil,
        api: PipevideoAPI? = nil,
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let intake = WebhookIntake(
            store: store, configuration: box ?? IntakeConfigurationBox(intakeConfiguration(settings)), logger: logger,
            metrics: metrics?.metrics ?? .discarding, storeTimeout: .milliseconds(settings.storeTimeoutMilliseconds),
            onJobsCreated: onJobsCreated
        )
        var metricsText: (@Sendable () -> [UInt8])?
        if let registry = metrics?.registry {
            metricsText = { registry.emitToBuffer() }
        }
        let admin = AdminEndpoints(
            auth: AdminAuth(token: settings.adminToken), store: store, track: track,
            generationDocument: { id in
                try await Commands.statusDocument(generationID: id, store: store).map { Array($0.utf8) }
            },
            generationPage: { query in Array(try await Commands.generationPage(query, store: store).utf8) },
            archiveDirectories: { [configuration = intake.configuration] in configuration.current.archiveDirectories },
            routes: { [configuration = intake.configuration] status in configuration.current.routes(for: status) },
            jobsCreated: onJobsCreated,
            tally: metrics?.metrics.tally
        )
        // The gateway (SPEC §7): with `api`, for `admin_token` and `gateway.tokens`.
        var gateway: GatewayEndpoints?
        if let api, let source = settings.apiSources.first {
            // The routes in force now (a reload replaces them in the intake's box).
            let box = intake.configuration
            gateway = GatewayEndpoints(
                auth: GatewayAuth(adminToken: settings.adminToken, gatewayTokens: settings.gatewayTokens),
                control: GenerationControl(store: store, api: api, source: source, routes: { box.current.routesByStatus[$0] ?? [] }, logger: logger),
                defaultModel: settings.api?.defaults.model, defaultEngine: settings.api?.defaults.engine, onJobsCreated: onJobsCreated
            )
        }
        return Application(
            router: HTTPRoutes.router(intake: intake, metricsText: metricsText, admin: admin, gateway: gateway),
            server: server ?? HTTPRoutes.server(limits: settings.connectionLimits),
            configuration: ApplicationConfiguration(
                address: .hostname(settings.listen.host, port: settings.listen.port),
                serverName: nil
            ),
            services: services + (admin.auth.isEnabled ? [ActivityPrimer(cache: admin.activityCache, store: store, now: admin.now)] : []),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? settings.listen.port) },
            logger: logger
        )
    }

    /// `pipehook serve`: runs until SIGTERM/SIGINT, then drains in-flight requests.
    public static func serve(_ loaded: SettingsLoader.Loaded, logger: Logger, logControl: LogControl? = nil) async throws {
        let settings = loaded.settings
        let credentials = try settings.tls.map { TLSCredentials(try tlsPair($0)) }
        let server = try serverBuilder(settings: settings, credentials: credentials)
        let notifier = SystemdNotifier()
        try FileManager.default.createDirectory(atPath: settings.dataDir, withIntermediateDirectories: true)
        let opened = try await openStore(settings.storeSettings, readOnly: false, daemon: true, logger: logger)
        let store = opened.store, storeServices = opened.services
        switch loaded.origin {
        case .file(let path):
            logger.info("configuration loaded", metadata: ["config": .string(path)])
        case .builtInDefaults(let secretFrom, let generated):
            logger.notice("no pipehook.yaml: running on built-in defaults, signing secret from \(secretFrom)")
            if let generated {
                // Printed once, when generated, to the terminal rather than the log stream.
                let secret = try String(contentsOfFile: generated, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                FileHandle.standardError.write(Data("""
                    pipehook generated a webhook signing secret and saved it in \(generated):
                        \(secret)
                    It is only good for local tests (`pipehook send`). For real traffic, set PIPEHOOK_SECRET
                    or a configuration file to the endpoint secret shown in Pipevideo's webhook settings.

                    """.utf8))
            }
        }
        // Step process groups a SIGKILLed run left behind end before their steps run again.
        let ledger = StepProcessLedger(directory: settings.dataDir + "/steps")
        let leftovers = ledger.killLeftovers()
        if !leftovers.isEmpty {
            logger.notice("killed step processes left running by the last stop", metadata: ["process_groups": .array(leftovers.map { .stringConvertible($0) })])
        }
        // SQLite serves one daemon: whatever it left running was interrupted by its stop. A
        // shared store's running jobs may belong to live instances: their leases decide.
        if opened.shared == nil {
            let requeued = try await store.requeueRunning(at: Int64(Date().timeIntervalSince1970 * 1000))
            if requeued > 0 { logger.notice("requeued jobs interrupted by the last stop", metadata: ["jobs": .stringConvertible(requeued)]) }
        }
        // Neither client follows redirects by itself: downloads follow them one hop at a time
        // after checking each (https only unless allow_http); re-POSTs never do (SPEC §5).
        let httpClient = StepHTTP.makeClient()
        let exec = ExecRunner(logger: logger, ledger: ledger)
        let download = DownloadRunner(httpClient: httpClient, logger: logger)
        let post = PostRunner(httpClient: httpClient, logger: logger)
        let telemetry = Telemetry()
        let routeTable = RouteTable(settings.routes)
        let intakeBox = IntakeConfigurationBox(intakeConfiguration(settings))
        // Reconciliation (SPEC §7) only with `api`; its client also refreshes expired download URLs.
        let api = settings.api.map { PipevideoAPI(settings: $0, httpClient: httpClient, logger: logger, metrics: telemetry.metrics) }
        let wake = Wake()
        let reconciler = api.map { api in
            Reconciler(
                store: store, api: api, configuration: reconcileConfiguration(settings), logger: logger,
                onJobsCreated: { wake.jobsCreated() }, metrics: telemetry.metrics
            )
        }
        let refreshing = RefreshingDownload(
            download: { await download.run($0, context: $1) }, api: api,
            sources: { reconciler?.sources ?? [] }, logger: logger
        )
        var dispatcherOptions = Dispatcher.Options()
        dispatcherOptions.leaseMilliseconds = settings.leaseMilliseconds
        let dispatcher = Dispatcher(
            store: store, routes: routeTable,
            runners: StepRunners(
                exec: { await exec.run($0, context: $1) },
                download: { await refreshing.run($0, context: $1) },
                post: { await post.run($0, context: $1) }
            ),
            logger: logger, metrics: telemetry.metrics, options: dispatcherOptions
        )
        wake.dispatcher = dispatcher
        // Shutdown runs in reverse: the server stops taking requests first, then running steps
        // get their grace period, then the store's checkpointer stops.
        var configPath: String?
        if case .file(let path) = loaded.origin { configPath = path }
        let retentionWindows = RetentionWindows(dedupWindowSeconds: settings.dedupWindowSeconds, retentionSeconds: settings.retentionSeconds)
        let reload = ReloadService(
            configPath: configPath, initial: settings, intake: intakeBox, routes: routeTable, logControl: logControl, logger: logger,
            tls: credentials, notifier: notifier,
            onReload: { next in
                retentionWindows.update(next)
                if let nextAPI = next.api { await api?.update(nextAPI) }
                reconciler?.update(reconcileConfiguration(next))
            }
        )
        var track: (@Sendable (String) async throws(StoreError) -> TrackOutcome)?
        if let reconciler, let source = settings.apiSources.first {
            track = { id throws(StoreError) in
                let outcome = try await store.track(source: source, generationID: id, at: Int64(Date().timeIntervalSince1970 * 1000))
                reconciler.notify()
                return outcome
            }
        }
        // With a shared store, reconciliation runs on one instance at a time (SPEC §9).
        let reconcilerService: (any Service)? = reconciler.map { reconciler in
            guard let shared = opened.shared else { return reconciler }
            return ExclusiveService(store: shared, name: "reconcile", service: reconciler, logger: logger)
        }
        let app = application(
            settings: settings, store: store,
            // Each one must run until shutdown; one that returns stops the daemon with an error.
            services: (storeServices + [dispatcher] + (reconcilerService.map { [$0] } ?? []) + [
                reload,
                RetentionService(store: store, windows: retentionWindows, logger: logger),
            ] + (notifier.isActive ? [SystemdStoppingService(notifier: notifier)] : [])).map { Essential(service: $0) },
            logger: logger,
            metrics: telemetry, intakeConfiguration: intakeBox, server: server, onJobsCreated: { dispatcher.notify() }, track: track,
            api: api,
            onServerRunning: { port in
                logger.notice("listening", metadata: [
                    "host": .string(settings.listen.host), "port": .stringConvertible(port),
                    "sources": .array(settings.sources.map { .string($0.name) }),
                    "routes": .array(settings.routes.map { .string($0.name) }),
                ])
                notifier.ready(status: "listening on \(settings.listen.host):\(port)")
            }
        )
        do {
            try await app.runService()
        } catch {
            logger.critical("stopped on an error", metadata: ["error": .string(String(describing: error))])
            try? await httpClient.shutdown()
            throw error
        }
        try? await httpClient.shutdown()
        logger.notice("stopped")
    }
}

extension Settings {
    /// What every connection is held to (`read_timeout`, `max_connections`).
    var connectionLimits: ConnectionLimits {
        ConnectionLimits(readTimeoutMilliseconds: readTimeoutMilliseconds, maxConnections: maxConnections)
    }
}

/// Reads the status page's chart windows once at start, beside serving (the first page load
/// is then as quick as the next), and then waits for shutdown like every other service.
struct ActivityPrimer: Service {
    let cache: ActivityCache
    let store: any Storage
    let now: @Sendable () -> Int64

    func run() async throws {
        await cache.prime(store: store, now: now())
        try? await gracefulShutdown()
    }
}
