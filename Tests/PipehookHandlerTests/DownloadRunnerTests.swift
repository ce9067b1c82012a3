import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import PipehookHandlers
import PipehookLifecycle
import PipehookSettings
import PipehookSignature
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Requests seen per route.
final class Hits: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    @discardableResult
    func hit(_ route: String) -> Int {
        counts.withLock { counts in
            counts[route, default: 0] += 1
            return counts[route]!
        }
    }

    func count(_ route: String) -> Int { counts.withLock { $0[route] ?? 0 } }
}

struct ServerFailure: Error {}

/// A real local HTTP server (Hummingbird on 127.0.0.1, random port) and a real HTTP client.
@Suite struct DownloadRunnerTests {
    static func payload(_ count: Int, seed: Int = 7) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &+ ($0 >> 8)) }
    }

    static let normal = payload(200_000)
    static let streamed = payload(300_000, seed: 3)
    static let hugeSize = 128 << 20

    /// Peak resident set size of this process so far, in bytes (Linux).
    static func peakRSS() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
        }
        return nil
    }

    static func sha256(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { Crypto.sha256($0) }.hexString
    }

    static func chunks(_ bytes: [UInt8], size: Int) -> [ByteBuffer] {
        stride(from: 0, to: bytes.count, by: size).map { ByteBuffer(bytes: bytes[$0..<min($0 + size, bytes.count)]) }
    }

    func withServer(_ body: @escaping @Sendable (_ base: String, _ hits: Hits) async throws -> Void) async throws {
        let hits = Hits()
        let router = Router()
        router.get("file.mp4") { _, _ -> Response in
            hits.hit("file")
            return Response(status: .ok, headers: [.contentType: "video/mp4"], body: .init(byteBuffer: ByteBuffer(bytes: Self.normal)))
        }
        router.get("stream") { _, _ -> Response in
            hits.hit("stream")
            // No Content-Length: chunked transfer encoding.
            return Response(
                status: .ok, headers: [.contentType: "video/webm"],
                body: ResponseBody { writer in
                    for chunk in Self.chunks(Self.streamed, size: 16_384) {
                        try await writer.write(chunk)
                    }
                    try await writer.finish(nil)
                }
            )
        }
        router.get("short") { _, _ -> Response in
            hits.hit("short")
            // Declares 100 000 bytes, sends 5 000, then the connection dies.
            return Response(
                status: .ok, headers: [.contentType: "video/mp4"],
                body: ResponseBody(contentLength: 100_000) { writer in
                    try await writer.write(ByteBuffer(bytes: Self.payload(5_000)))
                    throw ServerFailure()
                }
            )
        }
        router.get("declared-big") { _, _ -> Response in
            hits.hit("declared-big")
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: Self.payload(50_000))))
        }
        router.get("streamed-big") { _, _ -> Response in
            hits.hit("streamed-big")
            return Response(
                status: .ok,
                body: ResponseBody { writer in
                    for chunk in Self.chunks(Self.payload(50_000), size: 4_096) {
                        try await writer.write(chunk)
                    }
                    try await writer.finish(nil)
                }
            )
        }
        router.get("slow") { _, _ -> Response in
            hits.hit("slow")
            return Response(
                status: .ok,
                body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(bytes: Self.payload(1_000)))
                    try await Task.sleep(for: .seconds(3))
                    try await writer.write(ByteBuffer(bytes: Self.payload(1_000)))
                    try await writer.finish(nil)
                }
            )
        }
        router.get("flaky.mp4") { _, _ -> Response in
            if hits.hit("flaky") == 1 { return Response(status: .internalServerError) }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: Self.normal)))
        }
        router.get("changing.mp4") { _, _ -> Response in
            let version = hits.hit("changing")
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: Self.payload(10_000, seed: version))))
        }
        router.get("status/{code}") { _, context -> Response in
            let code = try context.parameters.require("code", as: Int.self)
            hits.hit("status/\(code)")
            var headers: HTTPFields = [:]
            if code == 429 { headers[.retryAfter] = "7" }
            return Response(status: .init(code: code), headers: headers)
        }
        router.get("huge") { _, _ -> Response in
            hits.hit("huge")
            // 128 MiB, streamed with Content-Length, from one reused 64 KiB chunk.
            let chunk = ByteBuffer(bytes: Self.payload(65_536, seed: 11))
            return Response(
                status: .ok, headers: [.contentType: "video/mp4"],
                body: ResponseBody(contentLength: Self.hugeSize) { writer in
                    for _ in 0..<(Self.hugeSize / 65_536) { try await writer.write(chunk) }
                    try await writer.finish(nil)
                }
            )
        }
        router.get("redirect") { _, _ -> Response in
            hits.hit("redirect")
            return Response(status: .found, headers: [.location: "/file.mp4"])
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            logger: Logger(label: "pipehook.test-server")
        )
        try await app.test(.live) { client in
            let port = try #require(client.port)
            try await body("http://127.0.0.1:\(port)", hits)
        }
    }

    /// A client like the daemon's: no automatic redirects (the runner checks every hop itself).
    func withClient(_ body: (HTTPClient) async throws -> Void) async throws {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            try await body(client)
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    func noLeftovers(_ directory: String) -> Bool {
        !Fixtures.files(under: directory).contains { $0.hasSuffix(".part") || $0.hasSuffix(".tmp") }
    }

    // MARK: - Success paths

    /// The example handlers fit together (issue 12): after a real download, `verify-archive.sh`
    /// accepts the file and rejects a changed one (exit 3); `thumbnail.sh` without ffmpeg fails
    /// loudly unless told to skip; `publish.sh` puts the file where it is told.
    @Test func exampleHandlersWorkOnADownloadedFile() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let handlers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("handlers").path
        try await withServer { base, _ in
            try await withClient { client in
                let downloaded = await DownloadRunner(httpClient: client, logger: Fixtures.logger)
                    .run(try Fixtures.download(directory: directory), context: Fixtures.context(Fixtures.document(outputURL: base + "/file.mp4")))
                let artifact = try #require(downloaded.artifact)
                let context = Fixtures.context(Fixtures.document(outputURL: base + "/file.mp4", artifact: artifact))
                let exec = ExecRunner(logger: Fixtures.logger, baseEnvironment: ExecRunnerTests.base)
                func run(_ script: String, env: [String: String] = [:]) async -> StepOutcome {
                    await exec.run(Fixtures.exec([handlers + "/" + script], environment: env, permanentExitCodes: [3]), context: context)
                }

                let verified = await run("verify-archive.sh")
                #expect(verified.result == .succeeded && verified.summary.contains("exit 0"), "\(verified.summary)")

                let published = await run("publish.sh", env: ["PUBLISH_DIR": directory + "/published"])
                #expect(published.result == .succeeded, "\(published.summary)")
                #expect(FileManager.default.contents(atPath: directory + "/published/gen_123.mp4") == FileManager.default.contents(atPath: artifact.file))

                let hasFFmpeg = FileManager.default.isExecutableFile(atPath: "/usr/bin/ffmpeg") || FileManager.default.isExecutableFile(atPath: "/usr/local/bin/ffmpeg")
                let thumbnail = await run("thumbnail.sh")
                let skipped = await run("thumbnail.sh", env: ["THUMBNAIL_OPTIONAL": "1"])
                if hasFFmpeg {
                    // The served bytes are no video: ffmpeg fails, and so does the step.
                    #expect(thumbnail.result != .succeeded, "\(thumbnail.summary)")
                    // A real one (the status page tests' sample) gets its thumbnail next to it.
                    let sample = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                        .appendingPathComponent("PipehookIntegrationTests/Browser/media/sample.webm").path
                    var video = artifact
                    video.file = directory + "/sample.webm"
                    try FileManager.default.copyItem(atPath: sample, toPath: video.file)
                    let made = await exec.run(
                        Fixtures.exec([handlers + "/thumbnail.sh"], permanentExitCodes: [3]),
                        context: Fixtures.context(Fixtures.document(outputURL: base + "/file.mp4", artifact: video))
                    )
                    #expect(made.result == .succeeded && FileManager.default.fileExists(atPath: directory + "/sample.jpg"), "\(made.summary)")
                } else {
                    #expect(thumbnail.result == .permanent && String(decoding: thumbnail.output, as: UTF8.self).contains("ffmpeg is not installed"), "\(thumbnail.summary)")
                    #expect(skipped.result == .succeeded, "\(skipped.summary)")
                }

                // One changed byte: the archive check fails for good.
                let handle = try #require(FileHandle(forWritingAtPath: artifact.file))
                try handle.seek(toOffset: 10)
                try handle.write(contentsOf: Data([0xFF ^ Self.normal[10]]))
                try handle.close()
                let mismatch = await run("verify-archive.sh")
                #expect(mismatch.result == .permanent && String(decoding: mismatch.output, as: UTF8.self).contains("BAD"), "\(mismatch.summary)")
            }
        }
    }

    @Test func savesFileWithSidecarAndMatchingHash() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory)
                let document = Fixtures.document(outputURL: base + "/file.mp4")
                let outcome = await runner.run(step, context: Fixtures.context(document))
                #expect(outcome.result == .succeeded, "\(outcome.summary)")
                #expect(outcome.httpStatus == 200)
                let final = directory + "/2023/11/gen_123.mp4"
                let artifact = try #require(outcome.artifact)
                #expect(artifact.file == final)
                #expect(artifact.bytes == Int64(Self.normal.count))
                #expect(artifact.sha256 == Self.sha256(Self.normal))
                #expect(outcome.summary == "saved \(Self.normal.count) bytes to \(final)")
                let saved = try #require(FileManager.default.contents(atPath: final))
                #expect(Array(saved) == Self.normal)
                #expect(Self.sha256(Array(saved)) == artifact.sha256)

                let sidecarData = try #require(FileManager.default.contents(atPath: final + ".json"))
                let sidecar = try #require(try JSONSerialization.jsonObject(with: sidecarData) as? [String: Any])
                #expect(sidecar["file"] as? String == final)
                #expect(sidecar["sha256"] as? String == artifact.sha256)
                #expect(sidecar["bytes"] as? Int == Self.normal.count)
                #expect(sidecar["generation_id"] as? String == "gen_123")
                #expect(Fixtures.files(under: directory) == ["2023/11/gen_123.mp4", "2023/11/gen_123.mp4.json"])
            }
        }
    }

    @Test func chunkedBodyWithoutContentLengthAndExtensionFromContentType() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory, template: "{source}/{generation_id}.{ext}")
                let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document(outputURL: base + "/stream")))
                #expect(outcome.result == .succeeded, "\(outcome.summary)")
                let artifact = try #require(outcome.artifact)
                #expect(artifact.file == directory + "/pipevideo/gen_123.webm")
                #expect(artifact.bytes == Int64(Self.streamed.count))
                #expect(artifact.sha256 == Self.sha256(Self.streamed))
                #expect(Array(try #require(FileManager.default.contents(atPath: artifact.file))) == Self.streamed)
            }
        }
    }

    @Test func rerunLeavesTheFileUntouched() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, hits in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory)
                let context = Fixtures.context(Fixtures.document(outputURL: base + "/file.mp4"))
                let first = await runner.run(step, context: context)
                #expect(first.result == .succeeded)
                let file = try #require(first.artifact?.file)
                var before = stat()
                #expect(stat(file, &before) == 0)
                try await Task.sleep(for: .milliseconds(20))

                let second = await runner.run(step, context: Fixtures.context(context.document, attempt: 2))
                #expect(second.result == .succeeded)
                #expect(second.artifact == first.artifact)
                #expect(second.summary.hasPrefix("already saved"))
                var after = stat()
                #expect(stat(file, &after) == 0)
                #expect(after.st_ino == before.st_ino)
                #expect(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
                #expect(hits.count("file") == 2)
                #expect(noLeftovers(directory))
            }
        }
    }

    @Test func differentContentReplacesTheFile() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory, template: "{generation_id}.{ext}")
                let context = Fixtures.context(Fixtures.document(outputURL: base + "/changing.mp4"))
                let first = await runner.run(step, context: context)
                let second = await runner.run(step, context: context)
                #expect(first.result == .succeeded)
                #expect(second.result == .succeeded)
                #expect(first.artifact?.sha256 != second.artifact?.sha256)
                #expect(second.summary.hasPrefix("saved"))
                let file = try #require(second.artifact?.file)
                #expect(Array(try #require(FileManager.default.contents(atPath: file))) == Self.payload(10_000, seed: 2))
                let sidecar = try #require(FileManager.default.contents(atPath: file + ".json"))
                #expect(String(decoding: sidecar, as: UTF8.self).contains(try #require(second.artifact?.sha256)))
                #expect(noLeftovers(directory))
            }
        }
    }

    @Test func followsRedirectsWithinTheAllowedSchemes() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, hits in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let outcome = await runner.run(
                    try Fixtures.download(directory: directory),
                    context: Fixtures.context(Fixtures.document(outputURL: base + "/redirect"))
                )
                #expect(outcome.result == .succeeded, "\(outcome.summary)")
                #expect(outcome.artifact?.file.hasSuffix("/gen_123.mp4") == true)  // ext from the redirect target
                #expect(hits.count("redirect") == 1)
                #expect(hits.count("file") == 1)
            }
        }
    }

    // MARK: - Failures

    @Test func shortBodyIsRetryableAndLeavesNothing() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory, timeoutMilliseconds: 1_000)
                let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document(outputURL: base + "/short")))
                #expect(outcome.result == .retryable(retryAfter: nil), "\(outcome.summary)")
                #expect(outcome.artifact == nil)
                #expect(Fixtures.files(under: directory).isEmpty, "\(Fixtures.files(under: directory))")
            }
        }
    }

    @Test func tooLargeIsPermanent() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory, maxBytes: 20_000)
                let declared = await runner.run(step, context: Fixtures.context(Fixtures.document(outputURL: base + "/declared-big")))
                #expect(declared.result == .permanent)
                #expect(declared.summary == "Content-Length 50000 exceeds max_bytes 20000")
                let streamed = await runner.run(step, context: Fixtures.context(Fixtures.document(outputURL: base + "/streamed-big")))
                #expect(streamed.result == .permanent)
                #expect(streamed.summary == "body exceeds max_bytes 20000")
                #expect(Fixtures.files(under: directory).isEmpty, "\(Fixtures.files(under: directory))")
            }
        }
    }

    @Test func stalledServerFailsOnTheReadTimeout() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory, timeoutMilliseconds: 500)
                let clock = ContinuousClock()
                let start = clock.now
                let outcome = await runner.run(step, context: Fixtures.context(Fixtures.document(outputURL: base + "/slow")))
                let elapsed = clock.now - start
                #expect(outcome.result == .retryable(retryAfter: nil))
                #expect(outcome.summary == "stalled: no data for 500ms")
                #expect(elapsed < .milliseconds(2_500), "took \(elapsed)")
                #expect(Fixtures.files(under: directory).isEmpty, "\(Fixtures.files(under: directory))")
            }
        }
    }

    @Test func serverErrorThenSuccess() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory)
                let context = Fixtures.context(Fixtures.document(outputURL: base + "/flaky.mp4"))
                let first = await runner.run(step, context: context)
                #expect(first.result == .retryable(retryAfter: nil))
                #expect(first.httpStatus == 500)
                #expect(first.summary == "HTTP 500")
                #expect(Fixtures.files(under: directory).isEmpty)
                let second = await runner.run(step, context: Fixtures.context(context.document, attempt: 2))
                #expect(second.result == .succeeded)
                #expect(second.artifact?.sha256 == Self.sha256(Self.normal))
            }
        }
    }

    @Test func statusCodes() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory)
                let expected: [(Int, StepOutcome.Result)] = [
                    (403, .retryable(retryAfter: nil)), (404, .retryable(retryAfter: nil)), (410, .retryable(retryAfter: nil)),
                    (429, .retryable(retryAfter: .seconds(7))), (503, .retryable(retryAfter: nil)),
                    (502, .retryable(retryAfter: nil)), (400, .permanent), (401, .permanent), (418, .permanent),
                ]
                for (code, result) in expected {
                    let outcome = await runner.run(
                        step, context: Fixtures.context(Fixtures.document(outputURL: base + "/status/\(code)"))
                    )
                    #expect(outcome.result == result, "HTTP \(code): \(outcome.summary)")
                    #expect(outcome.httpStatus == code)
                    if [403, 404, 410].contains(code) { #expect(outcome.summary.contains("expired")) }
                }
                #expect(Fixtures.files(under: directory).isEmpty)
            }
        }
    }

    @Test func hostileGenerationIDStaysInsideTheDirectory() async throws {
        let root = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let directory = root + "/videos"
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let step = try Fixtures.download(directory: directory, template: "../{generation_id}/{generation_id}.{ext}")
                for generationID in ["../../evil", "..", "a/../../b", ".hidden", ""] {
                    let document = Fixtures.document(generationID: generationID, outputURL: base + "/file.mp4")
                    let outcome = await runner.run(step, context: Fixtures.context(document))
                    #expect(outcome.result == .succeeded, "\(outcome.summary)")
                    let file = try #require(outcome.artifact?.file)
                    #expect(file.hasPrefix(directory + "/"), "\(file)")
                    #expect(!file.split(separator: "/").contains(".."))
                }
                // Nothing was written next to the directory.
                #expect(try FileManager.default.contentsOfDirectory(atPath: root) == ["videos"])
            }
        }
    }

    @Test func schemeAndURLChecks() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, hits in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let httpsOnly = try Fixtures.download(directory: directory, allowHTTP: false)
                let refused = await runner.run(httpsOnly, context: Fixtures.context(Fixtures.document(outputURL: base + "/file.mp4")))
                #expect(refused.result == .permanent)
                #expect(refused.summary.contains("https"))
                #expect(hits.count("file") == 0)

                let allowed = try Fixtures.download(directory: directory, allowHTTP: true)
                for url in [nil, "", "ftp://127.0.0.1/x.mp4", "file:///etc/passwd", "not a url"] as [String?] {
                    let outcome = await runner.run(allowed, context: Fixtures.context(Fixtures.document(outputURL: url)))
                    #expect(outcome.result == .permanent, "\(url ?? "nil"): \(outcome.summary)")
                }
                #expect(Fixtures.files(under: directory).isEmpty)
            }
        }
    }

    @Test func connectionRefusedIsRetryable() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withClient { client in
            let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
            // Port 9 (discard) is closed on loopback in the test environment.
            let outcome = await runner.run(
                try Fixtures.download(directory: directory, timeoutMilliseconds: 2_000),
                context: Fixtures.context(Fixtures.document(outputURL: "http://127.0.0.1:9/x.mp4"))
            )
            #expect(outcome.result == .retryable(retryAfter: nil), "\(outcome.summary)")
            #expect(Fixtures.files(under: directory).isEmpty)
        }
    }
    @Test func concurrentAttemptsOnOnePathDoNotInterleave() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, hits in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let slowStep = try Fixtures.download(directory: directory, template: "{generation_id}.{ext}", timeoutMilliseconds: 10_000)
                let context = Fixtures.context(Fixtures.document(outputURL: base + "/slow"))
                async let first = runner.run(slowStep, context: context)
                // Wait until the first attempt holds <final>.part.
                let clock = ContinuousClock()
                let end = clock.now + .seconds(2)
                while !FileManager.default.fileExists(atPath: directory + "/gen_123.mp4.part"), clock.now < end {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let second = await runner.run(slowStep, context: context)
                #expect(second.result == .retryable(retryAfter: nil))
                #expect(second.summary.contains("another attempt is writing"), "\(second.summary)")
                let firstOutcome = await first
                #expect(firstOutcome.result == .succeeded, "\(firstOutcome.summary)")
                #expect(firstOutcome.artifact?.bytes == 2_000)
                #expect(hits.count("slow") == 2)
                #expect(Fixtures.files(under: directory) == ["gen_123.mp4", "gen_123.mp4.json"])
            }
        }
    }
    @Test func memoryStaysFlatForALargeBody() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await withServer { base, _ in
            try await withClient { client in
                let runner = DownloadRunner(httpClient: client, logger: Fixtures.logger)
                let before = try #require(Self.peakRSS())
                let outcome = await runner.run(
                    try Fixtures.download(directory: directory, maxBytes: 1 << 30),
                    context: Fixtures.context(Fixtures.document(outputURL: base + "/huge"))
                )
                let after = try #require(Self.peakRSS())
                #expect(outcome.result == .succeeded, "\(outcome.summary)")
                let artifact = try #require(outcome.artifact)
                #expect(artifact.bytes == Int64(Self.hugeSize))
                // Collecting the body would add 128 MiB to the peak; streaming adds a few chunks.
                // The peak is the whole test process's, shared with suites running in parallel
                // (one CI run saw 53 MiB), so the bound sits below 128 MiB with room for them.
                #expect(after - before < 96 << 20, "peak RSS grew by \((after - before) >> 20) MiB")
                // An independent hash of the saved file.
                let check = await ExecRunner(logger: Fixtures.logger, baseEnvironment: ["PATH": "/usr/bin:/bin"])
                    .run(Fixtures.exec(["sha256sum", artifact.file]), context: Fixtures.context(Fixtures.document()))
                #expect(String(decoding: check.output, as: UTF8.self).hasPrefix(artifact.sha256 + " "))
            }
        }
    }
}
