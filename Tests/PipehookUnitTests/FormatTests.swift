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
    ])
    func quotingRoundTripsThroughAJSONParser(text: String, quoted: String) throws {
        #expect(JSONText.quote(text) == quoted)
        let parsed = try JSONSerialization.jsonObject(with: Data(JSONText.quote(text).utf8), options: [.fragmentsAllowed]) as? String
        #expect(parsed == text)
    }
}
