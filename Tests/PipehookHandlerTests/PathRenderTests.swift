import Foundation
import PipehookHandlers
import PipehookLifecycle
import PipehookSettings
import Testing

@Suite struct PathRenderTests {
    static let hostile: [String] = [
        "../../etc/passwd", "a/b", "..", ".", ".hidden", "", "vidéo-日本語-🎬", "a\u{0}b", String(repeating: "x", count: 1000),
        String(repeating: "é", count: 600), "..\\..\\windows", "/absolute", "~", "-rf", " ", "\n\r\t", "..\u{2215}..",
        "a/../../b", "....//....//", "\u{202E}gpj.exe", "$(rm -rf /)", "%2e%2e%2f",
    ]

    static let templates: [String] = [
        "{generation_id}.{ext}",
        "{yyyy}/{mm}/{dd}/{generation_id}.{ext}",
        "{source}/{status}/{generation_id}-{source}.{ext}",
        "../{generation_id}.{ext}",
        "a/../../{generation_id}",
        "./{source}/./{generation_id}/..",
        "{generation_id}/../{source}/{generation_id}",
        "x{generation_id}{generation_id}{generation_id}{source}.{ext}",
        "..",
        "{source}",
    ]

    @Test(arguments: templates)
    func hostileValuesNeverLeaveTheDirectory(_ templateText: String) throws {
        let template = try PathTemplate(templateText)
        let directory = "/srv/pipehook/videos"
        for value in Self.hostile {
            let document = Fixtures.document(generationID: value, source: value)
            for ext in ["mp4", "../x", "", "a/b", "MOV"] {
                let relative = template.render(document: document, ext: ext, date: Date(timeIntervalSince1970: 1_700_000_000))
                #expect(!relative.hasPrefix("/"), "\(relative)")
                #expect(!relative.utf8.contains(0))
                let components = relative.split(separator: "/", omittingEmptySubsequences: false)
                #expect(!components.contains(".."), "\(templateText) × \(value.debugDescription) → \(relative)")
                #expect(!components.contains("."), "\(relative)")
                #expect(!components.contains(""), "\(relative)")
                #expect(components.allSatisfy { $0.utf8.count <= 255 })
                let resolved = try #require(DownloadPath.resolve(relative: relative, in: directory), "\(relative)")
                #expect(resolved.hasPrefix(directory + "/"), "\(resolved)")
                #expect(!resolved.split(separator: "/").contains(".."))
            }
        }
    }

    @Test(arguments: hostile)
    func sanitisedValuesAreOneSafeComponent(_ value: String) {
        let safe = DownloadPath.sanitize(value)
        #expect(!safe.isEmpty)
        #expect(!safe.contains("/"))
        #expect(!safe.contains("\\"))
        #expect(!safe.utf8.contains(0))
        #expect(!safe.hasPrefix("."))
        #expect(safe.utf8.count <= DownloadPath.maxValueBytes)
        #expect(!safe.unicodeScalars.contains { $0.value < 0x20 || $0 == "\u{202E}" })
    }

    @Test func sanitiseExamples() {
        #expect(DownloadPath.sanitize("gen_123-abc.v2") == "gen_123-abc.v2")
        #expect(DownloadPath.sanitize("../../etc/passwd") == "___.._etc_passwd")
        #expect(DownloadPath.sanitize("..") == "__")
        #expect(DownloadPath.sanitize(".hidden") == "_hidden")
        #expect(DownloadPath.sanitize("a/b") == "a_b")
        #expect(DownloadPath.sanitize("") == "_")
        #expect(DownloadPath.sanitize("a\u{0}b") == "a_b")
        #expect(DownloadPath.sanitize("vidéo") == "vidéo")
        #expect(DownloadPath.sanitize(String(repeating: "x", count: 1000)) == String(repeating: "x", count: 100))
    }

    @Test func rendersDatesInUTCAndKeepsLiteralFolders() throws {
        let template = try PathTemplate("{source}/{yyyy}/{mm}/{dd}/{generation_id}.{status}.{ext}")
        // 2023-11-14T22:13:20Z; 2024-01-01T00:30:00Z is still 2023-12-31 in New York, not here.
        let document = Fixtures.document()
        #expect(
            template.render(document: document, ext: "webm", date: Date(timeIntervalSince1970: 1_700_000_000))
                == "pipevideo/2023/11/14/gen_123.completed.webm"
        )
        #expect(
            template.render(document: document, ext: "mp4", date: Date(timeIntervalSince1970: 1_704_069_000))
                == "pipevideo/2024/01/01/gen_123.completed.mp4"
        )
        let literalDots = try PathTemplate("../x/./{generation_id}.{ext}")
        #expect(literalDots.render(document: document, ext: "mp4", date: Date()) == "__/x/gen_123.mp4")
    }

    @Test func extensionFromURLThenContentTypeThenDefault() {
        let cases: [(String, String?, String)] = [
            ("/v/video.MP4", nil, "mp4"),
            ("/v/video.webm", "video/mp4", "webm"),
            ("/v/video", "video/webm", "webm"),
            ("/v/video", "video/quicktime; charset=binary", "mov"),
            ("/v/video", "VIDEO/MP4", "mp4"),
            ("/v/video", "application/octet-stream", "mp4"),
            ("/v/video", nil, "mp4"),
            ("/v/video.toolongext", nil, "mp4"),
            ("/v/video.m3u8", nil, "m3u8"),
            ("/v/video.mp4%00", nil, "mp4"),
            ("/v/a.b/c", nil, "mp4"),
            ("/", nil, "mp4"),
            ("/v/video.", "video/webm", "webm"),
        ]
        for (path, contentType, expected) in cases {
            #expect(DownloadPath.fileExtension(urlPath: path, contentType: contentType) == expected, "\(path) \(contentType ?? "-")")
        }
        #expect(DownloadPath.fileExtension(urlPaths: ["/dl", "/files/x.mov"], contentType: "video/mp4") == "mov")
        #expect(DownloadPath.sanitizeExtension("../x") == nil)
        #expect(DownloadPath.sanitizeExtension("Mp4") == "mp4")
    }

    @Test func resolveRejectsEscapes() {
        #expect(DownloadPath.resolve(relative: "../x", in: "/srv/v") == nil)
        #expect(DownloadPath.resolve(relative: "a/../../x", in: "/srv/v") == nil)
        #expect(DownloadPath.resolve(relative: "a/../b", in: "/srv/v") == "/srv/v/b")
        #expect(DownloadPath.resolve(relative: "", in: "/srv/v") == nil)
        #expect(DownloadPath.resolve(relative: ".", in: "/srv/v") == nil)
        #expect(DownloadPath.resolve(relative: "x\u{0}y", in: "/srv/v") == nil)
        #expect(DownloadPath.resolve(relative: "a/b.mp4", in: "/srv/v/") == "/srv/v/a/b.mp4")
        #expect(DownloadPath.resolve(relative: "a/b.mp4", in: "/srv/./v/../v") == "/srv/v/a/b.mp4")
        #expect(DownloadPath.resolve(relative: "../v2/x", in: "/srv/v") == nil)
    }

    /// Found by Fuzz/ (path_template): as Characters, a `/` followed by a combining mark is one
    /// Character, so a Character split kept `..` as a path component and the rendered path climbed
    /// out of the folder (the file system splits at every `/` byte).
    @Test func aCombiningMarkCannotHideASlash() throws {
        let document = Fixtures.document(generationID: "\u{301}x")
        let rendered = try PathTemplate("../{generation_id}.{ext}").render(document: document, ext: "mp4", date: Date())
        let components = Array(rendered.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map(Array.init)
        #expect(!components.contains(Array("..".utf8)), "\(rendered.debugDescription)")
        #expect(rendered == "__/\u{301}x.mp4")
        // A component that starts with a combining mark is inside the folder (bytes, not Characters).
        let inside = try PathTemplate("{generation_id}.{ext}").render(document: document, ext: "mp4", date: Date())
        #expect(DownloadPath.resolve(relative: inside, in: "/srv/v") == "/srv/v/\u{301}x.mp4")
        #expect(DownloadPath.resolve(relative: "../\u{301}x", in: "/srv/v") == nil)
    }

    /// Found by Fuzz/ (path_template): the kept extension was measured in Characters, and one
    /// Character can be ~100 bytes (a letter with combining marks), so a capped component could stay
    /// longer than 255 bytes (ENAMETOOLONG when the download saves it).
    @Test func heavyCharactersAreCappedInBytes() throws {
        let heavy = "e" + String(repeating: "\u{301}", count: 49)  // one Character, 99 bytes
        let document = Fixtures.document(source: heavy)
        let template = try PathTemplate("{generation_id}.{source}{source}{source}")
        let rendered = template.render(document: document, ext: "mp4", date: Date())
        #expect(rendered.utf8.count <= DownloadPath.maxComponentBytes, "\(rendered.utf8.count) bytes")
        #expect(rendered.hasPrefix("gen_123."))
    }

    @Test func retryAfterParsing() {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        #expect(DownloadRunner.retryAfter("7", now: now) == .seconds(7))
        #expect(DownloadRunner.retryAfter(" 120 ", now: now) == .seconds(120))
        #expect(DownloadRunner.retryAfter("Tue, 14 Nov 2023 22:14:20 GMT", now: now) == .seconds(60))
        #expect(DownloadRunner.retryAfter("soon", now: now) == nil)
        #expect(DownloadRunner.retryAfter(nil, now: now) == nil)
    }
}
