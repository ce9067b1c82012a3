import Foundation
import PipehookFormats
import PipehookLifecycle
import PipehookStore

/// The JSON document every step receives (SPEC §5). `file`, `sha256` and `bytes` are set once an
/// earlier download step of the same job saved the video; `raw` is the original payload.
public struct EventDocument: Sendable, Equatable {
    public var eventID: String
    public var source: String
    public var type: String
    public var generationID: String
    public var status: GenerationStatus
    public var previousStatus: GenerationStatus?
    public var outputURL: String?
    public var errorMessage: String?
    /// Unix milliseconds.
    public var receivedAt: Int64
    public var artifact: Artifact?
    /// The payload exactly as received.
    public var raw: [UInt8]

    public init(
        eventID: String, source: String, type: String, generationID: String, status: GenerationStatus,
        previousStatus: GenerationStatus?, outputURL: String?, errorMessage: String?, receivedAt: Int64,
        artifact: Artifact? = nil, raw: [UInt8]
    ) {
        self.eventID = eventID
        self.source = source
        self.type = type
        self.generationID = generationID
        self.status = status
        self.previousStatus = previousStatus
        self.outputURL = outputURL
        self.errorMessage = errorMessage
        self.receivedAt = receivedAt
        self.artifact = artifact
        self.raw = raw
    }

    /// Serialised with every key present (`null` when unset). `raw` is embedded as JSON when it
    /// is strict JSON (`StrictJSON`), else as a string.
    public func json() -> [UInt8] {
        func quote(_ text: String?) -> String { text.map(JSONText.quote) ?? "null" }
        // Events come from bodies a format decoded, so `raw` is JSON in practice; checked anyway,
        // strictly: Foundation also takes a trailing comma, duplicate keys and UTF-16, and embedding
        // those verbatim would make the whole document unreadable to a strict parser (found by Fuzz/).
        let rawJSON: String
        if (try? StrictJSON.validate(raw)) != nil {
            rawJSON = String(decoding: raw, as: UTF8.self)
        } else {
            rawJSON = quote(String(decoding: raw, as: UTF8.self))
        }
        var out = "{\"event_id\":" + quote(eventID)
        out += ",\"source\":" + quote(source)
        out += ",\"type\":" + quote(type)
        out += ",\"generation_id\":" + quote(generationID)
        out += ",\"status\":" + quote(status.rawValue)
        out += ",\"previous_status\":" + quote(previousStatus?.rawValue)
        out += ",\"output_url\":" + quote(outputURL)
        out += ",\"error_message\":" + quote(errorMessage)
        out += ",\"received_at\":" + quote(JSONText.timestamp(milliseconds: receivedAt))
        out += ",\"file\":" + quote(artifact?.file)
        out += ",\"sha256\":" + quote(artifact?.sha256)
        out += ",\"bytes\":" + (artifact.map { String($0.bytes) } ?? "null")
        out += ",\"raw\":" + rawJSON + "}"
        return Array(out.utf8)
    }
}

/// What a download step leaves for the steps after it (the same value the job keeps).
public typealias Artifact = JobArtifact

/// Everything a step run needs besides its own configuration.
public struct StepContext: Sendable {
    /// Stable across attempts (the re-POST `webhook-id`).
    public var jobID: String
    /// 1 for the first attempt of this step.
    public var attempt: Int
    public var document: EventDocument

    public init(jobID: String, attempt: Int, document: EventDocument) {
        self.jobID = jobID
        self.attempt = attempt
        self.document = document
    }
}

/// How one attempt of one step ended. Kept with the attempt, shown by `pipehook status`.
public struct StepOutcome: Sendable, Equatable {
    public enum Result: Sendable, Equatable {
        case succeeded
        /// Worth another attempt (after `retryAfter` if the other side asked for a delay).
        case retryable(retryAfter: Duration?)
        /// Never worth retrying (a permanent exit code, HTTP 410, a bad URL): dead-letter now.
        case permanent
    }

    public var result: Result
    /// A short human summary: "exit 0", "HTTP 503", "timed out after 5m", "saved 12 MB".
    public var summary: String
    public var exitCode: Int32?
    public var httpStatus: Int?
    /// Captured output (stdout and stderr for exec), at most 64 KiB.
    public var output: [UInt8]
    /// Set by a download step that saved (or found) the file.
    public var artifact: Artifact?

    public init(
        result: Result, summary: String, exitCode: Int32? = nil, httpStatus: Int? = nil, output: [UInt8] = [],
        artifact: Artifact? = nil
    ) {
        self.result = result
        self.summary = summary
        self.exitCode = exitCode
        self.httpStatus = httpStatus
        self.output = output
        self.artifact = artifact
    }

    public static let outputLimit = 64 * 1024
}
