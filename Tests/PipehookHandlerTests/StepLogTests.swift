import AsyncHTTPClient
import Foundation
import Logging
import PipehookHandlers
import Synchronization
import Testing

/// Log lines kept in memory with their merged metadata.
final class StepLogCapture: Sendable {
    private let lines = Mutex<[(message: String, metadata: [String: String])]>([])
    var entries: [(message: String, metadata: [String: String])] { lines.withLock { $0 } }

    var logger: Logger { Logger(label: "captured") { _ in Handler(capture: self) } }

    struct Handler: LogHandler {
        let capture: StepLogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
            capture.lines.withLock { $0.append((event.message.description, merged.mapValues(\.description))) }
        }
    }
}

/// Issue 10 item 6 and SPEC §9: every line about an event carries `event_id` and `generation_id`;
/// the event id is the sender's delivery id, so it is clipped.
@Suite struct StepLogTests {
    static let base = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"]

    @Test func execLinesNameTheEventAndTheGeneration() async throws {
        let capture = StepLogCapture()
        let runner = ExecRunner(logger: capture.logger, baseEnvironment: Self.base)
        let outcome = await runner.run(Fixtures.exec(["sh", "-c", "exit 3"]), context: Fixtures.context(Fixtures.document()))
        #expect(outcome.exitCode == 3)
        let finished = try #require(capture.entries.first { $0.message == "exec finished" })
        #expect(finished.metadata["event_id"] == "evt_1")
        #expect(finished.metadata["generation_id"] == "gen_123")
        #expect(finished.metadata["job_id"] == "job_42")
        #expect(capture.entries.allSatisfy { $0.metadata["event_id"] == "evt_1" && $0.metadata["generation_id"] == "gen_123" })
    }

    @Test func aHugeEventIDIsClippedInStepLines() async throws {
        let capture = StepLogCapture()
        let runner = ExecRunner(logger: capture.logger, baseEnvironment: Self.base)
        var document = Fixtures.document()
        document.eventID = String(repeating: "m", count: 64 * 1024)
        _ = await runner.run(Fixtures.exec(["sh", "-c", "exit 3"]), context: Fixtures.context(document))
        let finished = try #require(capture.entries.first { $0.message == "exec finished" })
        let logged = try #require(finished.metadata["event_id"])
        #expect(logged.utf8.count < 200, "\(logged.utf8.count) bytes")
        #expect(logged.hasPrefix(String(repeating: "m", count: 100)))
        #expect(logged.hasSuffix("…[clipped]"))
    }

    @Test func downloadLinesNameTheEventAndTheGeneration() async throws {
        let capture = StepLogCapture()
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let runner = DownloadRunner(httpClient: client, logger: capture.logger)
        // Port 1 on loopback: refused at once, so the attempt fails and is logged.
        let document = Fixtures.document(outputURL: "http://127.0.0.1:1/v.mp4")
        let outcome = await runner.run(try Fixtures.download(directory: directory), context: Fixtures.context(document))
        try await client.shutdown()
        #expect(outcome.result != .succeeded)
        let finished = try #require(capture.entries.first { $0.message == "download finished" })
        #expect(finished.metadata["event_id"] == "evt_1")
        #expect(finished.metadata["generation_id"] == "gen_123")
    }
}
