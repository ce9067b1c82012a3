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
/// reconciliation runs on one instance), under a session-level advisory lock held on a
/// connection of its own.
///
/// An instance that does not get the lock tries again every `retryInterval`; when the instance
/// holding it stops or dies, its session ends, PostgreSQL releases the lock, and another takes
/// over. While it runs the service, the holder checks its connection every half `retryInterval`:
/// if the connection is lost (and with it the lock), the service is stopped at once, usually
/// before another instance's next try, and in any case within that check.
public struct ExclusiveService: Service {
    let store: PostgresStore
    let name: String
    let service: any Service
    let retryInterval: Duration
    let logger: Logger

    /// `name` keys the lock, together with the schema (so deployments in different schemas of one
    /// database do not exclude each other).
    public init(store: PostgresStore, name: String, service: any Service, retryInterval: Duration = .seconds(5), logger: Logger) {
        self.store = store
        self.name = name
        self.service = service
        self.retryInterval = retryInterval
        self.logger = logger
    }

    private struct LostLock: Error {}

    public func run() async throws {
        let key: PostgresQuery = "hashtextextended('pipehook:exclusive:' || \(name) || ':' || coalesce(current_schema(), ''), 0)"
        var waitingLogged = false
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                let ran = try await store.client.withConnection { connection in
                    let tryLock = PostgresQuery(unsafeSQL: "SELECT pg_try_advisory_lock(\(key.sql))", binds: key.binds)
                    let answer = await Deadline.within(max(retryInterval, .seconds(5))) {
                        try await connection.query(tryLock, logger: logger).collect().first?.decode(Bool.self) ?? false
                    }
                    guard case .success(let acquired) = answer else {
                        // Unanswered: whether the lock was taken is unknown, so the session goes.
                        try? await connection.close()
                        throw LostLock()
                    }
                    guard acquired else { return false }
                    logger.notice("running here: this instance holds the lock", metadata: ["service": .string(name)])
                    defer { waitingLogged = false }
                    do {
                        try await runWhileHeld(on: connection)
                    } catch {
                        await release(key, on: connection)
                        throw error
                    }
                    await release(key, on: connection)
                    return true
                }
                if !ran, !waitingLogged {
                    logger.info("another instance holds the lock; waiting", metadata: ["service": .string(name)])
                    waitingLogged = true
                }
            } catch is LostLock {
                logger.error("lost the connection holding the lock; stopped here, trying again", metadata: ["service": .string(name)])
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                logger.error("cannot take the lock, or the service failed; trying again", metadata: [
                    "service": .string(name), "error": .string(PostgresStore.describe(error)),
                ])
            }
            if Task.isCancelled || Task.isShuttingDownGracefully { break }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: retryInterval) }
        }
    }

    /// Runs the service until it returns (shutdown) or the lock's connection fails.
    private func runWhileHeld(on connection: PostgresConnection) async throws {
        // Twice as often as the others try, so a holder that lost its session has stopped
        // before another instance can have taken the lock.
        let service = self.service, interval = self.retryInterval / 2, logger = self.logger
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    if Task.isCancelled { return }
                    // A session the server ended may leave a query unanswered: a closed
                    // connection, an error or no answer in time all mean the lock is gone.
                    if connection.isClosed { throw LostLock() }
                    let answer = await Deadline.within(max(interval, .seconds(5))) {
                        try await connection.query("SELECT 1", logger: logger).collect().count
                    }
                    if Task.isCancelled { return }
                    guard case .success = answer else { throw LostLock() }
                }
            }
            // The first to end decides: the service stopping (shutdown) or the lock being lost.
            try await group.next()
            group.cancelAll()
        }
    }

    private func release(_ key: PostgresQuery, on connection: PostgresConnection) async {
        let logger = self.logger
        let unlock = PostgresQuery(unsafeSQL: "SELECT pg_advisory_unlock(\(key.sql))", binds: key.binds)
        let answer = connection.isClosed ? nil : await Deadline.within(max(retryInterval, .seconds(5))) {
            try await connection.query(unlock, logger: logger).collect().count
        }
        if case .success = answer { return }
        // A session that may still hold the lock must not go back to the pool.
        try? await connection.close()
    }
}
