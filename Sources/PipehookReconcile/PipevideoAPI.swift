import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import PipehookFormats
import PipehookMetrics
import PipehookSettings

/// The one client of the Pipevideo API in a process — polls (`GET /v1/responses/{id}`), URL
/// refreshes, creates and cancels — so the key's budget and pauses are honoured by every caller
/// together.
///
/// Pauses: a 429 stops everything for its `retry_after`; 5xx answers and timeouts back off
/// (`APIBackoff`); a 401 pauses for `unauthorizedRecheck` and is logged once until a request
/// succeeds again. The key is sent only in the Authorization header and never logged.
public actor PipevideoAPI {
    public enum Answer: Sendable, Equatable {
        /// `raw` is the response body as received (kept in the event log).
        case snapshot(GenerationSnapshot, raw: [UInt8])
        case notFound
        case unauthorized
        case rateLimited(retryAfterMilliseconds: Int64)
        /// 5xx, timeout, connection error or unreadable body: worth asking again later.
        case unavailable(String)
        /// Another 4xx: this id cannot be fetched as it is.
        case rejected(status: Int)
        /// No request slot within the caller's `maxWait` (paused or out of budget).
        case throttled
    }

    private var settings: API
    private var bucket: TokenBucket
    private let httpClient: HTTPClient
    private let logger: Logger
    private let metrics: PipehookMetrics
    private let now: @Sendable () -> Int64
    private let backoff: APIBackoff
    private let requestTimeout: Duration
    /// Unix ms before which no request is sent.
    public private(set) var pausedUntil: Int64 = 0
    private var failuresInARow = 0
    /// Creates and cancels waiting for a slot; polls step aside while there are any.
    private var priorityWaiting = 0
    private var unauthorizedLogged = false
    public let unauthorizedRecheckMilliseconds: Int64

    public init(
        settings: API, httpClient: HTTPClient, logger: Logger, metrics: PipehookMetrics = .discarding,
        backoff: APIBackoff = APIBackoff(), requestTimeout: Duration = .seconds(30),
        unauthorizedRecheckMilliseconds: Int64 = 300_000,
        now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
    ) {
        self.settings = settings
        self.bucket = TokenBucket(requestsPerMinute: settings.requestsPerMinute)
        self.httpClient = httpClient
        self.logger = logger
        self.metrics = metrics
        self.backoff = backoff
        self.requestTimeout = requestTimeout
        self.unauthorizedRecheckMilliseconds = unauthorizedRecheckMilliseconds
        self.now = now
    }

    /// A reload: a new key ends a 401 pause at once; a new budget applies from the next request.
    public func update(_ next: API) {
        if next.key != settings.key, unauthorizedLogged {
            pausedUntil = 0  // the next request tries the new key; its success logs the resume
        }
        if next.requestsPerMinute != settings.requestsPerMinute {
            bucket = TokenBucket(requestsPerMinute: next.requestsPerMinute)
        }
        settings = next
    }

    /// Fetches one generation. Waits for a request slot, at most `maxWait` when given.
    public func fetch(_ generationID: String, maxWait: Duration? = nil) async -> Answer {
        guard await slot(priority: false, maxWait: maxWait) else { return .throttled }
        return await send(generationID)
    }

    /// Waits for a request slot of the shared budget; false when none comes within `maxWait` (or
    /// the caller is cancelled). Creates and cancels (`priority`) go before polls and refreshes: a
    /// poll takes its slot only when no priority request is waiting for one.
    private func slot(priority: Bool, maxWait: Duration?) async -> Bool {
        let asked = now()
        if priority { priorityWaiting += 1 }
        defer { if priority { priorityWaiting -= 1 } }
        while true {
            let current = now()
            if pausedUntil > current {
                if let maxWait, pausedUntil - asked > maxWait.milliseconds { return false }
                // In short steps: a reload with a new key may end the pause early.
                do { try await Task.sleep(for: .milliseconds(min(pausedUntil - current, 1_000))) } catch { return false }
                continue
            }
            let slot = bucket.peek(now: current)
            if let maxWait, slot - asked > maxWait.milliseconds { return false }
            if !priority, priorityWaiting > 0 || slot > current {
                // Polls never reserve ahead, so a create that arrives later still goes first.
                do { try await Task.sleep(for: .milliseconds(max(slot - current, 10))) } catch { return false }
                continue
            }
            _ = bucket.reserve(now: current)
            if slot > current {
                do { try await Task.sleep(for: .milliseconds(slot - current)) } catch { return false }
            }
            // A pause that began while we waited (a 429 answered to someone else) still holds.
            if now() >= pausedUntil { return true }
        }
    }

    /// What `POST /v1/responses` did.
    public enum CreateAnswer: Sendable, Equatable {
        /// The generation exists: Pipevideo's answer as received, and what it says.
        case created(GenerationSnapshot, raw: [UInt8])
        /// Certainly not created: 400 (bad input, insufficient credits), 401, 403, 404, 422, 429, or
        /// no connection. `status` 0 when no answer came; `message` is Pipevideo's.
        case refused(status: Int, message: String)
        /// Sent, but whether it was created is not known (timeout, dropped connection, 5xx, an
        /// unreadable answer).
        case unknown(String)
    }

    /// Creates a generation from `body` (forwarded as is, with pipehook's key).
    public func create(_ body: [UInt8], maxWait: Duration? = .seconds(30)) async -> CreateAnswer {
        guard await slot(priority: true, maxWait: maxWait) else {
            return .refused(status: 0, message: "no request slot within the wait: the API budget is spent or the API is paused (429, 401 or outage)")
        }
        let sent = await exchange(method: .POST, path: "/v1/responses", body: body)
        switch sent {
        case .notSent(let reason):
            _ = failed(reason, metadata: [:])
            return .refused(status: 0, message: reason)
        case .lost(let reason):
            _ = failed(reason, metadata: [:])
            return .unknown(reason)
        case .answered(let status, let answer, let retryAfterHeader):
            switch status {
            case 200..<300:
                switch readSnapshot(answer) {
                case .success(let snapshot): return .created(snapshot, raw: answer)
                case .failure(let error):
                    metrics.apiRequest(result: "unavailable")
                    return .unknown("unreadable create answer (HTTP \(status)): \(error.reason)")
                }
            case 500..<600, 408:
                return .unknown(failedReason(status))
            default:
                return .refused(status: status, message: refusal(status, answer, retryAfterHeader: retryAfterHeader))
            }
        }
    }

    /// What `DELETE /v1/responses/{id}` did.
    public enum CancelAnswer: Sendable, Equatable {
        case cancelled(raw: [UInt8])
        /// Pipevideo answered but did not cancel (`cancelled: false`, 404, 409, 400…).
        case refused(status: Int, message: String)
        /// No usable answer (outage, timeout, 5xx): nothing is recorded; cancel again later.
        case unavailable(String)
    }

    public func cancel(_ generationID: String, maxWait: Duration? = .seconds(30)) async -> CancelAnswer {
        guard await slot(priority: true, maxWait: maxWait) else {
            return .unavailable("no request slot within the wait: the API budget is spent or the API is paused (429, 401 or outage)")
        }
        switch await exchange(method: .DELETE, path: "/v1/responses/" + Self.escape(generationID), body: nil) {
        case .notSent(let reason), .lost(let reason):
            _ = failed(reason, metadata: ["generation_id": .string(generationID)])
            return .unavailable(reason)
        case .answered(let status, let answer, let retryAfterHeader):
            switch status {
            case 200..<300:
                succeeded()
                metrics.apiRequest(result: "ok")
                if PipevideoAPIFormat.cancelled(answer) == true { return .cancelled(raw: answer) }
                return .refused(status: status, message: PipevideoAPIFormat.errorMessage(answer) ?? "Pipevideo did not cancel it")
            case 500..<600, 408:
                return .unavailable(failedReason(status))
            default:
                return .refused(status: status, message: refusal(status, answer, retryAfterHeader: retryAfterHeader))
            }
        }
    }

    /// A 5xx or 408 to a create or cancel: backs every caller off like any failure; the reason.
    private func failedReason(_ status: Int) -> String {
        _ = failed("HTTP \(status)", metadata: [:])
        return "HTTP \(status) from Pipevideo"
    }

    /// The message for a 4xx answer, applying what it means for everyone (401 and 429 pause the budget).
    private func refusal(_ status: Int, _ body: [UInt8], retryAfterHeader: String?) -> String {
        let message = PipevideoAPIFormat.errorMessage(body)
        switch status {
        case 401:
            unauthorized()
            return "Pipevideo rejected the API key (HTTP 401): check api.key"
        case 429:
            let wait = rateLimited(body, retryAfterHeader: retryAfterHeader, metadata: [:])
            return "rate limited by Pipevideo (HTTP 429): try again in \((wait + 999) / 1000) s"
        default:
            succeeded()
            metrics.apiRequest(result: "rejected")
            return message.map { "HTTP \(status): \($0)" } ?? "HTTP \(status) from Pipevideo"
        }
    }

    private enum Exchange {
        /// Certainly never reached Pipevideo (no connection).
        case notSent(String)
        /// May have reached it: no complete answer.
        case lost(String)
        case answered(status: Int, body: [UInt8], retryAfter: String?)
    }

    private func exchange(method: HTTPMethod, path: String, body: [UInt8]?) async -> Exchange {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(settings.key)")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "pipehook")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await httpClient.execute(request, timeout: .milliseconds(requestTimeout.milliseconds))
            let status = Int(response.status.code)
            let answer = Array(buffer: try await response.body.collect(upTo: 4 << 20))
            return .answered(status: status, body: answer, retryAfter: response.headers.first(name: "retry-after"))
        } catch {
            let reason = "request failed: \(Self.describe(error))"
            return Self.neverSent(error) ? .notSent(reason) : .lost(reason)
        }
    }

    /// Errors raised before a request could leave: the connection was never made.
    static func neverSent(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError, error == .connectTimeout || error == .invalidURL { return true }
        if error is NIOConnectionError { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        if let error = error as? IOError, [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH].contains(error.errnoCode) { return true }
        return false
    }

    private var baseURL: String { settings.baseURL.hasSuffix("/") ? String(settings.baseURL.dropLast()) : settings.baseURL }

    static func escape(_ id: String) -> String {
        id.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? id
    }

    private func send(_ generationID: String) async -> Answer {
        var metadata: Logger.Metadata = ["generation_id": .string(generationID)]
        let status: Int
        let body: [UInt8]
        let retryAfterHeader: String?
        switch await exchange(method: .GET, path: "/v1/responses/" + Self.escape(generationID), body: nil) {
        case .notSent(let reason), .lost(let reason): return failed(reason, metadata: metadata)
        case .answered(let code, let answer, let retryAfter): (status, body, retryAfterHeader) = (code, answer, retryAfter)
        }
        metadata["http_status"] = .stringConvertible(status)
        switch status {
        case 200..<300:
            switch readSnapshot(body) {
            case .success(let snapshot): return .snapshot(snapshot, raw: body)
            case .failure(let error): return failed("unreadable response: \(error.reason)", metadata: metadata)
            }
        case 404, 410:
            succeeded()
            metrics.apiRequest(result: "not_found")
            return .notFound
        case 401:
            unauthorized()
            return .unauthorized
        case 429:
            return .rateLimited(retryAfterMilliseconds: rateLimited(body, retryAfterHeader: retryAfterHeader, metadata: metadata))
        case 408, 500..<600:
            return failed("HTTP \(status)", metadata: metadata)
        default:
            succeeded()
            metrics.apiRequest(result: "rejected")
            logger.notice("Pipevideo API refused the request", metadata: metadata)
            return .rejected(status: status)
        }
    }

    /// A 2xx answer read as a generation, counted as a success; or what the format could not read.
    private func readSnapshot(_ body: [UInt8]) -> Result<GenerationSnapshot, FormatError> {
        do throws(FormatError) {
            let snapshot = try PipevideoAPIFormat.snapshot(body)
            succeeded()
            metrics.apiRequest(result: "ok")
            return .success(snapshot)
        } catch {
            return .failure(error)
        }
    }

    /// A 401 pauses every request for `unauthorizedRecheckMilliseconds`, logged once until a success.
    private func unauthorized() {
        metrics.apiRequest(result: "unauthorized")
        pausedUntil = max(pausedUntil, now() + unauthorizedRecheckMilliseconds)
        if !unauthorizedLogged {
            unauthorizedLogged = true
            logger.error(
                "Pipevideo API rejected the key (HTTP 401): polling and URL refreshes are paused; check api.key, then reload (SIGHUP) or wait for the next check",
                metadata: ["recheck_after_s": .stringConvertible(unauthorizedRecheckMilliseconds / 1000)]
            )
        }
    }

    /// A 429 pauses every request for its `retry_after` (body, then header, else 60 s); returns the pause.
    private func rateLimited(_ body: [UInt8], retryAfterHeader: String?, metadata: Logger.Metadata) -> Int64 {
        metrics.apiRequest(result: "rate_limited")
        let seconds = PipevideoAPIFormat.retryAfterSeconds(body) ?? retryAfterHeader.flatMap { Double($0) } ?? 60
        let wait = Int64((seconds * 1000).rounded(.up))
        pausedUntil = max(pausedUntil, now() + wait)
        var metadata = metadata
        metadata["retry_after_ms"] = .stringConvertible(wait)
        logger.warning("Pipevideo API rate limit reached; pausing requests", metadata: metadata)
        return wait
    }

    private func succeeded() {
        failuresInARow = 0
        if unauthorizedLogged {
            unauthorizedLogged = false
            logger.notice("Pipevideo API accepts the key again; polling resumed")
        }
    }

    private func failed(_ reason: String, metadata: Logger.Metadata) -> Answer {
        metrics.apiRequest(result: "unavailable")
        failuresInARow += 1
        let delay = backoff.delay(failures: failuresInARow, unit: Double.random(in: 0..<1))
        pausedUntil = max(pausedUntil, now() + delay)
        var metadata = metadata
        metadata["error"] = .string(reason)
        metadata["backoff_ms"] = .stringConvertible(delay)
        logger.warning("Pipevideo API unavailable; backing off", metadata: metadata)
        return .unavailable(reason)
    }

    /// Error text without the request (whose headers hold the key).
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return "\(error)" }
        return String(describing: type(of: error)) + ": " + String(describing: error).prefix(200)
    }
}


