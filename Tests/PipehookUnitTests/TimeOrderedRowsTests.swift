import PipehookStore
import Testing

/// The binary search that finds which keys a window of time covers, over rows with gaps.
@Suite struct TimeOrderedRowsTests {
    static let rows: [(key: Int64, time: Int64)] = [(1, 10), (2, 20), (3, 20), (5, 50), (9, 90), (10, 90), (14, 140)]

    static func probe(_ key: Int64) -> (key: Int64, time: Int64)? { rows.first { $0.key >= key } }

    @Test(arguments: [
        // time, the bound: every row at or after it has at least that time, every row before less
        (Int64(0), Int64(1)), (10, 1), (11, 2), (20, 2), (21, 4), (50, 4), (51, 6), (90, 6), (91, 11), (140, 11), (141, 15), (10_000, 15),
    ])
    func boundsOverGaps(time: Int64, expected: Int64) {
        let found = TimeOrderedRows.firstKey(atOrAfter: time, from: 1, to: 14, probe: Self.probe)
        #expect(found == expected, "\(time)")
        // What the bound means, checked on the rows themselves.
        #expect(Self.rows.filter { $0.key >= found }.allSatisfy { $0.time >= time })
        #expect(Self.rows.filter { $0.key < found }.allSatisfy { $0.time < time })
    }

    @Test func probesLogarithmicallyOften() {
        var probes = 0
        let found = TimeOrderedRows.firstKey(atOrAfter: 500_000, from: 1, to: 1_000_000) { key in
            probes += 1
            return (key, key)  // no gaps, time equal to key
        }
        #expect(found == 500_000)
        #expect(probes <= 21)
    }

    @Test func noRowsAtAll() {
        #expect(TimeOrderedRows.firstKey(atOrAfter: 5, from: 1, to: 0) { _ in nil } == 1)
    }
}
