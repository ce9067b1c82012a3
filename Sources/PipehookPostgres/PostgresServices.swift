import Foundation
import Logging
import PipehookStore
import PostgresNIO
import ServiceLifecycle

/// Keeps the store's `PostgresClient` running for as long as the daemon runs, and closes it last.
///
/// The client must already serve before the service group starts (migrations run at open, and
/// the dispatcher and reconciler query from their first moment), so `PostgresStore.open` starts
/// it; this service owns its end. Put it FIRST in the group: ServiceLifecycle shuts services down
/// in reverse order, so the HTTP server, the dispatcher's grace period and the reconciler are all
/// done with the store before its connections close.
public struct PostgresClientService: Service {
    let store: PostgresStore

    public init(store: PostgresStore) { self.store = store }

    public func run() async throws {
        await store.startClient()
        // Returns on graceful shutdown or cancellation; either way the client stops after.
        try? await gracefulShutdown()
        await store.close()
    }
}

/// Runs a service on one instance at a time among all those sharing the database (SPEC §9:
/// reconciliation runs on one instance), under a lease in `exclusive_leases` that the server's clock
/// expires, as job leases are.
///
/// An instance that does not get the lease tries again every `retryInterval`. The holder renews
/// every third of the lease (`LeaseKeeper`) and stops the service once the server says the lease is
/// no longer its, or when renewals have failed until shortly before the lease can end by the
/// holder's own monotonic clock: so the service has stopped before any other instance can take the
/// lease, whatever happened to the holder's connections (a session lock is freed the moment the
/// server ends the session, while its holder may still be running for seconds). A graceful stop
/// releases the lease, so another instance takes over at its next try; a holder that died is
/// taken over once its lease (three retry intervals, at least 3 s) has expired.
public struct ExclusiveService: Service {
    let store: PostgresStore
    let name: String
    let service: any Service
    let retryInterval: Duration
    let logger: Logger
    /// This service's holder name among all instances.
    let holder: String

    /// `name` keys the lease (each schema has its own table, so deployments in different schemas
    /// of one database do not exclude each other).
    public init(store: PostgresStore, name: String, service: any Service, retryInterval: Duration = .seconds(5), logger: Logger) {
        self.store = store
        self.name = name
        self.service = service
        self.retryInterval = retryInterval
        self.logger = logger
        holder = "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// How long a lease lasts.
    var leaseDuration: Duration { max(retryInterval * 3, .seconds(3)) }

    private struct LostLease: Error {}

    public func run() async throws {
        let duration = leaseDuration
        let milliseconds = duration.milliseconds
        var waitingLogged = false
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let sent = ContinuousClock.now
            do {
                if try await store.takeExclusive(name, holder: holder, milliseconds: milliseconds) {
                    logger.notice("running here: this instance holds the lease", metadata: ["service": .string(name)])
                    waitingLogged = false
                    do {
                        try await runWhileHeld(since: sent, duration: duration)
                    } catch is LostLease {
                        throw LostLease()
                    } catch {
                        try? await store.releaseExclusive(name, holder: holder)
                        throw error
                    }
                    // Stopped by shutdown: let another instance take over now.
                    try? await store.releaseExclusive(name, holder: holder)
                } else if !waitingLogged {
                    logger.info("another instance holds the lease; waiting", metadata: ["service": .string(name)])
                    waitingLogged = true
                }
            } catch is LostLease {
                logger.error("lost the lease; stopped here, trying again", metadata: ["service": .string(name)])
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                logger.error("cannot take the lease, or the service failed; trying again", metadata: [
                    "service": .string(name), "error": .string(PostgresStore.describe(error)),
                ])
            }
            if Task.isCancelled || Task.isShuttingDownGracefully { break }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: retryInterval) }
        }
    }

    /// Runs the service until it returns (shutdown) or its lease is lost.
    private func runWhileHeld(since sent: ContinuousClock.Instant, duration: Duration) async throws {
        let store = self.store, name = self.name, holder = self.holder, service = self.service
        let keeper = LeaseKeeper(
            duration: duration, since: sent, what: "the \(name) lease", metadata: ["service": .string(name)], logger: logger
        ) { milliseconds throws(StoreError) in
            try await store.renewExclusive(name, holder: holder, milliseconds: milliseconds)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            group.addTask {
                await keeper.keep()
                if keeper.isLost { throw LostLease() }
            }
            // The first to end decides: the service stopping (shutdown) or the lease being lost.
            try await group.next()
            group.cancelAll()
        }
    }
}
