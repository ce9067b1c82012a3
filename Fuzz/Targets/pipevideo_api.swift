// libFuzzer target: the Pipevideo API response decoder (Sources/PipehookFormats/PipevideoAPIFormat.swift):
// `GET /v1/responses/{id}` snapshots and 429 `retry_after` bodies.
//
// Invariants:
// - a snapshot has a non-empty id of at most 256 bytes without control characters, and a status
//   that the body's `status` word names (older names mapped);
// - its output URL, when set, is non-empty and is `output_video_url` or a URL found in `output`;
// - a snapshot written back in the documented shape decodes to the same snapshot;
// - `retryAfterSeconds` is finite, 0…86,400 when set.
import Foundation
import PipehookFormats
import PipehookLifecycle

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let body = input(data, size)
    if let seconds = PipevideoAPIFormat.retryAfterSeconds(body) {
        check(seconds.isFinite && seconds >= 0 && seconds <= 86_400, "retry_after \(seconds)")
    }
    guard let snapshot = try? PipevideoAPIFormat.snapshot(body) else { return 0 }
    check(!snapshot.generationID.isEmpty && snapshot.generationID.utf8.count <= 256, "id of \(snapshot.generationID.utf8.count) bytes")
    check(!snapshot.generationID.utf8.contains { $0 < 0x20 || $0 == 0x7F }, "a control character in id \(snapshot.generationID.debugDescription)")
    let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
    let word = object?["status"] as? String
    check(word.flatMap(GenerationStatus.init(providerValue:)) == snapshot.status, "status differs from the body's")
    if let url = snapshot.outputURL {
        check(!url.isEmpty, "an empty output URL")
        // Compared with the body's decoded strings, not its text: a JSON escape (`\u0065`) spells
        // the same URL differently.
        let found = object.map { strings(in: $0) } ?? []
        check(found.contains(url.replacingOccurrences(of: "\u{FFFD}", with: "\u{0}")) || found.contains(url),
              "an output URL that is not a string of the body: \(url.debugDescription)")
    }

    var written: [String: Any] = ["id": snapshot.generationID, "object": "response", "status": snapshot.status.rawValue]
    if let url = snapshot.outputURL {
        written["output"] = [["type": "message", "content": [["type": "output_video", "video_url": ["url": url, "expires_at": 0]]]]]
    }
    written["error"] = snapshot.errorMessage.map { ["code": "x", "message": $0] } ?? NSNull()
    guard let again = try? JSONSerialization.data(withJSONObject: written) else {
        check(false, "could not write the snapshot back")
        return 0
    }
    let decoded = try? PipevideoAPIFormat.snapshot(Array(again))
    check(decoded == snapshot, "round trip changed the snapshot: \(String(describing: decoded)) vs \(snapshot)")
    return 0
}

/// Every string value anywhere in a parsed JSON value.
func strings(in value: Any) -> Set<String> {
    switch value {
    case let text as String: [text]
    case let array as [Any]: array.reduce(into: []) { $0.formUnion(strings(in: $1)) }
    case let object as [String: Any]: object.values.reduce(into: []) { $0.formUnion(strings(in: $1)) }
    default: []
    }
}
