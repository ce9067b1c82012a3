import Foundation
import Logging
import PipehookDaemon
import PipehookFormats
import PipehookSettings
import PipehookSignature
import PipehookSQLite
import PipehookStore

/// A fresh folder per test, removed when the value is released.
final class TempDir: Sendable {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "pipehook-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

enum Fixture {
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    static let otherSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

    /// `readTimeout` also closes idle keep-alive connections, so the default is generous: a busy
    /// machine must not cut off a test client between two requests.
    static func yaml(dir: String, port: Int = 0, extra: String = "", readTimeout: String = "10s") -> String {
        """
        listen: "127.0.0.1:\(port)"
        data_dir: "\(dir)"
        store: "sqlite:\(dir)/pipehook.sqlite"
        read_timeout: \(readTimeout)
        log_level: warning
        sources:
          pipevideo:
            format: pipevideo
            secrets: ["\(secret)"]
          rotating:
            secrets: ["\(otherSecret)", "\(secret)"]
            tolerance: 60s
        \(extra)
        """
    }

    static func settings(dir: String, port: Int = 0, readTimeout: String = "10s") -> Settings {
        try! SettingsParser.parse(yaml: yaml(dir: dir, port: port, readTimeout: readTimeout), environment: [:])
    }

    static func body(generation: String, status: String, outputURL: String? = nil, error: String? = nil) -> String {
        let url = outputURL.map { "\"\($0)\"" } ?? "null"
        let message = error.map { "\"\($0)\"" } ?? "null"
        return #"{"eventType":"video.generation.completed","generationId":"\#(generation)","status":"\#(status)","outputUrl":\#(url),"errorMessage":\#(message)}"#
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// Headers signed the Svix way (`prefix` picks svix-* or webhook-*).
    static func headers(id: String, body: String, timestamp: Int64 = now(), secret: String = secret, prefix: String = "svix") -> [(String, String)] {
        let signature = Signer.signature(secret: try! SigningSecret(secret), id: id, timestamp: timestamp, body: Array(body.utf8))
        return [("\(prefix)-id", id), ("\(prefix)-timestamp", String(timestamp)), ("\(prefix)-signature", signature), ("content-type", "application/json")]
    }

    static func delivery(id: String, generation: String, status: GenerationStatusText, at receivedAt: Int64 = 1_000) -> IncomingDelivery {
        let body = body(generation: generation, status: status.rawValue)
        return IncomingDelivery(
            source: "pipevideo", deliveryID: id, receivedAt: receivedAt, signedAt: receivedAt / 1000, body: Array(body.utf8),
            content: .event(GenerationEvent(eventType: "video.generation.completed", generationID: generation, status: .init(rawValue: status.rawValue)!))
        )
    }

    static let logger: Logger = {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return logger
    }()
}

enum GenerationStatusText: String {
    case queued, in_progress, completed, failed, cancelled, incomplete
}

/// The `pipehook` executable built next to the test bundle.
enum Binary {
    static var path: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        // Inside `X.xctest/` on some layouts.
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("pipehook").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("pipehook").path
    }
}

import GRDB

/// A second connection holding SQLite's write lock, as another process would.
final class ExclusiveLock: Sendable {
    private let queue: DatabaseQueue

    init(path: String) throws {
        var configuration = Configuration()
        configuration.allowsUnsafeTransactions = true
        queue = try DatabaseQueue(path: path, configuration: configuration)
        try queue.writeWithoutTransaction { db in try db.execute(sql: "BEGIN IMMEDIATE") }
    }

    func release() {
        try? queue.writeWithoutTransaction { db in try db.execute(sql: "ROLLBACK") }
    }
}

import Synchronization

/// A store's clock that stands still (at the wall-clock time it was made) until a test moves it:
/// leases expire exactly when the test says, whatever the machine's load.
final class ManualClock: Sendable {
    private let time = Atomic<Int64>(Int64(Date().timeIntervalSince1970 * 1000))
    func now() -> Int64 { time.load(ordering: .acquiring) }
    func advance(milliseconds: Int64) { time.add(milliseconds, ordering: .acquiringAndReleasing) }

    /// SQLite options reading this clock.
    var sqliteOptions: SQLiteStore.Options {
        var options = SQLiteStore.Options()
        options.clock = { [self] in self.now() }
        return options
    }
}
