import Hummingbird
import PipehookFormats

/// An error with a stable `code` that reaches the client as `{"error":{"code","message"}}`.
/// Messages are written by us, never echo request values, and never contain secrets.
public struct APIError: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public let headers: HTTPFields

    public init(_ status: HTTPResponse.Status, code: String, message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = JSONResponse.make(status: status, json: jsonBody)
        response.headers.append(contentsOf: headers)
        return response
    }

    static let unknownSource = APIError(.notFound, code: "unknown_source", message: "no source with this name is configured")
    static func bodyTooLarge(_ limit: Int) -> APIError {
        APIError(.contentTooLarge, code: "body_too_large", message: "the body is larger than the \(limit)-byte limit")
    }
    static let storeUnavailable = APIError(.serviceUnavailable, code: "store_unavailable", message: "the store cannot commit right now; retry later")
    static let notFound = APIError(.notFound, code: "not_found", message: "no such endpoint")
    static let readTimeout = APIError(.requestTimeout, code: "read_timeout", message: "the request was not received in time")
}

enum JSONResponse {
    static func make(status: HTTPResponse.Status, json: String) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: json))
        )
    }
}
