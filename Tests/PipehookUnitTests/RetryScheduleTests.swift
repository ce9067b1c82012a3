import PipehookDispatch
import PipehookSettings
import Testing

@Suite struct RetryScheduleTests {
    static let policy = RetryPolicy.standard  // 10 attempts, 2 s initial, 15 min max

    @Test(arguments: [
        (1, Int64(2_000)), (2, 4_000), (3, 8_000), (4, 16_000), (5, 32_000), (6, 64_000), (7, 128_000),
        (8, 256_000), (9, 512_000), (10, 900_000), (11, 900_000), (60, 900_000), (100, 900_000),
    ] as [(Int, Int64)])
    func ceilingDoublesUpToTheMaximum(failures: Int, ceiling: Int64) {
        #expect(RetrySchedule.ceiling(afterFailures: failures, policy: Self.policy) == ceiling)
    }

    @Test func fullJitterStaysWithinBoundsAndSpreads() {
        var generator = SplitMix(seed: 7)
        for failures in 1...12 {
            let ceiling = RetrySchedule.ceiling(afterFailures: failures, policy: Self.policy)
            let delays = (0..<2000).map { _ in RetrySchedule.delay(afterFailures: failures, policy: Self.policy, using: &generator) }
            #expect(delays.allSatisfy { (0...ceiling).contains($0) })
            // Full jitter: both halves of the range are used.
            #expect(delays.contains { $0 < ceiling / 2 } && delays.contains { $0 > ceiling / 2 })
        }
    }

    @Test func injectedRandomnessIsReproducible() {
        var a = SplitMix(seed: 42), b = SplitMix(seed: 42)
        let first = (1...10).map { RetrySchedule.delay(afterFailures: $0, policy: Self.policy, using: &a) }
        let second = (1...10).map { RetrySchedule.delay(afterFailures: $0, policy: Self.policy, using: &b) }
        #expect(first == second)
    }

    @Test func retryAfterIsAFloor() {
        var generator = SplitMix(seed: 1)
        for _ in 0..<100 {
            #expect(RetrySchedule.delay(afterFailures: 1, policy: Self.policy, retryAfterMilliseconds: 30_000, using: &generator) >= 30_000)
        }
    }

    @Test func zeroDelaysAndExhaustion() {
        let instant = RetryPolicy(attempts: 3, initialDelayMilliseconds: 0, maxDelayMilliseconds: 0)
        var generator = SplitMix(seed: 3)
        #expect(RetrySchedule.delay(afterFailures: 5, policy: instant, using: &generator) == 0)
        #expect(!RetrySchedule.isExhausted(attempt: 2, policy: instant))
        #expect(RetrySchedule.isExhausted(attempt: 3, policy: instant))
        #expect(RetrySchedule.ceiling(afterFailures: 200, policy: RetryPolicy(attempts: 1, initialDelayMilliseconds: Int64.max / 2, maxDelayMilliseconds: Int64.max)) == Int64.max)
    }
}
