import Foundation

/// A create body for `POST /v1/responses` (SPEC §1): built from `pipehook submit`'s options, or an
/// application's own body completed with the configured defaults.
public struct CreateRequest: Sendable, Equatable {
    public static let engines = ["hyperframes", "lottie", "auto"]

    public var prompt: String
    public var model: String?
    public var instructions: String?
    public var engine: String?
    public var expandPrompt: Bool?
    public var width: Int?
    public var height: Int?
    public var aspectRatio: String?
    public var providerOrder: [String]?

    public init(
        prompt: String, model: String? = nil, instructions: String? = nil, engine: String? = nil, expandPrompt: Bool? = nil,
        width: Int? = nil, height: Int? = nil, aspectRatio: String? = nil, providerOrder: [String]? = nil
    ) {
        self.prompt = prompt
        self.model = model
        self.instructions = instructions
        self.engine = engine
        self.expandPrompt = expandPrompt
        self.width = width
        self.height = height
        self.aspectRatio = aspectRatio
        self.providerOrder = providerOrder
    }

    /// The JSON body, with `model` and `engine` from the defaults where the options say nothing.
    /// Fails (with the option to fix) when no model is known or a value is out of range.
    public func body(defaultModel: String?, defaultEngine: String?) throws(FormatError) -> [UInt8] {
        guard !prompt.isEmpty else { throw FormatError("the prompt is empty") }
        var object: [String: Any] = ["input": prompt]
        guard let model = model ?? defaultModel, !model.isEmpty else {
            throw FormatError("no model: pass --model or set api.defaults.model")
        }
        object["model"] = model
        if let instructions { object["instructions"] = instructions }
        if let engine = engine ?? defaultEngine {
            guard Self.engines.contains(engine) else {
                throw FormatError("engine must be one of \(Self.engines.joined(separator: ", ")), not \(engine)")
            }
            object["engine"] = engine
        }
        if let expandPrompt { object["expand_prompt"] = expandPrompt }
        for (name, value) in [("width", width), ("height", height)] {
            guard let value else { continue }
            guard (1...16_384).contains(value) else { throw FormatError("\(name) must be 1…16384, not \(value)") }
            object[name] = value
        }
        if let aspectRatio { object["aspectRatio"] = aspectRatio }
        if let providerOrder {
            guard !providerOrder.isEmpty, !providerOrder.contains(where: \.isEmpty) else {
                throw FormatError("the provider order must name at least one provider, without empty names")
            }
            object["provider"] = ["order": providerOrder]
        }
        return Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }

    /// A full create body given as JSON (`--input-file`, the gateway): it must be an object with an
    /// `input`; `model` and `engine` are added from the defaults when absent. An unchanged body is
    /// returned byte for byte.
    public static func complete(_ body: [UInt8], defaultModel: String?, defaultEngine: String?) throws(FormatError) -> [UInt8] {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw FormatError("the create body is not a JSON object")
        }
        guard let input = object["input"], input is String || input is [Any] else {
            throw FormatError("the create body needs an input (a string or message items)")
        }
        var changed = false
        if object["model"] == nil {
            guard let defaultModel else { throw FormatError("the create body has no model and api.defaults.model is not set") }
            object["model"] = defaultModel
            changed = true
        }
        if object["engine"] == nil, let defaultEngine {
            object["engine"] = defaultEngine
            changed = true
        }
        guard changed else { return body }
        return Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }
}
