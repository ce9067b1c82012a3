import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import PipehookDaemon
import PipehookSQLite
import PipehookStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 10 items 2, 4 and 6 through the intake: signed bodies that are not interpretable are kept
/// raw (202), and what the intake logs stays small and on one line.
@Suite struct EdgeInputTests {
    func run(log: CapturedLog? = nil, _ test: @Sendable @escaping (any TestClientProtocol, SQLiteStore) async throws -> Void) async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/pipehook.sqlite")
        let app = Daemon.application(settings: Fixture.settings(dir: dir.path), store: store, logger: log?.logger ?? Fixture.logger)
        defer { withExtendedLifetime(dir) {} }  // the folder outlives the app
        try await app.test(.router) { client in try await test(client, store) }
    }

    @Test(arguments: [
        #"{"eventType":"video.generation.completed","generationId":"gen_a","generationId":"gen_b","status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"gen_x\u0000other","status":"completed"}"#,
        #"{"eventType":"video.generation.completed","generationId":"gen_\u001b[2J","status":"completed"}"#,
    ])
    func duplicateKeysAndControlCharactersAreUnrecognized(_ body: String) async throws {
        try await run { client, store in
            let (status, json) = try await HTTPTests.post(client, body: body, headers: Fixture.headers(id: "msg_edge", body: body))
            #expect(status == .accepted)
            #expect(json as NSDictionary == ["result": "unrecognized"])
            #expect(try await store.counts() == StoreCounts(deliveries: 1, events: 0, generations: 0, unrecognized: 1))
        }
    }

    @Test func aHugeDeliveryIDIsClippedInTheLog() async throws {
        let log = CapturedLog()
        let id = "msg_" + String(repeating: "x", count: 60_000)
        try await run(log: log) { client, _ in
            let body = Fixture.body(generation: "gen_long_id", status: "completed")
            let (status, _) = try await HTTPTests.post(client, body: body, headers: Fixture.headers(id: id, body: body))
            #expect(status == .ok)
        }
        let accepted = try #require(log.entries.first { $0.1.hasPrefix("accepted delivery") }?.1)
        #expect(accepted.utf8.count < 1_000, "a \(accepted.utf8.count)-byte line")
        #expect(accepted.contains("event_id=msg_xxx"))
        #expect(accepted.contains("…[clipped]"))
        #expect(accepted.contains("generation_id=gen_long_id"))
    }

    @Test func jsonLogLinesEscapeLineAndParagraphSeparators() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let handler = JSONLogHandler(label: "t", level: .trace, fileDescriptor: fds[1])
        var logger = Logger(label: "t") { _ in handler }
        logger.logLevel = .trace
        logger.info("one\u{2028}line", metadata: [
            "reason": "a\u{2029}b\nc", "X-Api-Key": "k1", "Authorization": "k2", "webhook_SECRET": "k3", "event_id": "evt_1",
            "nested": .dictionary(["b": .array(["x", .stringConvertible(7)]), "a": "y"]),
        ])
        close(fds[1])
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fds[0], &buffer, buffer.count)
            if count <= 0 { break }
            bytes += buffer[..<count]
        }
        let line = String(decoding: bytes, as: UTF8.self)
        #expect(!line.unicodeScalars.contains { $0 == "\u{2028}" || $0 == "\u{2029}" }, "\(line.debugDescription)")
        #expect(line.contains(#"one\u2028line"#))
        #expect(line.contains(#"a\u2029b\nc"#))
        #expect(line.filter { $0 == "\n" }.count == 1 && line.hasSuffix("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(object["msg"] as? String == "one\u{2028}line")
        // Keys that look like credentials are redacted whatever their case; others are kept,
        // in key order, nested values included.
        for key in ["X-Api-Key", "Authorization", "webhook_SECRET"] { #expect(object[key] as? String == "[redacted]", "\(key)") }
        #expect(!line.contains("k1") && !line.contains("k2") && !line.contains("k3"))
        #expect(object["event_id"] as? String == "evt_1")
        #expect(line.contains(#""nested":{"a":"y","b":["x","7"]}"#), "\(line)")
        #expect(line.hasPrefix(#"{"ts":""#) && line.contains(#"Z","level":"info","msg":"#), "\(line)")
    }
}
