import PipehookLifecycle

/// Which generations a list shows (SPEC §8 `generations`, the status page, `/api/generations`):
/// optional filters, and one page after a cursor. Keyset pagination, so page 10,000 costs what
/// page 1 does, and a generation updated while someone pages moves instead of being shown twice
/// in one place or skipped in another.
///
/// The order is the one rule every store follows: most recently updated first, then generation id,
/// then source, the ids compared by their UTF-8 bytes (SQLite's BINARY collation, PostgreSQL's
/// `COLLATE "C"`). `precedes` and `admits` state it for the memory store and the tests.
public struct GenerationQuery: Sendable, Equatable {
    public var status: GenerationStatus?
    public var source: String?
    /// Only generations with a job of this route (in `jobState`, when that is given too).
    public var route: String?
    /// Only generations with a job in this state (of `route`, when that is given too).
    public var jobState: JobState?
    /// Only generations after this one in the order.
    public var after: GenerationCursor?
    public var limit: Int

    public init(
        status: GenerationStatus? = nil, source: String? = nil, route: String? = nil, jobState: JobState? = nil,
        after: GenerationCursor? = nil, limit: Int = 50
    ) {
        self.status = status
        self.source = source
        self.route = route
        self.jobState = jobState
        self.after = after
        self.limit = limit
    }

    /// A source or route name with a NUL matches nothing (configured names cannot hold one); SQL
    /// would cut it at the NUL (SQLite) or refuse it (PostgreSQL), so stores answer without asking.
    public var matchesNothing: Bool { (source?.utf8.contains(0) ?? false) || (route?.utf8.contains(0) ?? false) }

    /// Whether the list depends on the generations' jobs.
    public var filtersJobs: Bool { route != nil || jobState != nil }

    /// Whether one job satisfies the job filters (route byte for byte, and state).
    public func admits(_ job: JobRecord) -> Bool {
        if let route, !job.route.sameBytes(as: route) { return false }
        if let jobState, job.state != jobState { return false }
        return true
    }

    /// `a` comes before `b` in every list.
    public static func precedes(_ a: GenerationRecord, _ b: GenerationRecord) -> Bool {
        precedes(GenerationCursor(after: a), GenerationCursor(after: b))
    }

    /// The order itself, on the three values it reads (a cursor holds exactly those).
    static func precedes(_ a: GenerationCursor, _ b: GenerationCursor) -> Bool {
        if a.updatedAt != b.updatedAt { return a.updatedAt > b.updatedAt }
        if !a.generationID.sameBytes(as: b.generationID) { return a.generationID.utf8.lexicographicallyPrecedes(b.generationID.utf8) }
        return a.source.utf8.lexicographicallyPrecedes(b.source.utf8)
    }

    /// Whether `record` passes the generation filters and comes after the cursor (the job filters
    /// are `admits(_ job:)`, on the generation's jobs).
    public func admits(_ record: GenerationRecord) -> Bool {
        if let status, record.status != status { return false }
        if let source, !record.source.sameBytes(as: source) { return false }
        guard let after else { return true }
        return Self.precedes(after, GenerationCursor(after: record))
    }
}

/// Where a page ended: the last generation shown. Its `token` is opaque, URL-safe text for a
/// `next` link; a token that does not decode is refused rather than read as "from the start".
public struct GenerationCursor: Sendable, Equatable {
    public var updatedAt: Int64
    public var generationID: String
    public var source: String

    public init(updatedAt: Int64, generationID: String, source: String) {
        self.updatedAt = updatedAt
        self.generationID = generationID
        self.source = source
    }

    public init(after record: GenerationRecord) {
        self.init(updatedAt: record.updatedAt, generationID: record.generationID, source: record.source)
    }

    /// `UPDATED:IDLENGTH:ID SOURCE` in base64url without padding: ids may hold any character.
    public var token: String {
        let id = Array(generationID.utf8)
        let text = Array("\(updatedAt):\(id.count):".utf8) + id + Array(source.utf8)
        return Base64URL.encode(text)
    }

    public init?(token: String) {
        guard token.utf8.count <= 4096, let bytes = Base64URL.decode(token) else { return nil }
        let parts = bytes.split(separator: UInt8(ascii: ":"), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3,
            let updatedAt = Int64(String(decoding: parts[0], as: UTF8.self)),
            let length = Int(String(decoding: parts[1], as: UTF8.self)), length >= 0, length <= parts[2].count,
            let id = String(validating: parts[2].prefix(length), as: UTF8.self),
            let source = String(validating: parts[2].dropFirst(length), as: UTF8.self)
        else { return nil }
        self.init(updatedAt: updatedAt, generationID: id, source: source)
    }
}

/// RFC 4648 §5 base64url without padding, for tokens that travel in URLs.
enum Base64URL {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value = 0
            for byte in chunk { value = value << 8 | Int(byte) }
            value <<= 8 * (3 - chunk.count)
            for position in 0..<(chunk.count + 1) { out.append(alphabet[(value >> (18 - 6 * position)) & 63]) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var values: [Int] = []
        for byte in text.utf8 {
            guard let value = alphabet.firstIndex(of: byte) else { return nil }
            values.append(value)
        }
        guard values.count % 4 != 1 else { return nil }
        var out: [UInt8] = []
        var index = 0
        while index < values.count {
            let chunk = values[index..<min(index + 4, values.count)]
            var value = 0
            for item in chunk { value = value << 6 | item }
            value <<= 6 * (4 - chunk.count)
            for position in 0..<(chunk.count - 1) { out.append(UInt8((value >> (16 - 8 * position)) & 0xFF)) }
            index += 4
        }
        // Canonical only: the unused low bits of the last character are zero.
        guard encode(out) == text else { return nil }
        return out
    }
}
