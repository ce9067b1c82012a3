import Foundation
import PipehookHandlers
import Testing

@Suite struct EventDocumentTests {
    @Test func everyKeyIsPresentAndRawIsEmbedded() throws {
        let document = EventDocument(
            eventID: "msg_1", source: "pipevideo", type: "video.generation.completed", generationID: "gen_1",
            status: .completed, previousStatus: .inProgress, outputURL: "https://x/v.mp4", errorMessage: nil,
            receivedAt: 1_700_000_000_123, artifact: Artifact(file: "/a/b.mp4", sha256: "ab", bytes: 3),
            raw: Array(#"{"k":[1,2]}"#.utf8)
        )
        let json = try #require(try JSONSerialization.jsonObject(with: Data(document.json())) as? [String: Any])
        #expect(Set(json.keys) == ["event_id", "source", "type", "generation_id", "status", "previous_status", "output_url", "error_message", "received_at", "file", "sha256", "bytes", "raw"])
        #expect(json["error_message"] is NSNull)
        #expect(json["received_at"] as? String == "2023-11-14T22:13:20.123Z")
        #expect((json["raw"] as? [String: Any])?["k"] as? [Int] == [1, 2])
        #expect(json["bytes"] as? Int == 3)
        var notJSON = document
        notJSON.raw = Array("not json".utf8)
        notJSON.artifact = nil
        let second = try #require(try JSONSerialization.jsonObject(with: Data(notJSON.json())) as? [String: Any])
        #expect(second["raw"] as? String == "not json")
        #expect(second["file"] is NSNull)
    }

    /// Found by Fuzz/ (event_document): `raw` that Foundation's JSONSerialization takes but JSON does
    /// not (a trailing comma, duplicate keys, UTF-16) was embedded verbatim, so the document on a
    /// step's stdin was not JSON for jq, Python or any strict parser. It is embedded as a string now.
    @Test(arguments: [#"{"a":1,}"#, #"[1,2,]"#, #"{"a":1,"a":2}"#])
    func rawThatIsNotStrictJSONIsEmbeddedAsText(_ raw: String) throws {
        let document = EventDocument(
            eventID: "msg_1", source: "pipevideo", type: "video.generation.completed", generationID: "gen_1",
            status: .completed, previousStatus: nil, outputURL: nil, errorMessage: nil, receivedAt: 0, raw: Array(raw.utf8)
        )
        // Verbatim, Foundation would read `raw` back as an object or array.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(document.json())) as? [String: Any])
        #expect(object["raw"] as? String == raw)
    }

    @Test func rawInUTF16IsEmbeddedAsText() throws {
        var raw: [UInt8] = []
        for unit in #"{"a":1}"#.utf16 { raw += [UInt8(unit & 0xff), UInt8(unit >> 8)] }
        let document = EventDocument(
            eventID: "msg_1", source: "pipevideo", type: "t", generationID: "gen_1", status: .completed,
            previousStatus: nil, outputURL: nil, errorMessage: nil, receivedAt: 0, raw: raw
        )
        // Verbatim, its NUL bytes would be raw control characters inside the document.
        let object = try #require(try JSONSerialization.jsonObject(with: Data(document.json())) as? [String: Any])
        #expect(object["raw"] as? String == String(decoding: raw, as: UTF8.self))
    }
}
