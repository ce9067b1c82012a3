import Foundation
import PipehookLifecycle

/// What `GET /v1/responses/{id}` says about a generation right now.
public struct GenerationSnapshot: Sendable, Equatable {
    public var generationID: String
    public var status: GenerationStatus
    public var outputURL: String?
    public var errorMessage: String?

    public init(generationID: String, status: GenerationStatus, outputURL: String? = nil, errorMessage: String? = nil) {
        self.generationID = generationID
        self.status = status
        self.outputURL = outputURL
        self.errorMessage = errorMessage
    }
}

/// The Pipevideo (OpenAI Responses-shaped) generation API documents (SPEC §1).
///
/// Read leniently with JSONSerialization: the response carries many fields we do not need,
/// whose shapes we must not depend on.
public enum PipevideoAPIFormat {
    /// The event type recorded for an event that came from polling rather than a webhook.
    public static let snapshotEventType = "response.snapshot"
    /// The event type recorded for a generation created through pipehook (the create answer).
    public static let createdEventType = "response.created"
    /// The event type recorded for a cancel through pipehook that Pipevideo confirmed.
    public static let cancelledEventType = "response.cancelled"

    /// `{id, status, output_video_url, output:[{type:"message", content:[{type:"output_video",
    /// video_url:{url}}]}], error:{message}|null, …}`.
    public static func snapshot(_ body: [UInt8]) throws(FormatError) -> GenerationSnapshot {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw FormatError("not a JSON object")
        }
        guard let id = object["id"] as? String, !id.isEmpty, id.utf8.count <= 256, !Identifier.hasControlCharacter(id) else {
            throw FormatError("missing or invalid id")
        }
        guard let statusText = object["status"] as? String else { throw FormatError("missing field status") }
        guard let status = GenerationStatus(providerValue: statusText) else {
            throw FormatError("unknown status \"\(statusText.prefix(64))\"")
        }
        let error = (object["error"] as? [String: Any])?["message"] as? String
        // A NUL cannot be stored as text (see PipevideoFormat); a polled answer is not a signed body
        // to keep raw, so it is marked in place instead.
        func storable(_ text: String?) -> String? { text.map { $0.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") } }
        return GenerationSnapshot(generationID: id, status: status, outputURL: storable(outputURL(object)), errorMessage: storable(error))
    }

    /// `output_video_url` when present, else the first `output_video` content part's URL.
    static func outputURL(_ object: [String: Any]) -> String? {
        if let direct = object["output_video_url"] as? String, !direct.isEmpty { return direct }
        for item in object["output"] as? [[String: Any]] ?? [] {
            for part in item["content"] as? [[String: Any]] ?? [] where part["type"] as? String == "output_video" {
                if let url = (part["video_url"] as? [String: Any])?["url"] as? String, !url.isEmpty { return url }
                if let url = part["video_url"] as? String, !url.isEmpty { return url }
            }
        }
        return nil
    }

    /// The answer to `DELETE /v1/responses/{id}`: `{"id": …, "cancelled": true}`; nil when the
    /// body is not that shape.
    public static func cancelled(_ body: [UInt8]) -> Bool? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else { return nil }
        return object["cancelled"] as? Bool
    }

    /// The human message of an error answer: `{"message": …}` (the seed's 400) or
    /// `{"error": {"message": …}}`, clipped to 500 bytes; nil when there is none.
    public static func errorMessage(_ body: [UInt8]) -> String? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else { return nil }
        let message = (object["message"] as? String) ?? ((object["error"] as? [String: Any])?["message"] as? String)
        guard let message, !message.isEmpty else { return nil }
        return String(decoding: Array(message.utf8.prefix(500)), as: UTF8.self)
    }

    /// Seconds to wait from a 429 body `{"data":{"retry_after": seconds}}` (number or numeric
    /// string); nil when absent or not a sane non-negative number.
    public static func retryAfterSeconds(_ body: [UInt8]) -> Double? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
            let data = object["data"] as? [String: Any]
        else { return nil }
        let seconds: Double? =
            switch data["retry_after"] {
            case let number as NSNumber: number.doubleValue
            case let text as String: Double(text.trimmingCharacters(in: .whitespaces))
            default: nil
            }
        guard let seconds, seconds.isFinite, seconds >= 0, seconds <= 86_400 else { return nil }
        return seconds
    }
}
