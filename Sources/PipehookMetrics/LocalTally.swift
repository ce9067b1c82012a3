import Foundation
import Synchronization

/// What the status page shows that the store does not keep (issue 14): deliveries by result and
/// ingest latencies since this process started. Kept in process beside the exported series: an
/// exporter's histogram cannot be read back, and reading it through its text would be parsing our
/// own output. One atomic add per delivery; one short lock per latency.
public final class LocalTally: Sendable {
    /// Upper bounds in nanoseconds, √2 apart from 8 µs to about 90 s; the last bucket is "above".
    public static let bounds: [Int64] = (0..<48).map { Int64((8_000.0 * pow(2, Double($0) / 2)).rounded()) }

    private let latencies = Mutex<[Int]>(Array(repeating: 0, count: LocalTally.bounds.count + 1))
    private let results: [String: Int]
    private let resultCounts: [Cell]

    /// An atomic on the heap, so several can sit in an array.
    private final class Cell: Sendable {
        let value = Atomic<Int>(0)
    }

    public init(results: [String]) {
        self.results = Dictionary(uniqueKeysWithValues: results.enumerated().map { ($1, $0) })
        resultCounts = results.map { _ in Cell() }
    }

    public func count(result: String) {
        if let index = results[result] { resultCounts[index].value.add(1, ordering: .relaxed) }
    }

    public func record(nanoseconds: Int64) {
        let index = Self.bucket(of: nanoseconds)
        latencies.withLock { $0[index] += 1 }
    }

    /// The bucket whose upper bound is the first at or above `nanoseconds`.
    static func bucket(of nanoseconds: Int64) -> Int {
        var low = 0, high = bounds.count
        while low < high {
            let middle = (low + high) / 2
            if bounds[middle] >= nanoseconds { high = middle } else { low = middle + 1 }
        }
        return low
    }

    public func latencyCounts() -> [Int] { latencies.withLock { $0 } }

    public func resultTotals() -> [String: Int] {
        results.mapValues { resultCounts[$0].value.load(ordering: .relaxed) }
    }

    /// The upper bound (nanoseconds) of the bucket that holds the `fraction` rank, nil when
    /// nothing was counted or the rank lies above the last bound.
    public static func percentile(_ counts: [Int], _ fraction: Double) -> Int64? {
        let total = counts.reduce(0, +)
        guard total > 0 else { return nil }
        let rank = max(1, Int((fraction * Double(total)).rounded(.up)))
        var seen = 0
        for (index, count) in counts.enumerated() {
            seen += count
            if seen >= rank { return index < bounds.count ? bounds[index] : nil }
        }
        return nil
    }
}
