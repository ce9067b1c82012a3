import Foundation
import PipehookHandlers
import Testing

@Suite struct MultipartFormTests {
    let boundary = "pipehook-00112233445566778899aabb"

    @Test func framesTheEventThenTheFile() {
        let form = MultipartForm(boundary: boundary, document: Array(#"{"a":1}"#.utf8), filePath: "/srv/videos/2026/gen_1.mp4")
        #expect(String(decoding: form.head, as: UTF8.self) == "--\(boundary)\r\nContent-Disposition: form-data; name=\"event\"\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"gen_1.mp4\"\r\nContent-Type: application/octet-stream\r\n\r\n")
        #expect(String(decoding: form.tail, as: UTF8.self) == "\r\n--\(boundary)--\r\n")
        #expect(form.contentType == "multipart/form-data; boundary=\(boundary)")
        #expect(MultipartForm.randomBoundary().utf8.count == "pipehook-".utf8.count + 24)
    }

    /// Found by Fuzz/ (event_document): only `"` was replaced in the file name, so a name with CR LF
    /// ended the Content-Disposition line and added headers of its own to the file part.
    @Test(arguments: ["evil\"\r\nX-Injected: 1\r\n.mp4", "a\nb.mp4", "a\\\".mp4", "tab\there\u{7f}.mp4", "nul\u{0}.mp4"])
    func aFileNameCannotEndItsParameterOrAddHeaders(_ name: String) {
        let form = MultipartForm(boundary: boundary, document: [], filePath: "/srv/videos/" + name)
        #expect(!form.fileName.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || $0 == "\"" || $0 == "\\" }, "\(form.fileName.debugDescription)")
        let head = String(decoding: form.head, as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        #expect(lines.count == 10, "\(lines)")
        #expect(lines[6] == "Content-Disposition: form-data; name=\"file\"; filename=\"\(form.fileName)\"")
        #expect(lines[7] == "Content-Type: application/octet-stream")
    }

    /// Found by Fuzz/ (event_document): the name came from `NSString.lastPathComponent`, which traps
    /// on a doubled slash before a non-ASCII character ("a//é"), ending the daemon.
    @Test(arguments: [("/srv/videos//é.mp4", "é.mp4"), ("a//é", "é"), ("//é", "é"), ("x.mp4", "x.mp4"), ("/", "file"), ("/srv/v/", "v")])
    func theFileNameIsTheLastComponentWhateverTheSlashes(_ path: String, _ expected: String) {
        #expect(MultipartForm(boundary: boundary, document: [], filePath: path).fileName == expected)
    }
}
