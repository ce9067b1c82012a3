// libFuzzer target: the event document every step receives (EventDocument.json(), on stdin and in
// re-POSTs) and the multipart writer of `body: multipart` re-POSTs (MultipartForm), in
// Sources/PipehookHandlers.
//
// Input: fields separated by 0xFF (never part of UTF-8): status-byte, event id, source, type,
// generation id, output URL, error message, file path, raw payload (the rest, any bytes).
//
// Invariants:
// - the document is one strict JSON object (StrictJSON: no duplicate keys, valid UTF-8) that
//   Foundation parses, with every documented key, and every field round-trips (`raw` as the
//   payload's JSON when it is strict JSON, else as the payload's text);
// - the multipart body (head + file bytes + tail) splits at its boundary into exactly the event
//   part and the file part, with exactly the headers written; the event part is the document;
//   the file part's bytes are the file's; the filename parameter is one quoted value without
//   quote, backslash, CR, LF or other control characters, whatever the file's name.
import Foundation
import PipehookFormats
import PipehookHandlers
import PipehookLifecycle

let boundary = "pipehook-00112233445566778899aabb"
let keys = ["event_id", "source", "type", "generation_id", "status", "previous_status", "output_url", "error_message",
            "received_at", "file", "sha256", "bytes", "raw"]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = input(data, size)
    let parts = bytes.split(separator: 0xFF, maxSplits: 8, omittingEmptySubsequences: false)
    func text(_ index: Int) -> String { index < parts.count ? String(decoding: parts[index], as: UTF8.self) : "" }
    let selector = parts.first?.first ?? 0
    let statuses = GenerationStatus.allCases
    let raw = parts.count > 8 ? Array(parts[8]) : []
    let file = text(7)
    let document = EventDocument(
        eventID: text(1), source: text(2), type: text(3), generationID: text(4),
        status: statuses[Int(selector) % statuses.count],
        previousStatus: selector & 0x80 == 0 ? nil : statuses[Int(selector >> 3) % statuses.count],
        outputURL: selector & 0x40 == 0 ? nil : text(5), errorMessage: selector & 0x20 == 0 ? nil : text(6),
        receivedAt: Int64(size) * 1_234_567_891 % 253_402_300_799_999,  // within years 1970…9999
        artifact: file.isEmpty ? nil : Artifact(file: file, sha256: text(6), bytes: Int64(size)), raw: raw
    )
    let json = document.json()
    do { try StrictJSON.validate(json) } catch {
        check(false, "the event document is not strict JSON (\(error.reason)): \(String(decoding: json, as: UTF8.self).debugDescription)")
    }
    guard let object = (try? JSONSerialization.jsonObject(with: Data(json))) as? [String: Any] else {
        check(false, "Foundation cannot read the event document")
        return 0
    }
    check(Set(object.keys) == Set(keys), "keys \(object.keys.sorted())")
    check(object["event_id"] as? String == document.eventID, "event_id does not round-trip")
    check(object["source"] as? String == document.source, "source does not round-trip")
    check(object["type"] as? String == document.type, "type does not round-trip")
    check(object["generation_id"] as? String == document.generationID, "generation_id does not round-trip")
    check(object["status"] as? String == document.status.rawValue, "status does not round-trip")
    check(object["previous_status"] as? String == document.previousStatus?.rawValue, "previous_status does not round-trip")
    check(object["output_url"] as? String == document.outputURL, "output_url does not round-trip")
    check(object["error_message"] as? String == document.errorMessage, "error_message does not round-trip")
    check(object["received_at"] as? String == JSONText.timestamp(milliseconds: document.receivedAt), "received_at")
    check(object["file"] as? String == document.artifact?.file, "file does not round-trip")
    if (try? StrictJSON.validate(raw)) != nil {
        let expected = try? JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed])
        check(expected == nil || (object["raw"] as? String) == nil || (expected as? String) != nil,
              "strict JSON raw was embedded as a string")
    } else {
        check(object["raw"] as? String == String(decoding: raw, as: UTF8.self), "raw text does not round-trip")
    }

    checkMultipart(document: json, filePath: file.isEmpty ? "/srv/videos/x.mp4" : file, fileBytes: raw)
    return 0
}

func checkMultipart(document: [UInt8], filePath: String, fileBytes: [UInt8]) {
    let form = MultipartForm(boundary: boundary, document: document, filePath: filePath)
    check(form.contentType == "multipart/form-data; boundary=\(boundary)", "content type")
    let delimiter = Array("\r\n--\(boundary)".utf8)
    // The boundary is 96 random bits in production; here it is fixed, so skip inputs that contain it.
    let marker = Array(boundary.utf8)
    if contains(document, marker) || contains(fileBytes, marker) || contains(Array(filePath.utf8), marker) { return }

    let body = Array("\r\n".utf8) + form.head + fileBytes + form.tail
    var pieces: [[UInt8]] = []
    var start = 0
    var index = 0
    while index + delimiter.count <= body.count {
        if body[index..<(index + delimiter.count)].elementsEqual(delimiter) {
            pieces.append(Array(body[start..<index]))
            index += delimiter.count
            start = index
        } else {
            index += 1
        }
    }
    pieces.append(Array(body[start...]))
    // "", event part, file part, "--\r\n".
    check(pieces.count == 4, "the body splits into \(pieces.count - 1) parts, not 2 (file name \(filePath.debugDescription))")
    check(pieces[0].isEmpty && pieces[3] == Array("--\r\n".utf8), "preamble or epilogue")
    let (eventHeaders, eventBody) = split(pieces[1])
    check(eventHeaders == ["Content-Disposition: form-data; name=\"event\"", "Content-Type: application/json"], "event part headers \(eventHeaders)")
    check(eventBody == document, "the event part is not the document")
    let (fileHeaders, fileBody) = split(pieces[2])
    check(fileBody == fileBytes, "the file part is not the file")
    check(fileHeaders.count == 2 && fileHeaders[1] == "Content-Type: application/octet-stream", "file part headers \(fileHeaders.map(\.debugDescription))")
    let dispositionPrefix = "Content-Disposition: form-data; name=\"file\"; filename=\""
    let disposition = Array(fileHeaders[0].utf8)
    check(disposition.starts(with: Array(dispositionPrefix.utf8)) && disposition.last == UInt8(ascii: "\""), "file disposition \(fileHeaders[0].debugDescription)")
    let name = disposition.dropFirst(dispositionPrefix.utf8.count).dropLast()
    check(!name.isEmpty && !name.contains { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 || $0 == 0x7F },
          "filename parameter \(String(decoding: name, as: UTF8.self).debugDescription)")
    check(String(decoding: name, as: UTF8.self) == form.fileName, "filename parameter differs from fileName")
}

/// Header lines and body of one part ("\r\n" + headers + "\r\n\r\n" + body).
func split(_ part: [UInt8]) -> ([String], [UInt8]) {
    guard part.starts(with: [0x0D, 0x0A]) else {
        check(false, "a part does not start with CRLF")
        return ([], [])
    }
    let rest = Array(part.dropFirst(2))
    let separator: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A]
    var index = 0
    while index + 4 <= rest.count, !rest[index..<(index + 4)].elementsEqual(separator) { index += 1 }
    check(index + 4 <= rest.count, "a part without the blank line after its headers")
    let headerBytes = Array(rest[..<index])
    var lines: [String] = []
    var lineStart = 0
    var position = 0
    while position + 1 < headerBytes.count {
        if headerBytes[position] == 0x0D, headerBytes[position + 1] == 0x0A {
            lines.append(String(decoding: headerBytes[lineStart..<position], as: UTF8.self))
            position += 2
            lineStart = position
        } else {
            position += 1
        }
    }
    lines.append(String(decoding: headerBytes[lineStart...], as: UTF8.self))
    return (lines, Array(rest[(index + 4)...]))
}

func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard needle.count <= haystack.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
    return false
}
