// libFuzzer target: the Pipevideo webhook decoder (Sources/PipehookFormats/PipevideoFormat.swift).
//
// Invariants:
// - a decoded event has a non-empty generation id of at most 256 bytes, and neither it nor the
//   event type or status contains a control character (SPEC §4); its event type is
//   video.generation.completed;
// - a decoded body is one strict JSON text (no duplicate keys) and agrees with an independent
//   reading through JSONSerialization (same id, status word, URL and message);
// - the event round-trips: written back as a Pipevideo body it decodes to the same event;
// - decoding is deterministic, and a refusal is always a FormatError with a reason.
import Foundation
import PipehookFormats
import PipehookLifecycle

let format = PipevideoFormat()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let body = input(data, size)
    let event: GenerationEvent
    do {
        event = try format.decode(body)
    } catch {
        check(!error.reason.isEmpty, "a FormatError without a reason")
        check((try? format.decode(body)) == nil, "decoding is not deterministic")
        return 0
    }
    check(event.eventType == PipevideoFormat.completedEventType, "event type \(event.eventType.debugDescription)")
    check(!event.generationID.isEmpty && event.generationID.utf8.count <= 256, "generation id of \(event.generationID.utf8.count) bytes")
    for text in [event.eventType, event.generationID] {
        check(!text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "a control character in \(text.debugDescription)")
    }
    check((try? StrictJSON.validate(body)) != nil, "decoded a body the strict scanner refuses")

    // An independent reading of the same fields.
    let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
    // JSON allows numbers beyond a Double (in fields the format ignores); Foundation refuses them.
    check(object != nil || hasHugeNumber(body), "decoded what JSONSerialization does not read as an object")
    if let object {
        check(object["generationId"] as? String == event.generationID, "generationId differs from JSONSerialization's")
        let word = object["status"] as? String
        check(word.flatMap(GenerationStatus.init(providerValue:)) == event.status, "status differs from JSONSerialization's")
        check(object["outputUrl"] as? String == event.outputURL, "outputUrl differs")
        check(object["errorMessage"] as? String == event.errorMessage, "errorMessage differs")
    }

    // Round trip through a body written the way Pipevideo writes it.
    var written: [String: Any] = [
        "eventType": event.eventType, "generationId": event.generationID, "status": event.status.rawValue,
    ]
    written["outputUrl"] = event.outputURL ?? NSNull()
    written["errorMessage"] = event.errorMessage ?? NSNull()
    guard let again = try? JSONSerialization.data(withJSONObject: written) else {
        check(false, "could not write the event back")
        return 0
    }
    do {
        let decoded = try format.decode(Array(again))
        check(decoded == event, "round trip changed the event: \(decoded) vs \(event)")
    } catch {
        check(false, "the event written back does not decode: \(error.reason)")
    }
    return 0
}
