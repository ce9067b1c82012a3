// libFuzzer target: the strict JSON scanner (Sources/PipehookFormats/StrictJSON.swift) that runs
// before the webhook decoder.
//
// Invariants:
// - no false accept: what the scanner accepts, Foundation's JSONSerialization parses too (unless
//   it holds a number too large for a Double, which JSON allows);
// - no false refusal: what Foundation parses, the scanner accepts unless it names a reason
//   Foundation does not check (a duplicate key that really occurs twice, nesting deeper than the
//   limit, a lone surrogate, invalid UTF-8, a byte-order mark, NUL bytes that Foundation takes
//   for UTF-16 or UTF-32, a trailing comma);
// - duplicates are always found: an accepted object with a key added again at its front is refused
//   with "duplicate key";
// - what Foundation writes back from an accepted text is accepted again.
import Foundation
import PipehookFormats

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    var refusal: FormatError?
    do { try StrictJSON.validate(bytes) } catch { refusal = error }
    let parsed = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])

    guard let refusal else {
        // Foundation refuses numbers it cannot represent as a Double (4e2204); JSON allows them,
        // and the decoder refuses such a body after the scanner anyway.
        check(parsed != nil || hasHugeNumber(bytes), "accepted what Foundation cannot parse: \(String(decoding: bytes, as: UTF8.self).debugDescription)")
        if let object = parsed as? [String: Any], let key = object.keys.first,
            let brace = bytes.firstIndex(of: UInt8(ascii: "{")),
            let quotedKey = try? JSONSerialization.data(withJSONObject: key, options: [.fragmentsAllowed])
        {
            let doubled = Array(bytes[...brace]) + Array(quotedKey) + Array(":0,".utf8) + Array(bytes[(brace + 1)...])
            do {
                try StrictJSON.validate(doubled)
                check(false, "a duplicated key \(key.debugDescription) was accepted")
            } catch {
                check(Array(error.reason.utf8).starts(with: Array("duplicate key".utf8)), "a duplicated key refused as \(error.reason)")
            }
        }
        if let parsed, JSONSerialization.isValidJSONObject(parsed),
            let written = try? JSONSerialization.data(withJSONObject: parsed, options: [.fragmentsAllowed])
        {
            check((try? StrictJSON.validate(Array(written))) != nil, "refused what Foundation wrote: \(String(decoding: written, as: UTF8.self))")
        }
        return 0
    }
    guard parsed != nil else { return 0 }
    let reason = refusal.reason
    // Compared as bytes: a quote followed by a combining mark is one Character.
    let prefix = Array("duplicate key \"".utf8)
    if Array(reason.utf8).starts(with: prefix) {
        // The key (unescaped) must occur at least twice, when it is plain text.
        let key = String(decoding: Array(reason.utf8).dropFirst(prefix.count).dropLast(), as: UTF8.self)
        if !key.contains("\\"), !key.contains("\""), key.utf8.count < 64 {
            let needle = Array("\"\(key)\"".utf8)
            var count = 0
            var index = 0
            while index + needle.count <= bytes.count {
                if bytes[index..<(index + needle.count)].elementsEqual(needle) { count += 1 }
                index += 1
            }
            let escaped = bytes.contains(UInt8(ascii: "\\"))
            check(count >= 2 || escaped, "refused as duplicate key \(key.debugDescription), which occurs \(count) times")
        }
        return 0
    }
    let tolerated = Array(reason.utf8).starts(with: Array("JSON nested deeper".utf8)) || reason.contains("lone surrogate") || reason.contains("invalid UTF-8")
        || bytes.starts(with: [0xEF, 0xBB, 0xBF])
        // Foundation guesses UTF-16 and UTF-32 from NUL bytes ("2\0\0\0" is a UTF-32 "2"); JSON on
        // the wire here is UTF-8, where a NUL outside a string is never valid.
        || bytes.contains(0)
        || afterTrailingComma(reason, bytes)
    check(tolerated, "refused what Foundation parses (\(reason)): \(String(decoding: bytes, as: UTF8.self).debugDescription)")
    return 0
}

/// Foundation takes a trailing comma (`{"a":1,}`, `[1,]`); JSON does not. True when the refusal's
/// byte position follows a comma (whitespace aside).
func afterTrailingComma(_ reason: String, _ bytes: [UInt8]) -> Bool {
    guard let range = reason.range(of: "at byte "), var position = Int(reason[range.upperBound...]) else { return false }
    while position > 0 {
        position -= 1
        switch bytes[position] {
        case 0x20, 0x09, 0x0A, 0x0D: continue
        case UInt8(ascii: ","): return true
        default: return false
        }
    }
    return false
}
