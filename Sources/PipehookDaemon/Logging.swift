import PipehookFormats
import Foundation
import Synchronization
import Logging
import PipehookHTTP
import PipehookSettings

/// One JSON object per line (SPEC §9). Metadata keys that look like credentials are redacted
/// as a second line of defence; the code never passes secrets to a logger in the first place.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let fileDescriptor: Int32

    public init(label: String, level: Logger.Level, fileDescriptor: Int32 = STDOUT_FILENO) {
        self.label = label
        self.logLevel = level
        self.fileDescriptor = fileDescriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Builds the line as bytes in one buffer (no intermediate strings for the parts that are
    /// already text) and writes it with one `write(2)`.
    public func log(event: LogEvent) {
        var line: [UInt8] = []
        line.reserveCapacity(320)
        Self.append("{\"ts\":\"", to: &line)
        LogClock.appendISO8601Now(to: &line)
        Self.append("\",\"level\":\"", to: &line)
        Self.append(event.level.rawValue, to: &line)
        Self.append("\",\"msg\":", to: &line)
        JSONText.appendQuoted(event.message.description, to: &line)
        // Most lines carry only their own metadata: no merged copy then.
        let fields: Logger.Metadata
        if metadata.isEmpty {
            fields = event.metadata ?? [:]
        } else if let extra = event.metadata, !extra.isEmpty {
            fields = metadata.merging(extra) { _, new in new }
        } else {
            fields = metadata
        }
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            line.append(UInt8(ascii: ","))
            JSONText.appendQuoted(key, to: &line)
            line.append(UInt8(ascii: ":"))
            if LogRedaction.isSensitive(key) {
                Self.append("\"[redacted]\"", to: &line)
            } else {
                Self.render(value, to: &line)
            }
        }
        Self.append("}\n", to: &line)
        LogOutput.write(line, to: fileDescriptor)
    }

    static func render(_ value: Logger.Metadata.Value) -> String {
        var bytes: [UInt8] = []
        render(value, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func render(_ value: Logger.Metadata.Value, to out: inout [UInt8]) {
        switch value {
        case .string(let text): JSONText.appendQuoted(text, to: &out)
        case .stringConvertible(let convertible): JSONText.appendQuoted(convertible.description, to: &out)
        case .array(let values):
            out.append(UInt8(ascii: "["))
            for (index, item) in values.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                render(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .dictionary(let dictionary):
            out.append(UInt8(ascii: "{"))
            for (index, (key, item)) in dictionary.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                JSONText.appendQuoted(key, to: &out)
                out.append(UInt8(ascii: ":"))
                render(item, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func quote(_ text: String) -> String { JSONText.quote(text) }

    private static func append(_ text: StaticString, to out: inout [UInt8]) {
        text.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    private static func append(_ text: String, to out: inout [UInt8]) {
        out.append(contentsOf: text.utf8)
    }
}

/// `log_format: text`, for people at a terminal.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let fileDescriptor: Int32

    public init(level: Logger.Level, fileDescriptor: Int32 = STDOUT_FILENO) {
        self.logLevel = level
        self.fileDescriptor = fileDescriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let fields = merged.keys.sorted().map { key in
            "\(key)=\(LogRedaction.isSensitive(key) ? "[redacted]" : merged[key]!.description)"
        }
        let line = "\(LogClock.iso8601Now()) \(event.level.rawValue.uppercased()) \(event.message)"
            + (fields.isEmpty ? "" : " " + fields.joined(separator: " ")) + "\n"
        LogOutput.write(line, to: fileDescriptor)
    }
}

enum LogRedaction {
    /// The words that make a key sensitive, compared without case (ASCII): a byte scan of the
    /// key, with no lowercased copy and no Foundation search (once per key of every line).
    static let words: [[UInt8]] = ["secret", "signature", "authorization", "api_key", "api-key", "apikey", "token", "password", "cookie"].map { Array($0.utf8) }

    static func isSensitive(_ key: String) -> Bool {
        var key = key
        return key.withUTF8 { bytes in
            words.contains { word in containsIgnoringASCIICase(bytes, word) }
        }
    }

    private static func containsIgnoringASCIICase(_ haystack: UnsafeBufferPointer<UInt8>, _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        var start = 0
        while start + needle.count <= haystack.count {
            var matched = true
            for offset in 0..<needle.count {
                var byte = haystack[start + offset]
                if byte >= UInt8(ascii: "A"), byte <= UInt8(ascii: "Z") { byte += 32 }
                if byte != needle[offset] { matched = false; break }
            }
            if matched { return true }
            start += 1
        }
        return false
    }
}

enum LogOutput {
    /// One `write(2)` per line: lines from concurrent tasks never interleave.
    static func write(_ line: String, to fileDescriptor: Int32) {
        write(Array(line.utf8), to: fileDescriptor)
    }

    static func write(_ line: [UInt8], to fileDescriptor: Int32) {
        line.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.write(fileDescriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 { if errno == EINTR { continue } else { return } }
                offset += written
            }
        }
    }
}

enum LogClock {
    static func iso8601Now() -> String {
        var bytes: [UInt8] = []
        appendISO8601Now(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `2026-12-04T01:02:03.456Z`, digits written straight into `out`.
    static func appendISO8601Now(to out: inout [UInt8]) {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var value = value
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8((value / divisor) % 10))
                value %= divisor
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4)
        out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        out.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        out.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        out.append(UInt8(ascii: "."))
        digits(Int(spec.tv_nsec / 1_000_000), 3)
        out.append(UInt8(ascii: "Z"))
    }
}

/// The log format and level in force; `SIGHUP` changes them without re-bootstrapping.
public final class LogControl: Sendable {
    private let state: Mutex<(format: LogFormat, level: Logger.Level)>

    init(format: LogFormat, level: LogLevel) {
        state = Mutex((format, Logger.Level(rawValue: level.rawValue) ?? .info))
    }

    public func update(format: LogFormat, level: LogLevel) {
        state.withLock { $0 = (format, Logger.Level(rawValue: level.rawValue) ?? .info) }
    }

    var current: (format: LogFormat, level: Logger.Level) { state.withLock { $0 } }
}

/// Writes JSON or text lines as `LogControl` says at the moment of each line.
struct ControlledLogHandler: LogHandler {
    let control: LogControl
    var json: JSONLogHandler
    var text: TextLogHandler

    init(label: String, control: LogControl) {
        self.control = control
        json = JSONLogHandler(label: label, level: .trace)
        text = TextLogHandler(level: .trace)
    }

    var metadata: Logger.Metadata {
        get { json.metadata }
        set { json.metadata = newValue; text.metadata = newValue }
    }

    var logLevel: Logger.Level {
        get { control.current.level }
        set {}  // the level is the configuration's, changed by reload
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { json[metadataKey: key] }
        set { json[metadataKey: key] = newValue; text[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        switch control.current.format {
        case .json: json.log(event: event)
        case .text: text.log(event: event)
        }
    }
}

public enum LogSetup {
    /// Called once per process, by `main` only (swift-log traps on a second bootstrap).
    @discardableResult
    public static func bootstrap(format: LogFormat, level: LogLevel) -> LogControl {
        let control = LogControl(format: format, level: level)
        LoggingSystem.bootstrap { label in ControlledLogHandler(label: label, control: control) }
        return control
    }
}
