import Hummingbird
import PipehookSignature

/// The `admin_token` gate in front of `/api/*` and the status page.
///
/// Programs send `Authorization: Bearer <token>`; browsers use HTTP Basic with the token as the
/// password (any user name), because a person cannot add a Bearer header to a page load. Both
/// are compared in constant time over SHA-256 digests, so neither the content nor the length of
/// the token leaks through timing.
public struct AdminAuth: Sendable {
    private let digest: [UInt8]?

    /// nil: the admin endpoints are off (404), as SPEC §6 says.
    public init(token: String?) {
        digest = token.map { text in Array(text.utf8).withUnsafeBytes { Crypto.sha256($0) } }
    }

    public var isEnabled: Bool { digest != nil }

    public enum Verdict: Sendable, Equatable {
        case allowed
        /// No token is configured: the endpoints do not exist.
        case disabled
        case denied
    }

    public func check(authorization: String?) -> Verdict {
        guard let digest else { return .disabled }
        guard let presented = Self.presentedToken(authorization) else { return .denied }
        let candidate = Array(presented.utf8).withUnsafeBytes { Crypto.sha256($0) }
        return Crypto.constantTimeEquals(candidate, digest) ? .allowed : .denied
    }

    /// The token in a `Bearer` or `Basic` header (scheme names are case-insensitive, RFC 9110).
    static func presentedToken(_ header: String?) -> String? {
        guard let header else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        let value = parts[1].trimmingCharacters(in: .whitespaces)
        switch parts[0].lowercased() {
        case "bearer":
            return value.isEmpty ? nil : value
        case "basic":
            guard let decoded = Base64.decode(value), let text = String(validating: decoded, as: UTF8.self),
                let colon = text.firstIndex(of: ":")
            else { return nil }
            let password = String(text[text.index(after: colon)...])
            return password.isEmpty ? nil : password
        default:
            return nil
        }
    }

    /// The hidden form value that shows a POST was made from a page this server rendered:
    /// hex HMAC-SHA256 keyed with SHA-256 of the token, over `purpose` (e.g. "retry:job_…").
    /// Browsers re-send Basic credentials on cross-site posts; a foreign page cannot know this.
    func formToken(for purpose: String) -> String? {
        guard let digest else { return nil }
        return Crypto.hmacSHA256(key: digest, message: Array(purpose.utf8)).hexString
    }

    func verifyFormToken(_ presented: String?, for purpose: String) -> Bool {
        guard let presented, let expected = formToken(for: purpose) else { return false }
        return Crypto.constantTimeEquals(Array(presented.utf8), Array(expected.utf8))
    }

    /// Throws the documented error unless the request carries the token.
    func require(_ request: Request) throws {
        switch check(authorization: request.headers[.authorization]) {
        case .allowed: return
        case .disabled: throw APIError.adminDisabled
        case .denied: throw APIError.unauthenticated
        }
    }
}

extension APIError {
    static let adminDisabled = APIError(
        .notFound, code: "not_found", message: "no such endpoint (set admin_token to enable /api and the status page)"
    )
    static let unauthenticated = APIError(
        .unauthorized, code: "unauthorized", message: "send Authorization: Bearer <admin_token>",
        headers: [.wwwAuthenticate: #"Basic realm="pipehook", charset="UTF-8""#]
    )
}
