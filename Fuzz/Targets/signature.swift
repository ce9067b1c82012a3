// libFuzzer target: the signature header parser and the verifier (Sources/PipehookSignature).
//
// Input: `secret \n id \n timestamp \n signature-header \n body…` (the body is the rest, newlines
// included). Each line may be anything; a request whose secret does not parse still exercises the
// secret parser, the header parser and base64.
//
// Invariants:
// - soundness: a request that verifies has a valid timestamp within the tolerance and a `v1,`
//   entry (split on spaces and tabs, as the header is defined) whose base64 decodes to exactly
//   HMAC-SHA256(key, "{id}.{timestamp}.{body}"), computed here independently of the verifier;
// - completeness: such a request always verifies, and is refused (too old / too new) just outside
//   the tolerance;
// - what `Signer` produces verifies, and the streaming signer and HMAC agree with the one-shot ones
//   for any key length and any split of the message;
// - base64: decode(encode(x)) == x, the encoding is Foundation's, and canonical text decodes as
//   Foundation decodes it;
// - header extraction never mixes the `svix-*` and `webhook-*` families.
import Foundation
import PipehookSignature

let tolerance: Int64 = 300

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    var fields: [ArraySlice<UInt8>] = []
    var rest = bytes[...]
    while fields.count < 4, let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
        fields.append(rest[..<newline])
        rest = rest[(newline + 1)...]
    }
    if fields.count < 4 {
        checkBase64(bytes)
        checkExtraction(bytes)
        return 0
    }
    let secretText = String(decoding: fields[0], as: UTF8.self)
    let id = String(decoding: fields[1], as: UTF8.self)
    let timestampText = String(decoding: fields[2], as: UTF8.self)
    let header = String(decoding: fields[3], as: UTF8.self)
    let body = Array(rest)

    checkBase64(Array(fields[3]))
    let digests = SignatureHeader.v1Digests(header)
    check(digests.allSatisfy { $0.count == 32 }, "a v1 digest that is not 32 bytes")

    guard let secret = try? SigningSecret(secretText) else { return 0 }
    check(!secret.key.isEmpty, "a secret with an empty key")
    let verifier = SignatureVerifier(secrets: [secret], toleranceSeconds: tolerance)
    let headers = SignedHeaders(id: id, timestamp: timestampText, signature: header)

    let message = Array(id.utf8) + [UInt8(ascii: ".")] + Array(timestampText.utf8) + [UInt8(ascii: ".")] + body
    let expected = Crypto.hmacSHA256(key: secret.key, message: message)
    check(expected.count == 32, "HMAC length")

    // The streaming HMAC agrees with the one-shot one, whatever the key length and split.
    var mac = StreamingHMAC(key: secret.key)
    let split = message.isEmpty ? 0 : Int(message[0]) % (message.count + 1)
    mac.update(Array(message[..<split]))
    mac.update(Array(message[split...]))
    let streamed = mac.finalize()
    check(streamed == expected, "streaming HMAC differs from the one-shot HMAC")

    // An independent reading of the header: entries split on space and tab, prefix "v1,".
    let entries = header.utf8.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
    let matching = entries.contains { entry in
        guard entry.starts(with: Array("v1,".utf8)) else { return false }
        return Base64.decode(String(decoding: entry.dropFirst(3), as: UTF8.self)) == expected
    }
    let timestampIsValid = !timestampText.isEmpty && timestampText.utf8.count <= 18
        && timestampText.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }

    // Against a fixed clock, and against the request's own time (inside and just outside the window).
    var clocks: [Int64] = [1_700_000_000]
    if timestampIsValid, let timestamp = Int64(timestampText) {
        clocks += [timestamp, timestamp + tolerance, timestamp - tolerance]
        expectFailure(verifier, headers, body, now: timestamp + tolerance + 1, .timestampTooOld)
        expectFailure(verifier, headers, body, now: timestamp - tolerance - 1, .timestampTooNew)
    }
    for now in clocks {
        let verified = (try? verifier.verify(headers: headers, body: body, now: now)) != nil
        if verified {
            check(timestampIsValid, "verified with an invalid timestamp \(timestampText.debugDescription)")
            check(matching, "verified without a matching v1 entry: \(header.debugDescription)")
            if let timestamp = Int64(timestampText) { check(abs(now - timestamp) <= tolerance, "verified outside the tolerance") }
        } else if matching, timestampIsValid, let timestamp = Int64(timestampText), abs(now - timestamp) <= tolerance {
            check(false, "a matching v1 entry within the tolerance was refused: \(header.debugDescription)")
        }
    }

    // What the signer produces verifies, with any other entries around it.
    if timestampIsValid, let timestamp = Int64(timestampText), String(timestamp) == timestampText {
        let signed = Signer.signature(secret: secret, id: id, timestamp: timestamp, body: body)
        var streaming = Signer.streamingSignature(secret: secret, id: id, timestamp: timestamp)
        streaming.update(body)
        let streamedHeader = streaming.header()
        check(streamedHeader == signed, "streaming signer differs from the one-shot signer")
        let combined = SignedHeaders(id: id, timestamp: timestampText, signature: header + " " + signed)
        check((try? verifier.verify(headers: combined, body: body, now: timestamp)) != nil, "a Signer signature did not verify")
    }
    return 0
}

func expectFailure(_ verifier: SignatureVerifier, _ headers: SignedHeaders, _ body: [UInt8], now: Int64, _ failure: VerificationFailure) {
    do {
        try verifier.verify(headers: headers, body: body, now: now)
        check(false, "verified outside the tolerance (now \(now), timestamp \(headers.timestamp))")
    } catch {
        check(error == failure, "expected \(failure), got \(error)")
    }
}

func checkBase64(_ bytes: [UInt8]) {
    let encoded = Base64.encode(bytes)
    check(Base64.decode(encoded) == bytes, "base64 does not round-trip")
    check(encoded == Data(bytes).base64EncodedString(), "base64 encoding differs from Foundation's")
    let text = String(decoding: bytes, as: UTF8.self)
    if let decoded = Base64.decode(text) {
        let stripped = text.utf8.reversed().drop { $0 == UInt8(ascii: "=") }.count
        check(decoded.count == stripped * 6 / 8, "decoded length \(decoded.count) for \(stripped) characters")
    }
    // Foundation also takes `=` inside the text ("ev=M") and odd padding ("===="), which RFC 4648
    // does not; where the text is canonical (alphabet, then at most two `=` to a multiple of four
    // characters) both must decode it to the same bytes.
    if let foundation = Data(base64Encoded: text) {
        let body = text.utf8.reversed().drop { $0 == UInt8(ascii: "=") }
        let padding = text.utf8.count - body.count
        let canonical = body.allSatisfy { $0 != UInt8(ascii: "=") } && padding <= 2 && text.utf8.count % 4 == 0 && !body.isEmpty
        if canonical { check(Base64.decode(text) == Array(foundation), "Foundation decodes \(text.debugDescription) differently") }
    }
}

/// Lines `name: value` become the request's headers (names compared case-insensitively).
func checkExtraction(_ bytes: [UInt8]) {
    var fields: [(String, String)] = []
    for line in bytes.split(separator: UInt8(ascii: "\n")) {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
        fields.append((String(decoding: line[..<colon], as: UTF8.self), String(decoding: line[(colon + 1)...], as: UTF8.self)))
    }
    let lookup: (String) -> String? = { name in fields.first { $0.0.lowercased() == name }?.1 }
    guard let headers = try? SignedHeaders.extract(lookup) else { return }
    let family = ["svix", "webhook"].first { prefix in
        lookup("\(prefix)-id") == headers.id && lookup("\(prefix)-timestamp") == headers.timestamp
            && lookup("\(prefix)-signature") == headers.signature
    }
    check(family != nil, "extracted headers mix the two families")
    check(!headers.id.isEmpty && !headers.timestamp.isEmpty && !headers.signature.isEmpty, "an empty header was extracted")
}
