import PipehookFormats
import PipehookSettings
import PipehookSignature
import Testing

/// Bad input (SPEC §10): random and mutated inputs into the header parser, the payload decoder
/// and the configuration loader must never crash, and must never be accepted by accident.
/// Seeded, so a failure reproduces. The coverage-guided fuzzers in Fuzz/ (libFuzzer, `Fuzz/run.sh`)
/// go further, with stronger invariants; these stay as a quick check inside `swift test`.
@Suite struct FuzzTests {
    static let alphabet = Array(#"v1,v2 =+/abcXYZ019{}[]":\-_.$ \#t\#n"#.utf8) + [0, 0xff, 0xc3, 0xa9]

    static func randomBytes(_ generator: inout SplitMix, maxLength: Int) -> [UInt8] {
        let length = Int.random(in: 0...maxLength, using: &generator)
        return (0..<length).map { _ in
            Bool.random(using: &generator) ? alphabet.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
        }
    }

    static func mutate(_ seed: [UInt8], _ generator: inout SplitMix) -> [UInt8] {
        var bytes = seed
        for _ in 0..<Int.random(in: 1...4, using: &generator) {
            let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &generator)
            switch Int.random(in: 0..<4, using: &generator) {
            case 0 where !bytes.isEmpty: bytes[position] = UInt8.random(in: 0...255, using: &generator)
            case 1: bytes.insert(alphabet.randomElement(using: &generator)!, at: position)
            case 2 where !bytes.isEmpty: bytes.remove(at: position)
            default: bytes = Array(bytes.prefix(position))
            }
        }
        return bytes
    }

    @Test func signatureHeadersAndVerification() throws {
        var generator = SplitMix(seed: 11)
        let vector = Vectors.shared.valid[0]
        let verifier = SignatureVerifier(secrets: [try SigningSecret(vector.secret)])
        let validDigest = SignatureHeader.v1Digests(vector.signature)[0]
        for round in 0..<5_000 {
            let header = String(decoding: round % 2 == 0 ? Self.randomBytes(&generator, maxLength: 200) : Self.mutate(Array(vector.signature.utf8), &generator), as: UTF8.self)
            _ = SignatureHeader.v1Digests(header)
            let headers = SignedHeaders(id: vector.id, timestamp: String(vector.timestamp), signature: header)
            if header != vector.signature, (try? verifier.verify(headers: headers, body: vector.body, now: vector.timestamp)) != nil {
                // Only a header that still carries the valid MAC (padding may differ) may verify.
                #expect(SignatureHeader.v1Digests(header).contains(validDigest), "forged header accepted: \(header)")
            }
        }
    }

    @Test func timestampsAndSecrets() {
        var generator = SplitMix(seed: 12)
        let verifier = SignatureVerifier(secrets: [SigningSecret(key: [1, 2, 3])])
        for _ in 0..<5_000 {
            let text = String(decoding: Self.randomBytes(&generator, maxLength: 30), as: UTF8.self)
            _ = try? SigningSecret(text)
            let headers = SignedHeaders(id: "m", timestamp: text, signature: "v1,AAAA")
            #expect(throws: VerificationFailure.self) { try verifier.verify(headers: headers, body: [], now: 1_000_000) }
        }
    }

    @Test func pipevideoPayloads() {
        var generator = SplitMix(seed: 13)
        let seeds = Vectors.shared.pipevideo_examples.map(\.body)
        let format = PipevideoFormat()
        var decoded = 0
        for round in 0..<5_000 {
            let body = round % 2 == 0 ? Self.randomBytes(&generator, maxLength: 300) : Self.mutate(seeds[round % seeds.count], &generator)
            if let event = try? format.decode(body) {
                decoded += 1
                #expect(!event.generationID.isEmpty)
            }
        }
        #expect(decoded > 0, "mutations of valid payloads should sometimes still decode")
    }

    @Test func configurationLoader() {
        var generator = SplitMix(seed: 14)
        let seed = Array("""
            listen: "127.0.0.1:8787"
            sources: {p: {secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], tolerance: 5m}}
            retry: {attempts: 3, initial_delay: 1s, max_delay: 1m}
            routes:
              - name: r
                on: [completed]
                steps:
                  - download: {dir: "./v", path: "{yyyy}/{generation_id}.{ext}", max_bytes: 1GiB}
                  - exec: {command: ["x", "${HOME}"], timeout: 5m, env: {A: "b"}}
            """.utf8)
        for round in 0..<1_000 {
            let text = String(decoding: round % 3 == 0 ? Self.randomBytes(&generator, maxLength: 200) : Self.mutate(seed, &generator), as: UTF8.self)
            do {
                _ = try SettingsParser.parse(yaml: text, environment: ["HOME": "/root"])
            } catch {
                #expect(!error.problems.isEmpty)
            }
        }
        for _ in 0..<5_000 {
            let text = String(decoding: Self.randomBytes(&generator, maxLength: 12), as: UTF8.self)
            _ = Units.milliseconds(text)
            _ = Units.bytes(text)
            _ = EnvSubstitution.apply(text, environment: ["A": "1"])
            _ = try? PathTemplate(text)
        }
    }
}
