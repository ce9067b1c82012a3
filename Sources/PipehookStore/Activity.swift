import PipehookLifecycle

/// A window of time cut into equal buckets, for the status page's charts (issue 14): the last
/// hour by minute, the last day by hour.
public struct ActivityWindow: Sendable, Equatable {
    /// Unix milliseconds, inclusive.
    public var since: Int64
    public var bucketMilliseconds: Int64
    public var buckets: Int

    public init(since: Int64, bucketMilliseconds: Int64, buckets: Int) {
        self.since = since
        self.bucketMilliseconds = max(1, bucketMilliseconds)
        self.buckets = max(1, buckets)
    }

    /// The `buckets` whole buckets that end with the one holding `now`.
    public static func last(_ buckets: Int, of bucketMilliseconds: Int64, endingAt now: Int64) -> Self {
        let width = max(1, bucketMilliseconds)
        let current = now - now % width
        return Self(since: current - width * Int64(buckets - 1), bucketMilliseconds: width, buckets: buckets)
    }

    /// Exclusive end.
    public var until: Int64 { since + bucketMilliseconds * Int64(buckets) }

    /// The bucket a moment falls in, or nil outside the window.
    public func bucket(of time: Int64) -> Int? {
        guard time >= since, time < until else { return nil }
        return Int((time - since) / bucketMilliseconds)
    }

    public func start(of bucket: Int) -> Int64 { since + bucketMilliseconds * Int64(bucket) }
}

/// What the store knows happened in a window: every stored event by bucket, transition and the
/// status it reported; unrecognized deliveries; attempts by the bucket they started in and how
/// they ended; and the durations of the most recent finished attempts. Deliveries answered as
/// duplicates or refused are not stored; their totals are in the metrics.
public struct Activity: Sendable, Equatable {
    public struct EventCount: Sendable, Equatable, Hashable {
        public var bucket: Int
        public var transition: Transition
        public var status: GenerationStatus
        public var count: Int
        public init(bucket: Int, transition: Transition, status: GenerationStatus, count: Int) {
            self.bucket = bucket
            self.transition = transition
            self.status = status
            self.count = count
        }
    }

    public struct AttemptCount: Sendable, Equatable, Hashable {
        public var bucket: Int
        public var outcome: AttemptOutcome
        public var count: Int
        public init(bucket: Int, outcome: AttemptOutcome, count: Int) {
            self.bucket = bucket
            self.outcome = outcome
            self.count = count
        }
    }

    /// Which parts a store reads: the event counts (events and unrecognized deliveries) of a
    /// finished bucket never change, so they can be kept; attempts can still end.
    public struct Parts: OptionSet, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let events = Parts(rawValue: 1)
        public static let attempts = Parts(rawValue: 2)
        public static let all: Parts = [.events, .attempts]
    }

    /// How many attempt durations a store reads for the percentiles (the most recent first).
    public static let durationLimit = 5_000

    public var window: ActivityWindow
    public var events: [EventCount]
    /// Per bucket, `window.buckets` long.
    public var unrecognized: [Int]
    /// Attempts that ended (not those still running).
    public var attempts: [AttemptCount]
    /// Milliseconds each of the most recent finished attempts (started in the window) took.
    public var attemptDurations: [Int64]

    public init(window: ActivityWindow, events: [EventCount] = [], unrecognized: [Int]? = nil, attempts: [AttemptCount] = [], attemptDurations: [Int64] = []) {
        self.window = window
        self.events = events
        self.unrecognized = unrecognized ?? Array(repeating: 0, count: window.buckets)
        self.attempts = attempts
        self.attemptDurations = attemptDurations
    }

    /// One order for rows read in any order (stores group in SQL; tests compare).
    public func normalized() -> Self {
        var copy = self
        copy.events.sort { ($0.bucket, $0.transition.rawValue, $0.status.rawValue) < ($1.bucket, $1.transition.rawValue, $1.status.rawValue) }
        copy.attempts.sort { ($0.bucket, $0.outcome.rawValue) < ($1.bucket, $1.outcome.rawValue) }
        copy.attemptDurations.sort()
        return copy
    }

    /// Counts per bucket of the events that `include` picks.
    public func eventSeries(where include: (EventCount) -> Bool) -> [Int] {
        var series = Array(repeating: 0, count: window.buckets)
        for row in events where include(row) && series.indices.contains(row.bucket) { series[row.bucket] += row.count }
        return series
    }

    public func attemptSeries(_ outcome: AttemptOutcome) -> [Int] {
        var series = Array(repeating: 0, count: window.buckets)
        for row in attempts where row.outcome == outcome && series.indices.contains(row.bucket) { series[row.bucket] += row.count }
        return series
    }
}

/// Nearest-rank percentiles of a sample.
public enum Percentiles {
    /// The value at or below which `fraction` of `values` lie (nearest rank), nil for no values.
    public static func of(_ values: [Int64], _ fraction: Double) -> Int64? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let rank = Int((fraction * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count, max(1, rank)) - 1]
    }
}

/// Rows whose key grows with their time, like events (their `seq` is given at commit, their
/// time at receipt, a moment before): the range of keys a window of time covers, found by a
/// binary search of point reads instead of an index on the time. That index would be one more
/// write on every delivery, for a chart.
public enum TimeOrderedRows {
    /// How far a row's time may run behind a row with a smaller key (a delivery whose commit waited
    /// behind later ones). A window is widened by this much on both sides before its times are
    /// compared exactly, so a row is missed only if its commit waited longer than this.
    public static let slack: Int64 = 60_000

    /// The smallest key of a row whose time is at least `time`, or one past the last key when
    /// there is none. `probe(k)` gives the first row at or after key `k` (keys may have gaps), nil
    /// when there is none; it is called about log2(last key − first key) times.
    public static func firstKey(atOrAfter time: Int64, from low: Int64, to high: Int64, probe: (Int64) throws -> (key: Int64, time: Int64)?) rethrows -> Int64 {
        var low = low, high = high + 1
        while low < high {
            let middle = low + (high - low) / 2
            guard let row = try probe(middle) else {
                high = middle
                continue
            }
            if row.time >= time { high = middle } else { low = row.key + 1 }
        }
        return low
    }
}
