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
}
