/// A token bucket in its GCRA form (a "theoretical arrival time" instead of a token count).
///
/// `reserve` hands out send times instead of yes/no, so concurrent callers queue fairly and
/// nobody spins. With `burst: 1` consecutive times are at least `60 s / requests_per_minute`
/// apart, so no 60-second window ever holds more than `requests_per_minute` requests: the
/// provider's limit is per key and per minute, and a burst allowance would let two adjacent
/// windows add up to more than it. Times are Unix milliseconds; arithmetic is in microseconds
/// with the interval rounded up, so rounding can only make us slower, never faster.
public struct TokenBucket: Sendable, Equatable {
    public let intervalMicroseconds: Int64
    public let burst: Int64
    /// When the next request would be due if requests were sent back to back.
    private var theoretical: Int64 = .min

    public init(requestsPerMinute: Int, burst: Int = 1) {
        precondition(requestsPerMinute > 0 && burst > 0)
        let perMinute = Int64(requestsPerMinute)
        intervalMicroseconds = (60_000_000 + perMinute - 1) / perMinute
        self.burst = Int64(burst)
    }

    /// Takes the next slot at or after `now` and not before `notBefore`; returns when to send.
    public mutating func reserve(now: Int64, notBefore: Int64 = .min) -> Int64 {
        let nowMicros = max(now, notBefore) * 1000
        let allowedFrom = theoretical == .min ? nowMicros : theoretical - (burst - 1) * intervalMicroseconds
        let start = max(nowMicros, allowedFrom)
        theoretical = max(theoretical == .min ? start : theoretical, start) + intervalMicroseconds
        return (start + 999) / 1000
    }

    /// The send time `reserve` would give, without taking it.
    public func peek(now: Int64, notBefore: Int64 = .min) -> Int64 {
        var copy = self
        return copy.reserve(now: now, notBefore: notBefore)
    }
}

/// Backoff for the provider's API after 5xx answers and timeouts: doubling from `initial` up to
/// `maximum`, with "equal jitter" (between half and all of the step) so instances spread out
/// but the wait still grows.
public struct APIBackoff: Sendable, Equatable {
    public var initialMilliseconds: Int64
    public var maximumMilliseconds: Int64

    public init(initialMilliseconds: Int64 = 2_000, maximumMilliseconds: Int64 = 300_000) {
        self.initialMilliseconds = initialMilliseconds
        self.maximumMilliseconds = maximumMilliseconds
    }

    /// - Parameters:
    ///   - failures: failures in a row, 1 for the first.
    ///   - unit: a random number in [0, 1).
    public func delay(failures: Int, unit: Double) -> Int64 {
        let exponent = min(max(failures, 1) - 1, 40)
        let (scaled, overflow) = initialMilliseconds.multipliedReportingOverflow(by: Int64(1) << exponent)
        let step = overflow ? maximumMilliseconds : min(scaled, maximumMilliseconds)
        let half = step / 2
        return half + Int64(Double(step - half) * min(max(unit, 0), 0.999_999))
    }
}
