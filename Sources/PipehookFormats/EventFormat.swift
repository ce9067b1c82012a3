import PipehookLifecycle

/// What every provider format yields: one status report about one generation.
public struct GenerationEvent: Sendable, Equatable {
    public var eventType: String
    public var generationID: String
    public var status: GenerationStatus
    public var outputURL: String?
    public var errorMessage: String?

    public init(
        eventType: String, generationID: String, status: GenerationStatus,
        outputURL: String? = nil, errorMessage: String? = nil
    ) {
        self.eventType = eventType
        self.generationID = generationID
        self.status = status
        self.outputURL = outputURL
        self.errorMessage = errorMessage
    }
}

/// Why a verified body could not be interpreted. Such a body is kept raw as `unrecognized`.
public struct FormatError: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// A provider's webhook payload format. Adding a provider means adding a conformance and
/// registering it in `EventFormats.all`; nothing else in the core changes.
public protocol EventFormat: Sendable {
    /// The name used by `format:` in the configuration.
    var name: String { get }
    func decode(_ body: [UInt8]) throws(FormatError) -> GenerationEvent
}

public enum EventFormats {
    public static let all: [any EventFormat] = [PipevideoFormat()]

    public static func named(_ name: String) -> (any EventFormat)? {
        all.first { $0.name == name }
    }

    public static var names: [String] { all.map(\.name) }
}

/// Rules for the identifiers an event carries (generation ids, event types, statuses).
public enum Identifier {
    /// True when `text` contains U+0000–U+001F or U+007F (SPEC §4: not interpretable).
    public static func hasControlCharacter(_ text: String) -> Bool {
        text.utf8.contains { $0 < 0x20 || $0 == 0x7F }
    }
}
