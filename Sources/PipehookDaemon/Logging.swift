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

    public func log(event: LogEvent) {
        var line = "{\"ts\":\"" + LogClock.iso8601Now() + "\",\"level\":\"" + event.level.rawValue + "\",\"msg\":"
        line += Self.quote(event.message.description)
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        for key in merged.keys.sorted() {
            line += "," + Self.quote(key) + ":" + Self.render(LogRedaction.isSensitive(key) ? .string("[redacted]") : merged[key]!)
        }
        line += "}\n"
        LogOutput.write(line, to: fileDescriptor)
    }

    static func render(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return quote(text)
        case .stringConvertible(let convertible): return quote(convertible.description)
        case .array(let values): return "[" + values.map(render).joined(separator: ",") + "]"
        case .dictionary(let dictionary):
            return "{" + dictionary.keys.sorted().map { quote($0) + ":" + render(dictionary[$0]!) }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ text: String) -> String { JSONText.quote(text) }
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
    static func isSensitive(_ key: String) -> Bool {
        let lowered = key.lowercased()
        return ["secret", "signature", "authorization", "api_key", "apikey", "token", "password"].contains { lowered.contains($0) }
    }
}

enum LogOutput {
    /// One `write(2)` per line: lines from concurrent tasks never interleave.
    static func write(_ line: String, to fileDescriptor: Int32) {
        var line = line
        line.withUTF8 { bytes in
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
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(spec.tv_nsec / 1_000_000), 3))Z"
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
