import ServiceLifecycle

/// Runs the store's background WAL checkpoints for as long as the daemon runs.
public struct CheckpointService: Service {
    let store: SQLiteStore

    public init(store: SQLiteStore) { self.store = store }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await store.runCheckpoints()
        }
    }
}
