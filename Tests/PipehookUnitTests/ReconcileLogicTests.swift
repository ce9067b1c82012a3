import PipehookFormats
import PipehookLifecycle
import PipehookReconcile
import Testing

@Suite struct TokenBucketTests {
    @Test(arguments: [
        // rpm, requests at t=0 → send times (ms)
        (100, 5, [Int64(0), 600, 1_200, 1_800, 2_400]),
        (60, 3, [0, 1_000, 2_000]),
        (1, 2, [0, 60_000]),
        // 7/min does not divide a minute: the interval rounds up, never down.
        (7, 3, [0, 8_572, 17_143]),
        (6_000, 4, [0, 10, 20, 30]),
    ] as [(Int, Int, [Int64])])
    func backToBackRequestsAreSpacedByTheInterval(rpm: Int, count: Int, expected: [Int64]) {
        var bucket = TokenBucket(requestsPerMinute: rpm)
        #expect((0..<count).map { _ in bucket.reserve(now: 0) } == expected)
    }

    @Test func idleTimeDoesNotAccumulateABurst() {
        var bucket = TokenBucket(requestsPerMinute: 60)
        #expect(bucket.reserve(now: 0) == 0)
        // A long quiet spell: the next request goes at once, the one after waits a full interval.
        #expect(bucket.reserve(now: 100_000) == 100_000)
        #expect(bucket.reserve(now: 100_000) == 101_000)
    }

    @Test func pausesAndPeeking() {
        var bucket = TokenBucket(requestsPerMinute: 60)
        #expect(bucket.peek(now: 0, notBefore: 5_000) == 5_000)
        #expect(bucket.peek(now: 0, notBefore: 5_000) == 5_000, "peek takes nothing")
        #expect(bucket.reserve(now: 0, notBefore: 5_000) == 5_000)
        #expect(bucket.reserve(now: 0) == 6_000)
    }

    @Test func burstAllowsThatManyAtOnceThenPaces() {
        var bucket = TokenBucket(requestsPerMinute: 60, burst: 3)
        #expect((0..<5).map { _ in bucket.reserve(now: 0) } == [0, 0, 0, 1_000, 2_000])
    }

    /// Whatever the arrival pattern, no 60-second window ever holds more than the budget.
    @Test(arguments: [1, 7, 60, 100, 599, 1_000])
    func noMinuteEverExceedsTheBudget(rpm: Int) {
        var bucket = TokenBucket(requestsPerMinute: rpm)
        var random = SplitMix(seed: UInt64(rpm))
        var now: Int64 = 0
        var sent: [Int64] = []
        for _ in 0..<(rpm * 3 + 50) {
            now += Int64(random.next() % 2_000)  // callers arrive at random, often faster than the budget
            let time = bucket.reserve(now: now)
            #expect(time >= now)
            sent.append(time)
        }
        #expect(sent == sent.sorted())
        var start = 0
        for end in sent.indices {
            while sent[end] - sent[start] >= 60_000 { start += 1 }
            #expect(end - start + 1 <= rpm, "window from \(sent[start]) holds \(end - start + 1)")
        }
    }
}

@Suite struct APIBackoffTests {
    static let backoff = APIBackoff(initialMilliseconds: 2_000, maximumMilliseconds: 300_000)

    @Test(arguments: [
        (1, Int64(1_000), Int64(2_000)), (2, 2_000, 4_000), (3, 4_000, 8_000), (8, 128_000, 256_000),
        (9, 150_000, 300_000), (50, 150_000, 300_000), (0, 1_000, 2_000), (10_000, 150_000, 300_000),
    ] as [(Int, Int64, Int64)])
    func equalJitterStaysWithinHalfAndAllOfTheStep(failures: Int, low: Int64, high: Int64) {
        #expect(Self.backoff.delay(failures: failures, unit: 0) == low)
        #expect(Self.backoff.delay(failures: failures, unit: 0.999_999_9) <= high)
        #expect(Self.backoff.delay(failures: failures, unit: 0.999_999_9) >= high - 1)
        #expect(Self.backoff.delay(failures: failures, unit: 0.5) == low + (high - low) / 2)
    }
}

@Suite struct PipevideoAPIFormatTests {
    static func snapshot(_ json: String) throws -> GenerationSnapshot {
        try PipevideoAPIFormat.snapshot(Array(json.utf8))
    }

    @Test(arguments: [
        ("queued", GenerationStatus.queued), ("pending", .queued), ("in_progress", .inProgress), ("processing", .inProgress),
        ("completed", .completed), ("failed", .failed), ("cancelled", .cancelled), ("incomplete", .incomplete),
    ] as [(String, GenerationStatus)])
    func statusesIncludingOlderNames(text: String, status: GenerationStatus) throws {
        #expect(try Self.snapshot(#"{"id":"gen_1","object":"response","status":"\#(text)"}"#).status == status)
    }

    @Test func directURLWinsOverTheContentPart() throws {
        let s = try Self.snapshot(#"""
            {"id":"gen_1","status":"completed","output_video_url":"https://a/1.mp4",
             "output":[{"type":"message","content":[{"type":"output_video","video_url":{"url":"https://b/1.mp4","expires_at":1}}]}],
             "error":null,"completed_at":1760000000,"artifact_url":null,"usage":{"x":[1,2]}}
            """#)
        #expect(s == GenerationSnapshot(generationID: "gen_1", status: .completed, outputURL: "https://a/1.mp4"))
    }

    @Test func contentPartURLWhenNoDirectOne() throws {
        let s = try Self.snapshot(#"""
            {"id":"gen_2","status":"completed","output_video_url":null,
             "output":[{"type":"reasoning"},{"type":"message","content":[{"type":"output_text","text":"hi"},
               {"type":"output_video","video_url":{"url":"https://b/2.mp4","expires_at":"2026-01-01T00:00:00Z"}}]}]}
            """#)
        #expect(s.outputURL == "https://b/2.mp4")
    }

    @Test func errorMessageOfAFailure() throws {
        let s = try Self.snapshot(#"{"id":"gen_3","status":"failed","error":{"code":"policy","message":"blocked by policy"},"output":"weird"}"#)
        #expect(s == GenerationSnapshot(generationID: "gen_3", status: .failed, errorMessage: "blocked by policy"))
    }

    @Test(arguments: [
        ("[]", "not a JSON object"), ("nope", "not a JSON object"), (#"{"status":"queued"}"#, "missing or invalid id"),
        (#"{"id":"","status":"queued"}"#, "missing or invalid id"), (#"{"id":"gen"}"#, "missing field status"),
        (#"{"id":"gen","status":"exploded"}"#, "unknown status \"exploded\""), (#"{"id":7,"status":"queued"}"#, "missing or invalid id"),
    ])
    func unreadableDocumentsSayWhy(json: String, reason: String) {
        #expect(throws: FormatError(reason)) { try Self.snapshot(json) }
    }

    @Test(arguments: [
        (#"{"data":{"retry_after":12}}"#, Optional(12.0)), (#"{"data":{"retry_after":1.5}}"#, 1.5),
        (#"{"data":{"retry_after":"30"}}"#, 30), (#"{"data":{"retry_after":-1}}"#, nil), (#"{"data":{}}"#, nil),
        (#"{"error":"x"}"#, nil), ("not json", nil), (#"{"data":{"retry_after":1e12}}"#, nil),
    ] as [(String, Double?)])
    func retryAfterFromA429Body(json: String, seconds: Double?) {
        #expect(PipevideoAPIFormat.retryAfterSeconds(Array(json.utf8)) == seconds)
    }
}
