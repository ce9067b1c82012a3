// libFuzzer target: the download path template and its renderer
// (Sources/PipehookSettings PathTemplate, Sources/PipehookHandlers/PathTemplate+Render.swift).
//
// Input: lines `template \n generation_id \n source \n ext \n url-path \n content-type \n status-byte…`.
//
// Invariants, checked on the UTF-8 bytes (what the file system sees), not on Swift Characters:
// - a rendered path is relative, not empty, and none of its `/`-separated components is empty,
//   `.` or `..`; no component is longer than 255 bytes; no NUL or control byte;
// - a value never adds a folder level: `{generation_id}` alone renders one component;
// - `DownloadPath.resolve` puts the path strictly inside the folder (absolute and relative folders);
// - a sanitised value has no `/`, no control character, no leading dot, at most 100 bytes;
// - the extension chosen is always 1–8 lower-case letters or digits; rendering is deterministic.
import Foundation
import PipehookFormats
import PipehookHandlers
import PipehookLifecycle
import PipehookSettings

func components(_ path: String) -> [ArraySlice<UInt8>] {
    Array(path.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
}

func checkRelative(_ path: String, _ what: String) {
    let bytes = Array(path.utf8)
    check(!bytes.isEmpty, "\(what): empty path")
    check(bytes.first != UInt8(ascii: "/"), "\(what): absolute path \(path.debugDescription)")
    check(!bytes.contains { $0 < 0x20 || $0 == 0x7f }, "\(what): control byte in \(path.debugDescription)")
    for component in components(path) {
        check(!component.isEmpty, "\(what): empty component in \(path.debugDescription)")
        check(Array(component) != [0x2e] && Array(component) != [0x2e, 0x2e], "\(what): dot component in \(path.debugDescription)")
        check(component.count <= DownloadPath.maxComponentBytes, "\(what): a \(component.count)-byte component in \(path.debugDescription)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let lines = input(data, size).split(separator: UInt8(ascii: "\n"), maxSplits: 6, omittingEmptySubsequences: false)
        .map { String(decoding: $0, as: UTF8.self) }
    func line(_ index: Int) -> String { index < lines.count ? lines[index] : "" }
    let templateText = line(0), generationID = line(1), source = line(2), ext = line(3)
    let urlPath = line(4), contentType = line(5)
    let selector = line(6).utf8.first ?? 0
    let status = GenerationStatus.allCases[Int(selector) % GenerationStatus.allCases.count]
    let date = Date(timeIntervalSince1970: Double(Int(selector) * 86_400 * 97))

    for value in [generationID, source, ext, urlPath] {
        let safe = DownloadPath.sanitize(value)
        let bytes = Array(safe.utf8)
        check(!bytes.isEmpty && bytes.count <= DownloadPath.maxValueBytes, "sanitize: \(bytes.count) bytes")
        check(!bytes.contains(UInt8(ascii: "/")) && !bytes.contains(UInt8(ascii: "\\")), "sanitize: a separator in \(safe.debugDescription)")
        check(!bytes.contains { $0 < 0x20 || $0 == 0x7f }, "sanitize: a control byte in \(safe.debugDescription)")
        check(bytes.first != UInt8(ascii: "."), "sanitize: a leading dot in \(safe.debugDescription)")
    }
    let chosen = DownloadPath.fileExtension(urlPath: urlPath, contentType: contentType.isEmpty ? nil : contentType)
    check(DownloadPath.sanitizeExtension(chosen) == chosen, "extension \(chosen.debugDescription) is not canonical")

    let document = EventDocument(
        eventID: "evt_1", source: source, type: "video.generation.completed", generationID: generationID,
        status: status, previousStatus: nil, outputURL: nil, errorMessage: nil, receivedAt: 0, raw: []
    )
    // The value alone: exactly one component, whatever it contains.
    let single = try! PathTemplate("{generation_id}").render(document: document, ext: ext, date: date)
    checkRelative(single, "{generation_id}")
    check(components(single).count == 1, "a generation id added a folder level: \(single.debugDescription)")

    guard let template = try? PathTemplate(templateText) else { return 0 }
    let rendered = template.render(document: document, ext: ext, date: date)
    check(rendered == template.render(document: document, ext: ext, date: date), "rendering is not deterministic")
    checkRelative(rendered, "template \(templateText.debugDescription)")
    check(DownloadPath.normalizeRelative(rendered) == rendered, "normalising a rendered path changes it: \(rendered.debugDescription)")
    for directory in ["/srv/videos", "videos/2026", "/"] {
        let base = DownloadPath.standardizedDirectory(directory)
        guard let full = DownloadPath.resolve(relative: rendered, in: directory) else {
            check(false, "resolve refused \(rendered.debugDescription) in \(directory)")
            return 0
        }
        let prefix = base.hasSuffix("/") ? base : base + "/"
        check(Array(full.utf8).starts(with: Array(prefix.utf8)) && full.utf8.count > prefix.utf8.count,
              "\(full.debugDescription) is not inside \(base.debugDescription)")
    }
    return 0
}
