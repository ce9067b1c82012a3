import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
@testable import PipehookHTTP
import PipehookSQLite
import PipehookStore
import Testing

/// `/media/{job}` (issue 14): the archived file of a job, with range requests, only from the
/// archive folders the configuration names, behind the admin token; and the generation page's
/// `<video>` element with the file's size and SHA-256.
@Suite struct MediaTests {
    typealias Page = StatusPageTests

    // MARK: Pure rules

    @Test(arguments: [
        // header, size, expected
        (nil, 1000, ArchiveMedia.RangeRequest.whole),
        ("bytes=0-99", 1000, .part(0...99)),
        ("bytes=100-", 1000, .part(100...999)),
        ("bytes=-100", 1000, .part(900...999)),
        ("bytes=-5000", 1000, .part(0...999)),
        ("bytes=990-2000", 1000, .part(990...999)),
        ("bytes=999-999", 1000, .part(999...999)),
        ("bytes=1000-", 1000, .unsatisfiable),
        ("bytes=5000-6000", 1000, .unsatisfiable),
        ("bytes=-0", 1000, .unsatisfiable),
        ("bytes=0-", 0, .unsatisfiable),
        ("BYTES = 0-9".replacingOccurrences(of: " = ", with: "="), 1000, .part(0...9)),
        // Ignored (served whole): several ranges, another unit, bad syntax, end before start.
        ("bytes=0-1,5-6", 1000, .whole),
        ("items=0-1", 1000, .whole),
        ("bytes=a-b", 1000, .whole),
        ("bytes=9-3", 1000, .whole),
        ("bytes=-", 1000, .whole),
        ("bytes=99999999999999999999-", 1000, .whole),
    ] as [(String?, Int64, ArchiveMedia.RangeRequest)])
    func rangeHeaders(header: String?, size: Int64, expected: ArchiveMedia.RangeRequest) {
        #expect(ArchiveMedia.range(header, size: size) == expected, "\(header ?? "nil") of \(size)")
    }

    @Test func contentTypesByExtension() {
        let table = [
            ("a/b.mp4", "video/mp4"), ("x.WEBM", "video/webm"), ("x.mov", "video/quicktime"), ("x.jpg", "image/jpeg"),
            ("x.png", "image/png"), ("x.html", "application/octet-stream"), ("noext", "application/octet-stream"),
        ]
        for (path, type) in table { #expect(ArchiveMedia.contentType(path) == type, "\(path)") }
    }

    @Test func locateRefusesEverythingOutsideTheArchive() throws {
        let dir = TempDir()
        let archive = dir.path + "/videos", outside = dir.path + "/elsewhere"
        try FileManager.default.createDirectory(atPath: archive + "/sub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try Data("inside".utf8).write(to: URL(fileURLWithPath: archive + "/sub/a.mp4"))
        try Data("secret".utf8).write(to: URL(fileURLWithPath: outside + "/b.mp4"))
        try FileManager.default.createSymbolicLink(atPath: archive + "/link.mp4", withDestinationPath: outside + "/b.mp4")
        // A folder whose name starts like the archive's is not inside it.
        try FileManager.default.createDirectory(atPath: archive + "-evil", withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: archive + "-evil/c.mp4"))
        let roots = [archive]
        guard case .success(let found) = ArchiveMedia.locate(archive + "/sub/a.mp4", roots: roots) else {
            Issue.record("the archived file was not found"); return
        }
        #expect(found.size == 6)
        #expect(ArchiveMedia.locate(archive + "/sub/../sub/a.mp4", roots: roots).isSuccess)
        #expect(ArchiveMedia.locate(archive + "/../elsewhere/b.mp4", roots: roots).refusal == .outsideArchive)
        #expect(ArchiveMedia.locate(archive + "/link.mp4", roots: roots).refusal == .outsideArchive)
        #expect(ArchiveMedia.locate(archive + "-evil/c.mp4", roots: roots).refusal == .outsideArchive)
        #expect(ArchiveMedia.locate("/etc/passwd", roots: roots).refusal == .outsideArchive)
        #expect(ArchiveMedia.locate(archive + "/sub", roots: roots).refusal == .notAFile)
        #expect(ArchiveMedia.locate(archive + "/none.mp4", roots: roots).refusal == .missing)
        #expect(ArchiveMedia.locate(archive + "/sub/a.mp4", roots: []).refusal == .outsideArchive)
        #expect(ArchiveMedia.locate("a\u{0}b", roots: roots).refusal == .missing)
    }

    // MARK: Over HTTP

    static func routes(archive: String) -> String {
        """
        routes:
          - name: notify
            on: [completed]
            steps:
              - download: {dir: "\(archive)", path: "{generation_id}.{ext}"}
        """
    }

    /// A generation whose job archived `file` (recorded with `bytes` and a made-up SHA-256).
    static func archivedJob(_ store: SQLiteStore, generation: String, file: String, bytes: Int64) async throws -> String {
        let artifact = JobArtifact(file: file, sha256: String(repeating: "ab", count: 32), bytes: bytes)
        return try await Page.finishedJob(
            store, generation: generation, disposition: .advance(artifact: artifact, done: true), summary: "saved", at: Page.nowMilliseconds()
        )
    }

    static func get(_ client: any TestClientProtocol, _ uri: String, _ headers: [(String, String)] = [], auth: Bool = true) async throws -> TestResponse {
        try await client.execute(uri: uri, method: .get, headers: Page.fields((auth ? [Page.bearer] : []) + headers))
    }

    @Test func servesTheArchivedFileWithRangesOnlyFromTheArchive() async throws {
        var harness = try Page.Harness()
        let archive = harness.dir.path + "/videos"
        harness.extra = Self.routes(archive: archive)
        try FileManager.default.createDirectory(atPath: archive, withIntermediateDirectories: true)
        let bytes = (0..<10_000).map { UInt8($0 % 251) }
        try Data(bytes).write(to: URL(fileURLWithPath: archive + "/gen_a.mp4"))
        try Data([0xFF, 0xD8, 0xFF, 0xD9]).write(to: URL(fileURLWithPath: archive + "/gen_a.jpg"))
        let outside = harness.dir.path + "/secret.mp4"
        try Data("not yours".utf8).write(to: URL(fileURLWithPath: outside))
        let store = harness.store
        let good = try await Self.archivedJob(store, generation: "gen_a", file: archive + "/gen_a.mp4", bytes: 10_000)
        let escaped = try await Self.archivedJob(store, generation: "gen_b", file: outside, bytes: 9)
        let gone = try await Self.archivedJob(store, generation: "gen_c", file: archive + "/gen_c.mp4", bytes: 5)
        let none = try await Page.finishedJob(store, generation: "gen_d", disposition: .advance(artifact: nil, done: true), summary: "ok", at: Page.nowMilliseconds())

        try await harness.run { client, _ in
            let whole = try await Self.get(client, "/media/\(good)")
            #expect(whole.status == .ok)
            #expect(Array(whole.body.readableBytesView) == bytes)
            #expect(whole.headers[.contentType] == "video/mp4")
            #expect(whole.headers[.contentLength] == "10000")
            #expect(whole.headers[.acceptRanges] == "bytes")
            #expect(whole.headers[HTTPField.Name("X-Content-SHA256")!] == String(repeating: "ab", count: 32))
            #expect(whole.headers[.contentSecurityPolicy]?.contains("sandbox") == true)

            let first = try await Self.get(client, "/media/\(good)", [("Range", "bytes=0-99")])
            #expect(first.status == .partialContent)
            #expect(first.headers[.contentRange] == "bytes 0-99/10000")
            #expect(Array(first.body.readableBytesView) == Array(bytes[0...99]))
            let tail = try await Self.get(client, "/media/\(good)", [("Range", "bytes=-10")])
            #expect(tail.status == .partialContent)
            #expect(Array(tail.body.readableBytesView) == Array(bytes[9990...]))
            let open = try await Self.get(client, "/media/\(good)", [("Range", "bytes=9000-")])
            #expect(open.headers[.contentRange] == "bytes 9000-9999/10000")
            #expect(open.body.readableBytes == 1000)
            let past = try await Self.get(client, "/media/\(good)", [("Range", "bytes=20000-")])
            #expect(past.status == .rangeNotSatisfiable)
            #expect(past.headers[.contentRange] == "bytes */10000")
            let head = try await client.execute(uri: "/media/\(good)", method: .head, headers: Page.fields([Page.bearer]))
            #expect(head.status == .ok)
            #expect(head.headers[.contentLength] == "10000")

            let thumbnail = try await Self.get(client, "/media/\(good)/thumbnail")
            #expect(thumbnail.status == .ok)
            #expect(thumbnail.headers[.contentType] == "image/jpeg")
            #expect(thumbnail.body.readableBytes == 4)

            // Admin-only, and nothing but the job's own archived file.
            #expect(try await Self.get(client, "/media/\(good)", auth: false).status == .unauthorized)
            let refused = try await Self.get(client, "/media/\(escaped)")
            #expect(refused.status == .forbidden)
            #expect(String(buffer: refused.body).contains("outside_archive"))
            #expect(!String(buffer: refused.body).contains("not yours"))
            #expect(String(buffer: try await Self.get(client, "/media/\(gone)").body).contains("artifact_missing"))
            #expect(String(buffer: try await Self.get(client, "/media/\(none)").body).contains("no_artifact"))
            #expect(String(buffer: try await Self.get(client, "/media/\(escaped)/thumbnail").body).contains("no_thumbnail"))
            #expect(try await Self.get(client, "/media/job_nope").status == .notFound)
            #expect(try await Self.get(client, "/media/..%2F..%2Fetc%2Fpasswd").status == .notFound)

            // The generation page plays it, poster and all, and names its size and SHA-256.
            let (page, html) = try await Page.page(client, StatusPageHTML.generationPath(GenerationKey(source: "pipevideo", generationID: "gen_a")))
            #expect(page.status == .ok)
            #expect(html.contains(#"<video controls preload="metadata" src="/media/\#(good)" poster="/media/\#(good)/thumbnail">"#))
            #expect(html.contains("10.0 kB (10,000 bytes)"))
            #expect(html.contains(String(repeating: "ab", count: 32)))
            #expect(page.headers[.contentSecurityPolicy]?.contains("media-src 'self'") == true)
            let (_, noThumbnail) = try await Page.page(client, StatusPageHTML.generationPath(GenerationKey(source: "pipevideo", generationID: "gen_c")))
            #expect(noThumbnail.contains(#"<video controls preload="metadata" src="/media/\#(gone)">"#))
        }
    }
}

extension Result where Failure == ArchiveMedia.Refusal {
    var isSuccess: Bool { if case .success = self { true } else { false } }
    var refusal: ArchiveMedia.Refusal? { if case .failure(let refusal) = self { refusal } else { nil } }
}

/// The page's activity cache: finished buckets' event counts are read once and kept; open
/// buckets and attempts are read every time; the answer equals the store's own.
@Suite struct ActivityCacheTests {
    static func event(_ store: MemoryStore, _ id: String, at: Int64, status: GenerationStatusText = .queued) async throws {
        _ = try await store.ingest(Fixture.delivery(id: id, generation: "g_" + id, status: status, at: at))
    }

    @Test func keepsFinishedBucketsAndReadsOpenOnes() async throws {
        let store = MemoryStore()
        let cache = ActivityCache()
        let now: Int64 = 1_800_000_030_000  // 30 s into a minute
        let window = ActivityWindow.last(4, of: 60_000, endingAt: now)
        try await Self.event(store, "a", at: window.start(of: 0) + 1_000)
        try await Self.event(store, "b", at: window.start(of: 3) + 1_000)
        let first = try await cache.activity(window, now: now, store: store)
        #expect(first == (try await store.activity(window)))
        #expect(first.eventSeries { _ in true } == [1, 0, 0, 1])

        // A late row in a finished bucket is not read again; one in the open bucket is.
        try await Self.event(store, "late", at: window.start(of: 0) + 2_000)
        try await Self.event(store, "c", at: window.start(of: 3) + 2_000, status: .completed)
        let second = try await cache.activity(window, now: now, store: store)
        #expect(second.eventSeries { _ in true } == [1, 0, 0, 2])
        #expect(try await store.activity(window).eventSeries { _ in true } == [2, 0, 0, 2])

        // A minute on, the open bucket has finished (read once, fresh) and a new one is open.
        let later = now + 60_000
        let next = ActivityWindow.last(4, of: 60_000, endingAt: later)
        try await Self.event(store, "d", at: next.start(of: 3) + 500)
        let third = try await cache.activity(next, now: later, store: store)
        #expect(third.eventSeries { _ in true } == [0, 0, 2, 1])
        #expect(third == (try await store.activity(next)))
        // Within `settle` of its end a bucket is still read fresh (here the one d is in, now the
        // second to last).
        let edge = next.start(of: 3) + 60_000 + ActivityCache.settle - 1
        try await Self.event(store, "e", at: next.start(of: 3) + 59_000)
        let atEdge = try await cache.activity(ActivityWindow.last(4, of: 60_000, endingAt: edge), now: edge, store: store)
        #expect(atEdge.eventSeries { _ in true } == [0, 2, 2, 0])
    }
}
