import Logging
import PipehookStore
import Synchronization

/// Keeps one job's lease alive while its steps run, and says when it is lost.
///
/// The store sets and expires leases by its own clock, so this host never compares its wall clock
/// with it. What this host knows for sure is monotonic: a lease granted (or renewed) for `duration`
/// by a request sent at instant `t` lasts at least until `t + duration`. `keep()` renews every
/// third of the lease and returns — so the step is stopped — once the store says the lease is no
/// longer ours (the fence is stale), or when renewals have failed until `stopMargin` before that
/// instant: the step's process group is then killed while the lease still holds, before anyone can
/// take the job over.
final class LeaseKeeper: Sendable {
    let store: any JobStore
    let lease: JobLease
    let duration: Duration
    let logger: Logger
    private let validUntil: Mutex<ContinuousClock.Instant>
    private let lost = Atomic<Bool>(false)

    init(store: any JobStore, lease: JobLease, duration: Duration, since: ContinuousClock.Instant, logger: Logger) {
        self.store = store
        self.lease = lease
        self.duration = duration
        self.logger = logger
        validUntil = Mutex(since + duration)
    }

    /// True once `keep()` gave the lease up.
    var isLost: Bool { lost.load(ordering: .acquiring) }

    /// How long before the lease's certain end the step is stopped: enough for a process group to
    /// get SIGTERM, its grace and SIGKILL (a few seconds), never more than half the lease.
    static func stopMargin(for duration: Duration) -> Duration {
        min(max(duration / 4, .seconds(3)), duration / 2)
    }

    /// The next wait, pure: renew a third of the lease after the last renewal, sooner (a tenth of
    /// the lease, at least 100 ms) after a failed one, never past the stop instant.
    static func nextWait(now: ContinuousClock.Instant, validUntil: ContinuousClock.Instant, duration: Duration, failed: Bool) -> Duration {
        let stopAt = validUntil - stopMargin(for: duration)
        let regular = failed ? max(duration / 10, .milliseconds(100)) : duration / 3
        return max(.zero, min(regular, stopAt - now))
    }

    /// Returns when the lease is lost (then `isLost` is true) or when cancelled (the steps ended).
    func keep() async {
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
                let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
                if try await store.renewLease(lease, leaseMilliseconds: milliseconds) {
                    validUntil.withLock { $0 = max($0, sent + duration) }
                    failed = false
                } else {
                    give(up: "another claim took the job (the lease had expired)")
                    return
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("cannot renew a job's lease; trying again", metadata: [
                    "job_id": .string(lease.jobID), "error": .string(error.message),
                ])
                failed = true
            }
        }
    }

    private func give(up reason: String) {
        lost.store(true, ordering: .releasing)
        logger.error("lost a job's lease; stopping its step", metadata: ["job_id": .string(lease.jobID), "reason": .string(reason)])
    }
}
