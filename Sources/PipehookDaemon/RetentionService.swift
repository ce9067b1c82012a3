import Foundation
import Logging
import PipehookSettings
import PipehookStore
import ServiceLifecycle
import Synchronization

/// The windows retention applies, replaced by a reload (taken at the next run).
final class RetentionWindows: Sendable {
    private let value: Mutex<(dedup: Int64, retention: Int64)>
    init(dedupWindowSeconds: Int64, retentionSeconds: Int64) { value = Mutex((dedupWindowSeconds, retentionSeconds)) }
    var current: (dedup: Int64, retention: Int64) { value.withLock { $0 } }
    func update(_ settings: Settings) { value.withLock { $0 = (settings.dedupWindowSeconds, settings.retentionSeconds) } }
}

/// Applies retention while the daemon runs (what `pipehook prune` does, without `--dead`):
/// a minute after start, then every hour.
struct RetentionService: Service {
    let store: any Storage
    let windows: RetentionWindows
    let logger: Logger
    var firstDelay: Duration = .seconds(60)
    var interval: Duration = .seconds(3600)

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var delay = firstDelay
            while !Task.isCancelled {
                do { try await Task.sleep(for: delay) } catch { return }
                delay = interval
                do {
                    let (dedupWindowSeconds, retentionSeconds) = windows.current
                    let report = try await store.prune(
                        nowMilliseconds: Int64(Date().timeIntervalSince1970 * 1000),
                        dedupWindowSeconds: dedupWindowSeconds, retentionSeconds: retentionSeconds, includingDead: false
                    )
                    logger.info("retention applied", metadata: [
                        "delivery_ids": .stringConvertible(report.deliveries), "jobs": .stringConvertible(report.jobs),
                        "generations": .stringConvertible(report.generations), "events": .stringConvertible(report.events),
                        "unrecognized": .stringConvertible(report.unrecognized),
                    ])
                } catch {
                    logger.error("retention failed", metadata: ["error": .string(String(describing: error))])
                }
            }
        }
    }
}

/// A daemon service that returns by itself, not because the daemon is stopping, is a failure: the
/// group then stops and the process exits non-zero with the service's name (so systemd's
/// `Restart=on-failure` restarts it), instead of ending quietly with exit 0.
public struct Essential: Service, CustomStringConvertible {
    let service: any Service
    public init(service: any Service) { self.service = service }
    /// The type's name only: a service's fields may hold credentials.
    public var description: String { String(describing: type(of: service)) }

    public func run() async throws {
        try await service.run()
        if !Task.isCancelled, !Task.isShuttingDownGracefully { throw ServiceStopped(service: description) }
    }
}

public struct ServiceStopped: Error, CustomStringConvertible {
    public var service: String
    public var description: String { "the \(service) service stopped by itself" }
}
