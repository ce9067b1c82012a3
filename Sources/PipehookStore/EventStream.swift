/// Where an event stream (`GET /api/events`) stands, so that a resumed stream misses nothing.
///
/// Sequence numbers are handed out when a row is inserted, but transactions commit in their own
/// order: with PostgreSQL a reader can see `seq` 11 before 10 is committed (and a rolled-back
/// insert leaves a gap for ever). So the stream's resume point is not the last `seq` it sent but
/// its frontier: the largest `seq` below which every number has been read or has stayed missing
/// for `settle` (longer than any ingest transaction lasts). Rows above the frontier that were sent
/// already are remembered and not sent twice; a resumed stream starts at the frontier, so it may
/// repeat a few transitions, never skip one.
public struct EventStreamCursor: Sendable, Equatable {
    /// Every `seq` up to this one has been read (or settled as a gap).
    public private(set) var frontier: Int64
    /// `seq`s above the frontier already read.
    private var read: Set<Int64> = []
    /// The first time (Unix ms) each missing `seq` just above the frontier was noticed.
    private var missingSince: [Int64: Int64] = [:]
    public let settleMilliseconds: Int64
    /// More numbers than transactions in flight could hold between the frontier and a row.
    public static let maxOpenGap: Int64 = 10_000

    public init(frontier: Int64, settleMilliseconds: Int64 = 10_000) {
        self.frontier = frontier
        self.settleMilliseconds = settleMilliseconds
    }

    /// Takes the rows read after the frontier (ascending `seq`); returns those not seen before,
    /// in order, and moves the frontier over everything now contiguous or settled.
    public mutating func take(_ rows: [StreamedEvent], now: Int64) -> [StreamedEvent] {
        // A gap wider than any set of transactions in flight is old (pruned rows, a resume point
        // from long ago), not rows still to commit: jump over it.
        if let first = rows.first(where: { $0.seq > frontier }), first.seq - frontier > Self.maxOpenGap, read.isEmpty {
            frontier = first.seq - 1
            missingSince = [:]
        }
        var fresh: [StreamedEvent] = []
        for row in rows where row.seq > frontier && !read.contains(row.seq) {
            read.insert(row.seq)
            fresh.append(row)
        }
        // Missing numbers between the frontier and the largest read one start their clock.
        if let highest = read.max(), highest > frontier + 1 {
            for seq in (frontier + 1)..<highest where !read.contains(seq) && missingSince[seq] == nil {
                missingSince[seq] = now
            }
        }
        while true {
            let next = frontier + 1
            if read.remove(next) != nil {
                frontier = next
            } else if let since = missingSince[next], now - since >= settleMilliseconds {
                missingSince[next] = nil
                frontier = next
            } else {
                break
            }
        }
        return fresh
    }
}
