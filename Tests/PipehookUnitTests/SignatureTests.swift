import Foundation
import PipehookSignature
import Testing

/// The shared conformance vectors (a copy of shared/fixtures/standard-webhooks-vectors.json).
struct Vectors: Decodable {
    struct Case: Decodable, CustomTestStringConvertible {
        struct Repeat: Decodable {
            var char: String
            var count: Int
        }
        var name: String
        var secret: String
        var id: String
        var timestamp: Int64
        var payload: String?
        var payload_repeat: Repeat?
        var signature: String
        var expect: String?

        var body: [UInt8] {
            if let payload { return Array(payload.utf8) }
            let r = payload_repeat!
            return Array(String(repeating: r.char, count: r.count).utf8)
        }
        var headers: SignedHeaders { SignedHeaders(id: id, timestamp: String(timestamp), signature: signature) }
        var testDescription: String { name }
    }

    var valid: [Case]
    var invalid: [Case]
    var pipevideo_examples: [Case]

    static let shared: Vectors = {
        let url = Bundle.module.url(forResource: "standard-webhooks-vectors", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }()
}

@Suite struct SignatureTests {
    @Test(arguments: Vectors.shared.valid + Vectors.shared.pipevideo_examples)
    func validVectorVerifies(_ vector: Vectors.Case) throws {
        let verifier = SignatureVerifier(secrets: [try SigningSecret(vector.secret)])
        try verifier.verify(headers: vector.headers, body: vector.body, now: vector.timestamp)
    }

    @Test(arguments: Vectors.shared.invalid)
    func invalidVectorIsRejected(_ vector: Vectors.Case) throws {
        let verifier = SignatureVerifier(secrets: [try SigningSecret(vector.secret)])
        let error = #expect(throws: VerificationFailure.self) {
            try verifier.verify(headers: vector.headers, body: vector.body, now: vector.timestamp)
        }
        #expect(error?.code == vector.expect)
    }

    /// Found by Fuzz/ (signature): the header was split into Characters, and a space after a
    /// prepending mark (U+06DD, U+0600) is inside one Character with it, so the
    /// valid entry after it was never seen.
    @Test(arguments: ["x\u{06DD} ", "v2,abc\u{06DD}\t", "\u{0600} "])
    func entriesAreSplitOnBytes(_ before: String) throws {
        let vector = Vectors.shared.valid[0]
        let verifier = SignatureVerifier(secrets: [try SigningSecret(vector.secret)])
        var headers = vector.headers
        headers.signature = before + vector.signature
        #expect(SignatureHeader.v1Digests(headers.signature).count == 1, "\(headers.signature.debugDescription)")
        try verifier.verify(headers: headers, body: vector.body, now: vector.timestamp)
    }

    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    func signed(_ body: String, id: String = "msg_1", at timestamp: Int64, secret: String = secret) -> SignedHeaders {
        let signature = Signer.signature(secret: try! SigningSecret(secret), id: id, timestamp: timestamp, body: Array(body.utf8))
        return SignedHeaders(id: id, timestamp: String(timestamp), signature: signature)
    }

    @Test(arguments: [
        (offset: Int64(-301), expected: "timestamp_too_old"),
        (offset: 301, expected: "timestamp_too_new"),
        (offset: -300, expected: nil),
        (offset: 300, expected: nil),
        (offset: 0, expected: nil),
    ] as [(offset: Int64, expected: String?)])
    func toleranceIsEnforcedInBothDirections(offset: Int64, expected: String?) throws {
        let now: Int64 = 1_800_000_000
        let headers = signed("{}", at: now + offset)
        let verifier = SignatureVerifier(secrets: [try SigningSecret(Self.secret)], toleranceSeconds: 300)
        if let expected {
            let error = #expect(throws: VerificationFailure.self) { try verifier.verify(headers: headers, body: Array("{}".utf8), now: now) }
            #expect(error?.code == expected)
        } else {
            try verifier.verify(headers: headers, body: Array("{}".utf8), now: now)
        }
    }

    @Test(arguments: ["", "abc", "-5", "+5", "1.5", "1e9", " 1614265330", "1234567890123456789", "１２３"])
    func malformedTimestampIsInvalid(_ timestamp: String) throws {
        let verifier = SignatureVerifier(secrets: [try SigningSecret(Self.secret)])
        let headers = SignedHeaders(id: "msg_1", timestamp: timestamp, signature: "v1,AAAA")
        let error = #expect(throws: VerificationFailure.self) { try verifier.verify(headers: headers, body: [], now: 1_614_265_330) }
        #expect(error?.code == "invalid_timestamp")
    }

    @Test func wrongSecretIsRejected() throws {
        let headers = signed("{}", at: 1000, secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        let verifier = SignatureVerifier(secrets: [try SigningSecret(Self.secret)])
        let error = #expect(throws: VerificationFailure.self) { try verifier.verify(headers: headers, body: Array("{}".utf8), now: 1000) }
        #expect(error == .invalidSignature)
    }

    @Test func anyRotatedSecretMayMatch() throws {
        let old = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
        let verifier = SignatureVerifier(secrets: [try SigningSecret(Self.secret), try SigningSecret(old)])
        try verifier.verify(headers: signed("{}", at: 1000, secret: old), body: Array("{}".utf8), now: 1000)
        try verifier.verify(headers: signed("{}", at: 1000, secret: Self.secret), body: Array("{}".utf8), now: 1000)
        let third = SigningSecret(key: Array(repeating: 7, count: 32))
        let headers = SignedHeaders(id: "msg_1", timestamp: "1000", signature: Signer.signature(secret: third, id: "msg_1", timestamp: 1000, body: Array("{}".utf8)))
        #expect(throws: VerificationFailure.invalidSignature) { try verifier.verify(headers: headers, body: Array("{}".utf8), now: 1000) }
    }

    @Test func signatureCoversTheExactBody() throws {
        let headers = signed(#"{"a":1}"#, at: 1000)
        let verifier = SignatureVerifier(secrets: [try SigningSecret(Self.secret)])
        try verifier.verify(headers: headers, body: Array(#"{"a":1}"#.utf8), now: 1000)
        for changed in [#"{"a":1} "#, #"{"a": 1}"#, #"{"a":1"#, ""] {
            #expect(throws: VerificationFailure.invalidSignature) { try verifier.verify(headers: headers, body: Array(changed.utf8), now: 1000) }
        }
    }

    // MARK: headers

    static let fullSets: [[String: String]] = [
        ["svix-id": "a", "svix-timestamp": "1", "svix-signature": "v1,x"],
        ["webhook-id": "a", "webhook-timestamp": "1", "webhook-signature": "v1,x"],
    ]

    @Test(arguments: 0..<2, 0..<3)
    func eachMissingHeaderIsReported(family: Int, missing: Int) {
        var headers = Self.fullSets[family]
        let name = headers.keys.sorted()[missing]
        headers[name] = nil
        let error = #expect(throws: VerificationFailure.self) { try SignedHeaders.extract { headers[$0] } }
        #expect(error?.code == "missing_signature_headers")
        #expect(error?.message.contains(name) == true)
    }

    @Test func emptyHeaderCountsAsMissing() {
        let headers = ["svix-id": "", "svix-timestamp": "1", "svix-signature": "v1,x"]
        #expect(throws: VerificationFailure.self) { try SignedHeaders.extract { headers[$0] } }
    }

    @Test func eitherFamilyIsAcceptedAndSvixWins() throws {
        #expect(try SignedHeaders.extract { Self.fullSets[0][$0] } == SignedHeaders(id: "a", timestamp: "1", signature: "v1,x"))
        #expect(try SignedHeaders.extract { Self.fullSets[1][$0] } == SignedHeaders(id: "a", timestamp: "1", signature: "v1,x"))
        let both = ["svix-id": "s", "svix-timestamp": "2", "svix-signature": "v1,s", "webhook-id": "w", "webhook-timestamp": "3", "webhook-signature": "v1,w"]
        #expect(try SignedHeaders.extract { both[$0] }.id == "s")
        // Never mixed: an incomplete svix set falls back to a complete webhook set.
        let mixed = ["svix-id": "s", "webhook-id": "w", "webhook-timestamp": "3", "webhook-signature": "v1,w"]
        #expect(try SignedHeaders.extract { mixed[$0] }.id == "w")
    }

    @Test(arguments: [
        ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 1),
        ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 2),
        ("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 0),
        ("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 0),
        ("v1,", 0),
        ("v1", 0),
        ("", 0),
        ("   ", 0),
        ("v1,!!!!", 0),
        ("v1,g0hM9", 0),
        ("V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 0),
        ("  v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=   v2,x ", 1),
        ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", 1),
    ])
    func headerParserKeepsOnlyWellFormedV1Entries(header: String, count: Int) {
        #expect(SignatureHeader.v1Digests(header).count == count)
    }

    // MARK: secrets and base64

    @Test(arguments: ["", "whsec_", "whsec_!!!", "   "])
    func badSecretsAreRejected(_ text: String) {
        #expect(throws: SigningSecret.ParseError.self) { try SigningSecret(text) }
    }

    @Test func generatedSecretsParseAndDiffer() throws {
        let a = SigningSecret.generate(), b = SigningSecret.generate()
        #expect(a != b)
        #expect(try SigningSecret(a).key.count == 32)
    }

    @Test func base64RoundTripsEveryLength() {
        for length in 0..<70 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let encoded = Base64.encode(bytes)
            #expect(encoded == Data(bytes).base64EncodedString())
            #expect(Base64.decode(encoded) == bytes)
        }
        #expect(Base64.decode("a") == nil)
        #expect(Base64.decode("ab$d") == nil)
    }

    @Test func sha256AndHexMatchKnownDigest() {
        let digest = Array("abc".utf8).withUnsafeBytes { Crypto.sha256($0) }
        #expect(digest.hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func constantTimeEqualsComparesContentAndLength() {
        #expect(Crypto.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!Crypto.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!Crypto.constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(Crypto.constantTimeEquals([], []))
    }
}

@Suite struct StreamingHMACTests {
    @Test(arguments: [0, 1, 63, 64, 65, 1000, 100_000])
    func streamingMatchesOneShot(length: Int) {
        let body = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let secret = try! SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        var signer = Signer.streamingSignature(secret: secret, id: "msg_1", timestamp: 42)
        var offset = 0
        while offset < body.count {
            let end = min(body.count, offset + 777)
            signer.update(Array(body[offset..<end]))
            offset = end
        }
        #expect(signer.header() == Signer.signature(secret: secret, id: "msg_1", timestamp: 42, body: body))
    }

    @Test func longKeysAreHashedFirst() {
        let key = [UInt8](repeating: 0xaa, count: 131)
        var mac = StreamingHMAC(key: key)
        mac.update(Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
        // RFC 4231 test case 6.
        #expect(mac.finalize().hexString == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }
}
