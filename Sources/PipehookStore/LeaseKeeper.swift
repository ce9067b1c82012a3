import Logging
import Synchronization

/// Keeps a lease alive while the work it guards runs, and says when it is lost: a job's lease
/// while its steps run (the dispatcher), or the lease of a service that runs on one instance at a
/// time (`ExclusiveService`).
///
/// The store sets and expires leases by its own clock, so this host never compares its wall clock
/// with it. What this host knows for sure is monotonic: a lease granted (or renewed) for `duration`
/// by a request sent at instant `t` lasts at least until `t + duration`. `keep()` renews every
/// third of the lease and returns — so the work is stopped — once the store says the lease is no
/// longer ours, or when renewals have failed until `stopMargin` before that instant: the work is
/// then stopped while the lease still holds, before anyone can take it over.
public final class LeaseKeeper: Sendable {
    /// Extends the lease by `duration` from the store's now; false when it is no longer ours.
    public typealias Renew = @Sendable (_ milliseconds: Int64) async throws(StoreError) -> Bool

    let renew: Renew
    let duration: Duration
    let logger: Logger
    let metadata: Logger.Metadata
    let what: String
    private let validUntil: Mutex<ContinuousClock.Instant>
    private let lost = Atomic<Bool>(false)

    /// `since`: when the request that took the lease was sent. `what` names the lease in log
    /// lines ("a job's lease"), `metadata` is added to them.
    public init(
        duration: Duration, since: ContinuousClock.Instant, what: String, metadata: Logger.Metadata = [:], logger: Logger,
        renew: @escaping Renew
    ) {
        self.renew = renew
        self.duration = duration
        self.what = what
        self.metadata = metadata
        self.logger = logger
        validUntil = Mutex(since + duration)
    }

    /// True once `keep()` gave the lease up.
    public var isLost: Bool { lost.load(ordering: .acquiring) }

    /// How long before the lease's certain end the work is stopped: enough for a process group to
    /// get SIGTERM, its grace and SIGKILL (a few seconds), never more than half the lease.
    public static func stopMargin(for duration: Duration) -> Duration {
        min(max(duration / 4, .seconds(3)), duration / 2)
    }

    /// The next wait, pure: renew a third of the lease after the last renewal, sooner (a tenth of
    /// the lease, at least 100 ms) after a failed one, never past the stop instant.
    public static func nextWait(now: ContinuousClock.Instant, validUntil: ContinuousClock.Instant, duration: Duration, failed: Bool) -> Duration {
        let stopAt = validUntil - stopMargin(for: duration)
        let regular = failed ? max(duration / 10, .milliseconds(100)) : duration / 3
        return max(.zero, min(regular, stopAt - now))
    }

    /// Returns when the lease is lost (then `isLost` is true) or when cancelled (the work ended).
    public func keep() async {
        var failed = false
        while !Task.isCancelled {
            let until = validUntil.withLock { $0 }
            let wait = Self.nextWait(now: .now, validUntil: until, duration: duration, failed: failed)
            do { try await Task.sleep(for: wait) } catch { return }
            if ContinuousClock.now >= until - Self.stopMargin(for: duration) {
                give(up: "renewals failed until shortly before the lease ends")
                return
            }
            let sent = ContinuousClock.now
            do {
                if try await renew(duration.milliseconds) {
                    validUntil.withLock { $0 = max($0, sent + duration) }
                    failed = false
                } else {
                    give(up: "another holder took it (the lease had expired)")
                    return
                }
            } catch {
                if Task.isCancelled { return }
                var metadata = self.metadata
                metadata["error"] = .string(error.message)
                logger.warning("cannot renew \(what); trying again", metadata: metadata)
                failed = true
            }
        }
    }

    private func give(up reason: String) {
        lost.store(true, ordering: .releasing)
        var metadata = self.metadata
        metadata["reason"] = .string(reason)
        logger.error("lost \(what); stopping what it guards", metadata: metadata)
    }
}
