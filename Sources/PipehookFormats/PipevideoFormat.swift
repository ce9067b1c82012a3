import Foundation
import PipehookLifecycle

/// Pipevideo's flat webhook body:
/// `{"eventType","generationId","status","outputUrl"?,"errorMessage"?}`; unknown fields ignored.
public struct PipevideoFormat: EventFormat {
    public let name = "pipevideo"
    public static let completedEventType = "video.generation.completed"

    public init() {}

    private struct Payload: Decodable {
        var eventType: String
        var generationId: String
        var status: String
        var outputUrl: String?
        var errorMessage: String?
    }

    public func decode(_ body: [UInt8]) throws(FormatError) -> GenerationEvent {
        // Duplicate keys, deep nesting and malformed text first: Foundation would silently keep
        // one occurrence of a duplicated key (SPEC §4: such a body is not interpretable).
        try StrictJSON.validate(body)
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: Data(body))
        } catch let DecodingError.keyNotFound(key, _) {
            throw FormatError("missing field \(key.stringValue)")
        } catch let DecodingError.typeMismatch(_, context) {
            throw FormatError("wrong type at \(Self.path(context.codingPath))")
        } catch let DecodingError.valueNotFound(_, context) {
            throw FormatError("null at \(Self.path(context.codingPath))")
        } catch {
            throw FormatError("not a JSON object")
        }
        // SPEC §4: identifiers with control characters are not interpretable (a NUL would cut a
        // C string where the store binds it, and the answer and the log would name another id).
        for (name, value) in [("eventType", payload.eventType), ("generationId", payload.generationId), ("status", payload.status)]
        where Identifier.hasControlCharacter(value) {
            throw FormatError("\(name) contains a control character")
        }
        // Free text may hold newlines, but not a NUL: the stores bind text as C strings, so the
        // stored URL or message would be cut short without a word (the raw body keeps it all).
        for (name, value) in [("outputUrl", payload.outputUrl), ("errorMessage", payload.errorMessage)]
        where value?.utf8.contains(0) == true {
            throw FormatError("\(name) contains a NUL character")
        }
        guard payload.eventType == Self.completedEventType else {
            throw FormatError("unknown eventType \(Self.clip(payload.eventType))")
        }
        guard !payload.generationId.isEmpty, payload.generationId.utf8.count <= 256 else {
            throw FormatError("generationId is empty or longer than 256 bytes")
        }
        guard let status = GenerationStatus(providerValue: payload.status) else {
            throw FormatError("unknown status \(Self.clip(payload.status))")
        }
        return GenerationEvent(
            eventType: payload.eventType,
            generationID: payload.generationId,
            status: status,
            outputURL: payload.outputUrl,
            errorMessage: payload.errorMessage
        )
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.isEmpty ? "top level" : keys.map(\.stringValue).joined(separator: ".")
    }

    /// Keeps reasons short: they are logged and stored, and the value is sender-controlled.
    private static func clip(_ text: String) -> String {
        let clipped = text.prefix(64)
        return "\"\(clipped)\(clipped.count < text.count ? "…" : "")\""
    }
}
