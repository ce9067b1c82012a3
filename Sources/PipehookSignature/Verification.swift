/// Why a request failed verification. A struct over a private enum so cases can be added
/// without breaking callers; `code` is the stable string the HTTP layer returns.
public struct VerificationFailure: Error, Sendable, Equatable, CustomStringConvertible {
    enum Kind: Sendable, Equatable {
        case missingHeaders([String])
        case invalidTimestamp
        case timestampTooOld
        case timestampTooNew
        case invalidSignature
    }

    let kind: Kind

    public static func missingHeaders(_ names: [String]) -> Self { .init(kind: .missingHeaders(names)) }
    public static let invalidTimestamp = Self(kind: .invalidTimestamp)
    public static let timestampTooOld = Self(kind: .timestampTooOld)
    public static let timestampTooNew = Self(kind: .timestampTooNew)
    public static let invalidSignature = Self(kind: .invalidSignature)

    /// Stable machine-readable code (SPEC §4).
    public var code: String {
        switch kind {
        case .missingHeaders: "missing_signature_headers"
        case .invalidTimestamp: "invalid_timestamp"
        case .timestampTooOld: "timestamp_too_old"
        case .timestampTooNew: "timestamp_too_new"
        case .invalidSignature: "invalid_signature"
        }
    }

    /// Human message. Never contains the secret, the signature or the body.
    public var message: String {
        switch kind {
        case .missingHeaders(let names):
            "missing signature headers: \(names.joined(separator: ", ")) (send svix-id, svix-timestamp, svix-signature or webhook-id, webhook-timestamp, webhook-signature)"
        case .invalidTimestamp: "the timestamp header is not a Unix time in seconds"
        case .timestampTooOld: "the timestamp is older than the allowed tolerance"
        case .timestampTooNew: "the timestamp is further in the future than the allowed tolerance"
        case .invalidSignature: "no v1 signature matches any configured secret"
        }
    }

    public var isMissingHeaders: Bool {
        if case .missingHeaders = kind { return true }
        return false
    }

    public var description: String { code }
}

/// The three values a Svix / Standard Webhooks request is signed with.
public struct SignedHeaders: Sendable, Equatable {
    public var id: String
    public var timestamp: String
    public var signature: String

    public init(id: String, timestamp: String, signature: String) {
        self.id = id
        self.timestamp = timestamp
        self.signature = signature
    }

    /// Finds `svix-*` or, failing that, `webhook-*` headers. `lookup` must match names
    /// case-insensitively (HTTP field names are). A complete `svix-*` set wins over a complete
    /// `webhook-*` set; a set is never mixed from both families.
    public static func extract(_ lookup: (String) -> String?) throws(VerificationFailure) -> SignedHeaders {
        var missingPerFamily: [[String]] = []
        for prefix in ["svix", "webhook"] {
            let names = ["\(prefix)-id", "\(prefix)-timestamp", "\(prefix)-signature"]
            let values = names.map { lookup($0).flatMap { $0.isEmpty ? nil : $0 } }
            if let id = values[0], let timestamp = values[1], let signature = values[2] {
                return SignedHeaders(id: id, timestamp: timestamp, signature: signature)
            }
            missingPerFamily.append(zip(names, values).filter { $0.1 == nil }.map(\.0))
        }
        // Report the family the sender seems to use (fewest missing), svix on a tie.
        let best = missingPerFamily.min { $0.count < $1.count } ?? []
        throw .missingHeaders(best)
    }
}

/// One `whsec_…` signing secret, decoded once at configuration time.
public struct SigningSecret: Sendable, Equatable {
    public let key: [UInt8]

    public enum ParseError: Error, Sendable, Equatable {
        case empty
        case notBase64
    }

    /// Accepts `whsec_<base64>` or bare base64, padded or not.
    public init(_ text: String) throws(ParseError) {
        var body = Substring(text.trimmingASCIIWhitespace())
        if body.hasPrefix("whsec_") { body = body.dropFirst(6) }
        guard !body.isEmpty else { throw .empty }
        guard let key = Base64.decode(body), !key.isEmpty else { throw .notBase64 }
        self.key = key
    }

    public init(key: [UInt8]) { self.key = key }

    /// A fresh 32-byte secret in the `whsec_` form Svix uses.
    public static func generate() -> String {
        "whsec_" + Base64.encode(Crypto.randomBytes(32))
    }
}

/// Parses a signature header: space-separated `version,base64` entries. Only `v1` entries
/// count; other versions and malformed entries are skipped, never an error by themselves.
///
/// Split on bytes, never on Characters: a space after a prepending mark (U+06DD) is part of one
/// Character with it, so a Character split missed the entry after it (found by Fuzz/).
public enum SignatureHeader {
    public static func v1Digests(_ header: String) -> [[UInt8]] {
        var digests: [[UInt8]] = []
        let v1: [UInt8] = [UInt8(ascii: "v"), UInt8(ascii: "1"), UInt8(ascii: ",")]
        for entry in header.utf8.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) {
            guard entry.starts(with: v1) else { continue }
            let encoded = Substring(entry.dropFirst(v1.count))
            guard let digest = Base64.decode(encoded), digest.count == 32 else { continue }
            digests.append(digest)
        }
        return digests
    }
}

/// Checks Standard Webhooks / Svix v1 signatures against every configured secret.
public struct SignatureVerifier: Sendable {
    public let secrets: [SigningSecret]
    /// Allowed clock skew in seconds, applied in both directions.
    public let toleranceSeconds: Int64

    public init(secrets: [SigningSecret], toleranceSeconds: Int64 = 300) {
        self.secrets = secrets
        self.toleranceSeconds = toleranceSeconds
    }

    /// Throws the first reason the request must be rejected; returns the parsed timestamp.
    @discardableResult
    public func verify(
        headers: SignedHeaders, body: UnsafeRawBufferPointer, now: Int64
    ) throws(VerificationFailure) -> Int64 {
        let timestamp = try Self.parseTimestamp(headers.timestamp)
        if now - timestamp > toleranceSeconds { throw .timestampTooOld }
        if timestamp - now > toleranceSeconds { throw .timestampTooNew }
        let candidates = SignatureHeader.v1Digests(headers.signature)
        guard !candidates.isEmpty else { throw .invalidSignature }
        let message = SignedContent.bytes(id: headers.id, timestamp: headers.timestamp, body: body)
        for secret in secrets {
            let expected = Crypto.hmacSHA256(key: secret.key, message: message)
            var matched = false
            // Check every entry so timing does not reveal which one matched.
            for candidate in candidates where Crypto.constantTimeEquals(expected, candidate) {
                matched = true
            }
            if matched { return timestamp }
        }
        throw .invalidSignature
    }

    public func verify(headers: SignedHeaders, body: [UInt8], now: Int64) throws(VerificationFailure) {
        let result = body.withUnsafeBytes { raw in
            Result { () throws(VerificationFailure) in try verify(headers: headers, body: raw, now: now) }
        }
        _ = try result.get()
    }

    /// Unix seconds, ASCII digits only (no sign, no fraction), at most 18 digits.
    static func parseTimestamp(_ text: String) throws(VerificationFailure) -> Int64 {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 18 else { throw .invalidTimestamp }
        var value: Int64 = 0
        for char in utf8 {
            guard char >= UInt8(ascii: "0"), char <= UInt8(ascii: "9") else { throw .invalidTimestamp }
            value = value * 10 + Int64(char - UInt8(ascii: "0"))
        }
        return value
    }
}

/// Produces the headers a receiver verifies; shared by `pipehook send` and the re-POST step
/// so signing and verification can never drift apart.
public enum Signer {
    public static func signature(secret: SigningSecret, id: String, timestamp: Int64, body: [UInt8]) -> String {
        let message = body.withUnsafeBytes { SignedContent.bytes(id: id, timestamp: String(timestamp), body: $0) }
        return "v1," + Base64.encode(Crypto.hmacSHA256(key: secret.key, message: message))
    }
}

enum SignedContent {
    /// `{id}.{timestamp}.{body}` as one contiguous buffer for the one-shot HMAC.
    static func bytes(id: String, timestamp: String, body: UnsafeRawBufferPointer) -> [UInt8] {
        var message = [UInt8]()
        message.reserveCapacity(id.utf8.count + timestamp.utf8.count + body.count + 2)
        message.append(contentsOf: id.utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: timestamp.utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: body)
        return message
    }
}

extension String {
    func trimmingASCIIWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}

/// Never printed: service lifecycles and debuggers describe values with `String(describing:)`,
/// `dump` and mirrors, and a secret must not reach a log that way either.
extension SigningSecret: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "SigningSecret(<redacted>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [:]) }
}
