import PipehookStore
import Synchronization

/// The status page's activity, with the event counts of finished buckets kept (issue 14). An
/// event's time is when pipehook received it, so once a bucket has ended its events no longer
/// change: each page reads only the buckets still open (the day by hour reads at most an hour of
/// events instead of a day's, which on a busy store is most of the page's time). Attempts are read
/// whole every time: one that started in a finished bucket may still end.
///
/// What a kept bucket can miss: events `pipehook reprocess` adds with their old receive time, and
/// those of another instance whose clock is behind by more than `settle`. Both show after a
/// restart; neither is lost from the store.
public final class ActivityCache: Sendable {
    /// A bucket counts as finished this long after its end (a delivery received just before the
    /// end may still be committing).
    static let settle: Int64 = 10_000

    private struct Kept: Sendable {
        var events: [Activity.EventCount]
        var unrecognized: Int
    }

    /// Bucket width → bucket start → its counts (with `bucket` 0 in `events`).
    private let kept = Mutex<[Int64: [Int64: Kept]]>([:])

    public init() {}

    /// Reads the page's two windows once (at start), so its first load is as quick as the next.
    public func prime(store: any Storage, now: Int64) async {
        for window in StatusPageSnapshot.windows(endingAt: now) { _ = try? await activity(window, now: now, store: store) }
    }

    func activity(_ window: ActivityWindow, now: Int64, store: any Storage) async throws(StoreError) -> Activity {
        let width = window.bucketMilliseconds
        // Buckets are in time order, so the finished ones are a prefix.
        let finished = (0..<window.buckets).prefix { window.start(of: $0) + width + Self.settle <= now }.count
        let known = kept.withLock { $0[width] ?? [:] }
        var found: [Int: Kept] = [:]
        var missing: [Int] = []
        for bucket in 0..<finished {
            if let counts = known[window.start(of: bucket)] { found[bucket] = counts } else { missing.append(bucket) }
        }
        var fresh: [Int64: Kept] = [:]
        if let first = missing.first, let last = missing.last {
            let range = ActivityWindow(since: window.start(of: first), bucketMilliseconds: width, buckets: last - first + 1)
            let read = try await store.activity(range, parts: .events)
            for index in 0..<range.buckets {
                let counts = Kept(
                    events: read.events.filter { $0.bucket == index }.map { var row = $0; row.bucket = 0; return row },
                    unrecognized: read.unrecognized[index]
                )
                fresh[range.start(of: index)] = counts
                found[first + index] = counts
            }
        }
        var activity = try await store.activity(window, parts: .attempts)
        for (bucket, counts) in found {
            activity.events += counts.events.map { var row = $0; row.bucket = bucket; return row }
            activity.unrecognized[bucket] = counts.unrecognized
        }
        if finished < window.buckets {
            let open = ActivityWindow(since: window.start(of: finished), bucketMilliseconds: width, buckets: window.buckets - finished)
            let read = try await store.activity(open, parts: .events)
            activity.events += read.events.map { var row = $0; row.bucket += finished; return row }
            for index in 0..<open.buckets { activity.unrecognized[finished + index] = read.unrecognized[index] }
        }
        let oldest = window.since
        kept.withLock { kept in
            var byStart = kept[width] ?? [:]
            byStart.merge(fresh) { _, new in new }
            // Only what a window ending now can still show.
            byStart = byStart.filter { $0.key >= oldest }
            kept[width] = byStart
        }
        return activity.normalized()
    }
}
