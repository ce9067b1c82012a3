/// A strict, single-pass JSON (RFC 8259) checker for signed webhook bodies.
///
/// Foundation's decoders keep one occurrence of a duplicated key and say nothing, while other
/// parsers (and the handlers that re-read `raw`) may keep another, so a step could act on a
/// different event than the store recorded. SPEC §4: a body with duplicate keys is not
/// interpretable. Foundation cannot report duplicates, so this walks the bytes once before the
/// decoder runs and refuses:
/// - a key that occurs twice in one object (compared after unescaping: `"a"` and `"\u0061"` are
///   the same key);
/// - nesting deeper than `maxDepth` (a flat webhook needs 1; unknown fields may nest a little);
/// - anything that is not one JSON text: bad syntax, raw control characters or invalid UTF-8 in a
///   string, a `\u` escape that is a lone surrogate, trailing bytes.
///
/// Cheap on the hot path: no allocation for keys without escapes (they are compared in place),
/// one small array of key positions for the whole scan, and a hash set only for an object with
/// more than `linearKeyLimit` keys (so a 1 MiB object of distinct keys stays linear).
public enum StrictJSON {
    public static let maxDepth = 64
    static let linearKeyLimit = 16

    /// Throws a `FormatError` naming the first problem.
    public static func validate(_ bytes: [UInt8]) throws(FormatError) {
        let result = bytes.withUnsafeBufferPointer { buffer -> FormatError? in
            var scanner = Scanner(buffer)
            return scanner.run()
        }
        if let result { throw result }
    }

    /// The scanner's state. Errors are returned as values (`fail`) to keep the loop simple.
    struct Scanner {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0
        var depth = 0
        var error: FormatError?
        /// Keys of the objects being scanned, innermost last: `keyBase` marks where each object starts.
        var keys: [Key] = []
        /// For an object with many keys: its decoded keys, by depth.
        var keySets: [Int: Set<[UInt8]>] = [:]

        /// A key in place (`start..<end`, no escapes) or unescaped.
        struct Key {
            var start: Int
            var end: Int
            var decoded: [UInt8]?
        }

        init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func run() -> FormatError? {
            skipWhitespace()
            guard value() else { return error }
            skipWhitespace()
            if index != bytes.count { return FormatError("not JSON: unexpected bytes after the value at byte \(index)") }
            return nil
        }

        mutating func fail(_ reason: String) -> Bool {
            if error == nil { error = FormatError(reason) }
            return false
        }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func value() -> Bool {
            guard index < bytes.count else { return fail("not JSON: unexpected end") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return object()
            case UInt8(ascii: "["): return array()
            case UInt8(ascii: "\""):
                var ignored = Key(start: 0, end: 0)
                return string(&ignored, keepDecoded: false)
            case UInt8(ascii: "t"): return literal("true")
            case UInt8(ascii: "f"): return literal("false")
            case UInt8(ascii: "n"): return literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number()
            default: return fail("not JSON: unexpected character at byte \(index)")
            }
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard bytes.count - index >= count else { return fail("not JSON: unexpected end") }
            let matches = word.withUTF8Buffer { expected in
                (0..<count).allSatisfy { bytes[index + $0] == expected[$0] }
            }
            guard matches else { return fail("not JSON: unexpected character at byte \(index)") }
            index += count
            return true
        }

        mutating func enter() -> Bool {
            depth += 1
            guard depth <= StrictJSON.maxDepth else { return fail("JSON nested deeper than \(StrictJSON.maxDepth) levels") }
            return true
        }

        mutating func object() -> Bool {
            guard enter() else { return false }
            index += 1  // {
            let base = keys.count
            defer {
                keys.removeSubrange(base...)
                if !keySets.isEmpty { keySets[depth] = nil }
                depth -= 1
            }
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return true
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return fail("not JSON: expected a key at byte \(index)") }
                var key = Key(start: 0, end: 0)
                guard string(&key, keepDecoded: true) else { return false }
                guard insert(key, base: base) else { return false }
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return fail("not JSON: expected ':' at byte \(index)") }
                index += 1
                skipWhitespace()
                guard value() else { return false }
                skipWhitespace()
                guard index < bytes.count else { return fail("not JSON: unexpected end") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "}") else { return fail("not JSON: expected ',' or '}' at byte \(index)") }
                index += 1
                return true
            }
        }

        mutating func array() -> Bool {
            guard enter() else { return false }
            defer { depth -= 1 }
            index += 1  // [
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return true
            }
            while true {
                skipWhitespace()
                guard value() else { return false }
                skipWhitespace()
                guard index < bytes.count else { return fail("not JSON: unexpected end") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "]") else { return fail("not JSON: expected ',' or ']' at byte \(index)") }
                index += 1
                return true
            }
        }

        /// Records `key` in the current object, or fails when it is already there.
        mutating func insert(_ key: Key, base: Int) -> Bool {
            let count = keys.count - base
            if count < StrictJSON.linearKeyLimit {
                for other in keys[base...] where equal(other, key) { return duplicate(key) }
                keys.append(key)
                return true
            }
            if keySets[depth] == nil {
                keySets[depth] = Set(keys[base...].map { materialize($0) })
            }
            guard keySets[depth]!.insert(materialize(key)).inserted else { return duplicate(key) }
            return true
        }

        mutating func duplicate(_ key: Key) -> Bool {
            let text = String(decoding: materialize(key).prefix(64), as: UTF8.self)
            return fail("duplicate key \"\(text)\"")
        }

        func materialize(_ key: Key) -> [UInt8] {
            key.decoded ?? Array(bytes[key.start..<key.end])
        }

        func equal(_ a: Key, _ b: Key) -> Bool {
            switch (a.decoded, b.decoded) {
            case (nil, nil):
                let length = a.end - a.start
                guard length == b.end - b.start else { return false }
                for offset in 0..<length where bytes[a.start + offset] != bytes[b.start + offset] { return false }
                return true
            default:
                return materialize(a) == materialize(b)
            }
        }

        /// Scans a string starting at its opening quote. For keys (`keepDecoded`), `key` gets the
        /// range of the raw content, and the unescaped bytes when there was an escape.
        mutating func string(_ key: inout Key, keepDecoded: Bool) -> Bool {
            index += 1  // "
            let start = index
            var decoded: [UInt8]?
            while index < bytes.count {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    key.start = start
                    key.end = index
                    key.decoded = decoded
                    index += 1
                    return true
                case UInt8(ascii: "\\"):
                    if keepDecoded, decoded == nil { decoded = Array(bytes[start..<index]) }
                    guard escape(&decoded, keepDecoded: keepDecoded) else { return false }
                case 0x00..<0x20:
                    return fail("not JSON: a raw control character in a string at byte \(index)")
                case 0x80...:
                    let end = utf8Sequence(at: index)
                    guard end > index else { return fail("not JSON: invalid UTF-8 at byte \(index)") }
                    if keepDecoded, decoded != nil { decoded!.append(contentsOf: bytes[index..<end]) }
                    index = end
                default:
                    if keepDecoded, decoded != nil { decoded!.append(byte) }
                    index += 1
                }
            }
            return fail("not JSON: unterminated string")
        }

        mutating func escape(_ decoded: inout [UInt8]?, keepDecoded: Bool) -> Bool {
            index += 1  // backslash
            guard index < bytes.count else { return fail("not JSON: unterminated string") }
            let simple: UInt8?
            switch bytes[index] {
            case UInt8(ascii: "\""): simple = UInt8(ascii: "\"")
            case UInt8(ascii: "\\"): simple = UInt8(ascii: "\\")
            case UInt8(ascii: "/"): simple = UInt8(ascii: "/")
            case UInt8(ascii: "b"): simple = 0x08
            case UInt8(ascii: "f"): simple = 0x0C
            case UInt8(ascii: "n"): simple = 0x0A
            case UInt8(ascii: "r"): simple = 0x0D
            case UInt8(ascii: "t"): simple = 0x09
            case UInt8(ascii: "u"): simple = nil
            default: return fail("not JSON: invalid escape at byte \(index)")
            }
            if let simple {
                if keepDecoded { decoded!.append(simple) }
                index += 1
                return true
            }
            index += 1
            guard let unit = hex4() else { return false }
            var scalarValue = UInt32(unit)
            if (0xD800...0xDBFF).contains(unit) {
                // A high surrogate must be followed by an escaped low surrogate.
                guard bytes.count - index >= 6, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                    return fail("not JSON: a lone surrogate escape at byte \(index)")
                }
                index += 2
                guard let low = hex4() else { return false }
                guard (0xDC00...0xDFFF).contains(low) else { return fail("not JSON: a lone surrogate escape at byte \(index)") }
                scalarValue = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(unit) {
                return fail("not JSON: a lone surrogate escape at byte \(index)")
            }
            if keepDecoded, let scalar = Unicode.Scalar(scalarValue) {
                decoded!.append(contentsOf: UTF8.encode(scalar)!)
            }
            return true
        }

        mutating func hex4() -> UInt16? {
            guard bytes.count - index >= 4 else {
                _ = fail("not JSON: unterminated escape")
                return nil
            }
            var value: UInt16 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default:
                    _ = fail("not JSON: invalid \\u escape at byte \(index)")
                    return nil
                }
                value = value << 4 | UInt16(digit)
                index += 1
            }
            return value
        }

        /// The end of the well-formed UTF-8 sequence at `start` (RFC 3629: no overlongs, no
        /// surrogates, nothing above U+10FFFF), or `start` when it is malformed.
        func utf8Sequence(at start: Int) -> Int {
            let lead = bytes[start]
            let length: Int
            var lower: UInt8 = 0x80
            var upper: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F
            case 0xF0: length = 4; lower = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F
            default: return start
            }
            guard bytes.count - start >= length else { return start }
            let second = bytes[start + 1]
            guard second >= lower, second <= upper else { return start }
            for offset in 2..<max(2, length) where bytes[start + offset] & 0xC0 != 0x80 { return start }
            return start + length
        }

        mutating func number() -> Bool {
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count else { return fail("not JSON: unexpected end") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else if isDigit(bytes[index]) {
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            } else {
                return fail("not JSON: invalid number at byte \(index)")
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard index < bytes.count, isDigit(bytes[index]) else { return fail("not JSON: invalid number at byte \(index)") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard index < bytes.count, isDigit(bytes[index]) else { return fail("not JSON: invalid number at byte \(index)") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            return true
        }

        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    }
}
