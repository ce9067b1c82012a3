import PipehookSettings

/// Exponential backoff with full jitter (pure; the random source is injected for tests).
///
/// After the n-th failure of a step the next attempt waits a uniformly random time in
/// `[0, min(max_delay, initial_delay * 2^(n-1))]`, and never less than a `Retry-After` the other
/// side asked for. Full jitter spreads retries of many jobs that failed together.
public enum RetrySchedule {
    /// The upper bound of the delay after `failures` failures (≥ 1), in milliseconds.
    public static func ceiling(afterFailures failures: Int, policy: RetryPolicy) -> Int64 {
        precondition(failures >= 1)
        let shift = min(failures - 1, 62)
        let (grown, overflow) = policy.initialDelayMilliseconds.multipliedReportingOverflow(by: Int64(1) << shift)
        return overflow ? policy.maxDelayMilliseconds : min(grown, policy.maxDelayMilliseconds)
    }

    public static func delay(
        afterFailures failures: Int, policy: RetryPolicy, retryAfterMilliseconds: Int64? = nil,
        using generator: inout some RandomNumberGenerator
    ) -> Int64 {
        let ceiling = ceiling(afterFailures: failures, policy: policy)
        let jittered = ceiling == 0 ? 0 : Int64.random(in: 0...ceiling, using: &generator)
        return max(jittered, retryAfterMilliseconds ?? 0)
    }

    /// True when `attempt` (1-based) was the step's last allowed attempt.
    public static func isExhausted(attempt: Int, policy: RetryPolicy) -> Bool {
        attempt >= policy.attempts
    }
}
