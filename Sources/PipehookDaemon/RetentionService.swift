import Foundation
import Logging
import PipehookSettings
import PipehookStore
import ServiceLifecycle

/// Applies retention while the daemon runs (what `pipehook prune` does, without `--dead`):
/// a minute after start, then every hour.
struct RetentionService: Service {
    let store: any Storage
    let dedupWindowSeconds: Int64
    let retentionSeconds: Int64
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
