import Foundation
import PipehookFormats
import PipehookLifecycle
import Testing

@Suite struct PipevideoFormatTests {
    let format = PipevideoFormat()

    func decode(_ json: String) throws(FormatError) -> GenerationEvent { try format.decode(Array(json.utf8)) }

    @Test(arguments: Vectors.shared.pipevideo_examples)
    func fixtureExamplesDecode(_ example: Vectors.Case) throws {
        let event = try format.decode(example.body)
        #expect(event.eventType == "video.generation.completed")
        #expect(event.generationID.hasPrefix("gen_"))
        #expect(event.status.isTerminal)
    }

    @Test func missingAndNullOptionalFieldsBothDecodeToNil() throws {
        let missing = try decode(#"{"eventType":"video.generation.completed","generationId":"gen_1","status":"failed"}"#)
        let null = try decode(#"{"eventType":"video.generation.completed","generationId":"gen_1","status":"failed","outputUrl":null,"errorMessage":null}"#)
        #expect(missing == null)
        #expect(missing.outputURL == nil && missing.errorMessage == nil)
    }

    @Test func fieldsAndUnknownFieldsAreHandled() throws {
        let event = try decode(#"{"extra":{"nested":[1,2]},"eventType":"video.generation.completed","generationId":"gen_9","status":"completed","outputUrl":"https://x/v.mp4","errorMessage":"none","more":true}"#)
        #expect(event == GenerationEvent(eventType: "video.generation.completed", generationID: "gen_9", status: .completed, outputURL: "https://x/v.mp4", errorMessage: "none"))
    }

    @Test(arguments: [("pending", S.queued), ("processing", .inProgress), ("queued", .queued), ("in_progress", .inProgress), ("cancelled", .cancelled), ("incomplete", .incomplete)])
    func statusAliases(word: String, status: S) throws {
        #expect(try decode(#"{"eventType":"video.generation.completed","generationId":"g","status":"\#(word)"}"#).status == status)
    }
    typealias S = GenerationStatus

    @Test(arguments: [
        "",
        "not json",
        "[]",
        "null",
        #"{"eventType":"video.generation.completed","status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"g"}"#,
        #"{"eventType":"video.generation.started","generationId":"g","status":"completed"}"#,
        #"{"generationId":"g","status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"g","status":"done"}"#,
        #"{"eventType":"video.generation.completed","generationId":"","status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":5,"status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"g","status":"completed","outputUrl":5}"#,
        #"{"eventType":"video.generation.completed","generationId":null,"status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"g","status":"completed""#,
    ])
    func uninterpretableBodiesAreFormatErrors(_ body: String) {
        #expect(throws: FormatError.self) { try decode(body) }
    }

    @Test func registryFindsFormatsByName() {
        #expect(EventFormats.named("pipevideo")?.name == "pipevideo")
        #expect(EventFormats.named("other") == nil)
    }
}

@Suite struct JSONTextTests {
    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"), (1_760_000_000_123, "2025-10-09T08:53:20.123Z"),
        (-1, "1969-12-31T23:59:59.999Z"), (951_782_400_000, "2000-02-29T00:00:00.000Z"), (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ] as [(Int64, String)])
    func timestampsAreRFC3339UTCWithMilliseconds(milliseconds: Int64, text: String) {
        #expect(JSONText.timestamp(milliseconds: milliseconds) == text)
    }

    @Test(arguments: [
        ("plain", #""plain""#), ("a\"b\\c", #""a\"b\\c""#), ("line\nnext\ttab\r", #""line\nnext\ttab\r""#),
        ("\u{01}\u{1f}", #""\u0001\u001f""#), ("é 🎬 </script>", #""é 🎬 </script>""#),
        // Line and paragraph separators are escaped; their UTF-8 neighbours (… is E2 80 A6) are not.
        ("a\u{2028}b\u{2029}", #""a\u2028b\u2029""#), ("…\u{2027}\u{202A}", "\"…\u{2027}\u{202A}\""), ("", #""""#),
        ("\u{7f}\u{00}end", #""\#u{7f}\u0000end""#),
    ])
    func quotingRoundTripsThroughAJSONParser(text: String, quoted: String) throws {
        #expect(JSONText.quote(text) == quoted)
        let parsed = try JSONSerialization.jsonObject(with: Data(JSONText.quote(text).utf8), options: [.fragmentsAllowed]) as? String
        #expect(parsed == text)
    }
}

/// Issue 10 item 4 and SPEC §4: a body with duplicate keys, or with control characters in an
/// identifier, is not interpretable (stored raw as unrecognized), never read one way here and
/// another way by a handler that re-reads `raw`.
@Suite struct StrictPayloadTests {
    let format = PipevideoFormat()
    static let head = #"{"eventType":"video.generation.completed","#

    func refusal(_ json: String) -> String? {
        do {
            _ = try format.decode(Array(json.utf8))
            return nil
        } catch {
            return error.reason
        }
    }

    @Test(arguments: [
        #"{"eventType":"video.generation.completed","generationId":"gen_a","generationId":"gen_b","status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"gen_a","status":"completed","status":"failed"}"#,
        // The same key spelled with an escape is the same key.
        #"{"eventType":"video.generation.completed","generationId":"gen_a","\u0067enerationId":"gen_b","status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"gen_a","status":"completed","extra":{"k":1,"k":2}}"#,
        #"{"eventType":"video.generation.completed","generationId":"gen_a","status":"completed","outputUrl":"https://a","outputUrl":"https://b"}"#,
    ])
    func duplicateKeysAreNotInterpretable(_ body: String) throws {
        let reason = try #require(refusal(body), "decoded a body with a duplicate key")
        #expect(reason.hasPrefix("duplicate key"), "\(reason)")
    }

    @Test(arguments: ["gen_x\\u0000other", "gen\\u0001", "gen\\u001f", "gen\\u007f", "gen\\nx", "gen\\tx", "gen\\rx"])
    func controlCharactersInTheGenerationIDAreNotInterpretable(_ id: String) throws {
        let body = Self.head + #""generationId":"\#(id)","status":"completed"}"#
        let reason = try #require(refusal(body), "decoded generationId \(id)")
        #expect(reason == "generationId contains a control character")
    }

    @Test func controlCharactersInTheEventTypeOrStatusAreNotInterpretable() {
        #expect(refusal(#"{"eventType":"video.generation.completed\u0000","generationId":"g","status":"completed"}"#) == "eventType contains a control character")
        #expect(refusal(#"{"eventType":"video.generation.completed","generationId":"g","status":"completed\u0000"}"#) == "status contains a control character")
    }

    @Test func otherTextMayCarryControlCharactersAndUnicode() throws {
        let event = try format.decode(Array((Self.head + #""generationId":"gen_é🎬","status":"failed","errorMessage":"line\nnext\u0001"}"#).utf8))
        #expect(event.generationID == "gen_é🎬")
        #expect(event.errorMessage == "line\nnext\u{1}")
    }

    /// A NUL cannot be stored as text (SQLite binds C strings and would cut it; PostgreSQL refuses
    /// it, so the delivery could never commit and the sender's retries would run out): such a
    /// body is kept raw as unrecognized instead.
    @Test(arguments: ["outputUrl", "errorMessage"])
    func aNulInFreeTextIsNotInterpretable(_ field: String) {
        let body = Self.head + #""generationId":"g","status":"failed","\#(field)":"before\u0000after"}"#
        #expect(refusal(body) == "\(field) contains a NUL character")
    }

    @Test func sameKeyInDifferentObjectsIsFine() throws {
        let event = try format.decode(Array((Self.head + #""generationId":"g","status":"completed","a":{"status":1},"b":[{"status":2},{"status":3}]}"#).utf8))
        #expect(event.status == .completed)
    }
}

@Suite struct StrictJSONTests {
    func accepts(_ text: String) -> Bool { (try? StrictJSON.validate(Array(text.utf8))) != nil }

    @Test(arguments: [
        "{}", "[]", "0", "-0.5e+10", "\"x\"", "true", " null ", #"{"a":[1,{"b":"\u00e9\ud83c\udfac"}],"c":"é"}"#,
        #"{"a":1,"A":2,"a ":3}"#, "[1,2,3]", "\t{\r\n\"k\" : \"v\"\n}\n",
    ])
    func acceptsJSON(_ text: String) {
        #expect(accepts(text), "\(text)")
    }

    @Test(arguments: [
        "", "{", "}", "[1,]", "{\"a\":1,}", "{a:1}", "01", "1.", ".5", "1e", "+1", "tru", "nul", "{} {}", "\"\\x\"",
        "\"a\u{1}b\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "'a'", "[1 2]", "{\"a\" 1}", "\"unterminated",
        "NaN", "Infinity", "\u{FEFF}{}",
    ])
    func refusesWhatIsNotOneJSONText(_ text: String) {
        #expect(!accepts(text), "\(text.debugDescription)")
    }

    @Test func refusesInvalidUTF8() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xE2, 0x82, 0x22]] {
            #expect((try? StrictJSON.validate(bytes)) == nil, "\(bytes)")
        }
        #expect((try? StrictJSON.validate([0x22, 0xE2, 0x82, 0xAC, 0x22])) != nil)
    }

    @Test func nestingIsLimited() {
        let depth = StrictJSON.maxDepth
        #expect(accepts(String(repeating: "[", count: depth) + String(repeating: "]", count: depth)))
        #expect(!accepts(String(repeating: "[", count: depth + 1) + String(repeating: "]", count: depth + 1)))
        #expect(!accepts(String(repeating: "{\"a\":", count: 100_000) + "1" + String(repeating: "}", count: 100_000)))
    }

    @Test func manyKeysStayLinearAndDuplicatesAreFoundAmongThem() {
        let keys = (0..<20_000).map { #""k\#($0)":\#($0)"# }
        #expect(accepts("{" + keys.joined(separator: ",") + "}"))
        #expect(!accepts("{" + keys.joined(separator: ",") + #","k12345":0}"#))
        #expect(!accepts("{" + keys.joined(separator: ",") + #","\u006b12345":0}"#))
    }
}

/// Issue 10 item 6: log lines and JSON documents stay one line, and sender-controlled ids are clipped.
@Suite struct LineSafetyTests {
    @Test func lineAndParagraphSeparatorsAreEscaped() throws {
        let quoted = JSONText.quote("a\u{2028}b\u{2029}c")
        #expect(quoted == #""a\u2028b\u2029c""#)
        #expect(!quoted.unicodeScalars.contains { $0 == "\u{2028}" || $0 == "\u{2029}" })
        let parsed = try JSONSerialization.jsonObject(with: Data(quoted.utf8), options: [.fragmentsAllowed]) as? String
        #expect(parsed == "a\u{2028}b\u{2029}c")
    }

    @Test func identifiersAreClippedWithAMarker() {
        #expect(LogText.clip("msg_1") == "msg_1")
        let exact = String(repeating: "a", count: LogText.identifierLimit)
        #expect(LogText.clip(exact) == exact)
        let long = String(repeating: "b", count: 64 * 1024)
        #expect(LogText.clip(long) == String(repeating: "b", count: LogText.identifierLimit) + LogText.clippedMarker)
        // Cut between scalars, never inside one.
        let wide = String(repeating: "é", count: 100)
        let clipped = LogText.clip(wide)
        #expect(clipped == String(repeating: "é", count: 64) + LogText.clippedMarker)
    }
}

/// The create bodies `pipehook submit` sends (issue 11).
@Suite struct CreateRequestTests {
    static func object(_ bytes: [UInt8]) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]
    }

    @Test func optionsBecomeTheDocumentedFieldsWithDefaultsFilledIn() throws {
        let request = CreateRequest(
            prompt: "a fox", instructions: "calm", expandPrompt: true, width: 1920, height: 1080, aspectRatio: "16:9",
            providerOrder: ["a", "b"]
        )
        let body = Self.object(try request.body(defaultModel: "pv-1", defaultEngine: "auto"))
        #expect(body["input"] as? String == "a fox" && body["model"] as? String == "pv-1" && body["engine"] as? String == "auto")
        #expect(body["instructions"] as? String == "calm" && body["expand_prompt"] as? Bool == true)
        #expect(body["width"] as? Int == 1920 && body["height"] as? Int == 1080 && body["aspectRatio"] as? String == "16:9")
        #expect((body["provider"] as? [String: Any])?["order"] as? [String] == ["a", "b"])
        // The options win over the defaults; nothing unset appears.
        let own = Self.object(try CreateRequest(prompt: "x", model: "m", engine: "lottie").body(defaultModel: "pv-1", defaultEngine: "auto"))
        #expect(own["model"] as? String == "m" && own["engine"] as? String == "lottie" && own.count == 3)
    }

    @Test(arguments: [
        (CreateRequest(prompt: ""), "the prompt is empty"),
        (CreateRequest(prompt: "x", model: nil), "no model"),
        (CreateRequest(prompt: "x", model: "m", engine: "blender"), "engine must be one of"),
        (CreateRequest(prompt: "x", model: "m", width: 0), "width must be"),
        (CreateRequest(prompt: "x", model: "m", height: 20_000), "height must be"),
        (CreateRequest(prompt: "x", model: "m", providerOrder: ["a", ""]), "provider order"),
    ])
    func badOptionsAreRefusedBeforeAnyCall(request: CreateRequest, reason: String) {
        #expect(throws: FormatError.self) { try request.body(defaultModel: nil, defaultEngine: nil) }
        do { _ = try request.body(defaultModel: nil, defaultEngine: nil) } catch { #expect(error.reason.contains(reason), "\(error.reason)") }
    }

    @Test func aFullBodyIsCompletedOrForwardedByteForByte() throws {
        let full = Array(#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"x"}]}]}"#.utf8)
        #expect(try CreateRequest.complete(full, defaultModel: "pv-1", defaultEngine: nil) == full)
        let bare = Array(#"{"input":"x"}"#.utf8)
        let completed = Self.object(try CreateRequest.complete(bare, defaultModel: "pv-1", defaultEngine: "lottie"))
        #expect(completed["model"] as? String == "pv-1" && completed["engine"] as? String == "lottie")
        for bad in [#"[1]"#, #"{"model":"m"}"#, #"{"input":3}"#, "not json"] {
            #expect(throws: FormatError.self) { try CreateRequest.complete(Array(bad.utf8), defaultModel: "pv-1", defaultEngine: nil) }
        }
        #expect(throws: FormatError.self) { try CreateRequest.complete(bare, defaultModel: nil, defaultEngine: nil) }
    }
}
