import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import PipehookFormats
import PipehookMetrics
import PipehookSettings

/// The one client of `GET /v1/responses/{id}`, shared by the reconciler and URL refreshes, so
/// the key's budget and pauses are honoured by every caller together.
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
        let asked = now()
        while true {
            let current = now()
            if pausedUntil > current {
                if let maxWait, pausedUntil - asked > maxWait.milliseconds { return .throttled }
                // In short steps: a reload with a new key may end the pause early.
                do { try await Task.sleep(for: .milliseconds(min(pausedUntil - current, 1_000))) } catch { return .throttled }
                continue
            }
            let slot = bucket.peek(now: current)
            if let maxWait, slot - asked > maxWait.milliseconds { return .throttled }
            _ = bucket.reserve(now: current)
            if slot > current {
                do { try await Task.sleep(for: .milliseconds(slot - current)) } catch { return .throttled }
            }
            // A pause that began while we waited (a 429 answered to someone else) still holds.
            if now() >= pausedUntil { break }
        }
        return await send(generationID)
    }

    private func send(_ generationID: String) async -> Answer {
        let base = settings.baseURL.hasSuffix("/") ? String(settings.baseURL.dropLast()) : settings.baseURL
        let escaped = generationID.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? generationID
        var request = HTTPClientRequest(url: "\(base)/v1/responses/\(escaped)")
        request.headers.add(name: "Authorization", value: "Bearer \(settings.key)")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "pipehook")
        var metadata: Logger.Metadata = ["generation_id": .string(generationID)]
        let status: Int
        let body: [UInt8]
        let retryAfterHeader: String?
        do {
            let response = try await httpClient.execute(request, timeout: .milliseconds(requestTimeout.milliseconds))
            status = Int(response.status.code)
            retryAfterHeader = response.headers.first(name: "retry-after")
            body = Array(buffer: try await response.body.collect(upTo: 4 << 20))
        } catch {
            return failed("request failed: \(Self.describe(error))", metadata: metadata)
        }
        metadata["http_status"] = .stringConvertible(status)
        switch status {
        case 200..<300:
            do throws(FormatError) {
                let snapshot = try PipevideoAPIFormat.snapshot(body)
                succeeded()
                metrics.apiRequest(result: "ok")
                return .snapshot(snapshot, raw: body)
            } catch {
                return failed("unreadable response: \(error.reason)", metadata: metadata)
            }
        case 404, 410:
            succeeded()
            metrics.apiRequest(result: "not_found")
            return .notFound
        case 401:
            metrics.apiRequest(result: "unauthorized")
            pausedUntil = max(pausedUntil, now() + unauthorizedRecheckMilliseconds)
            if !unauthorizedLogged {
                unauthorizedLogged = true
                logger.error(
                    "Pipevideo API rejected the key (HTTP 401): polling and URL refreshes are paused; check api.key, then reload (SIGHUP) or wait for the next check",
                    metadata: ["recheck_after_s": .stringConvertible(unauthorizedRecheckMilliseconds / 1000)]
                )
            }
            return .unauthorized
        case 429:
            metrics.apiRequest(result: "rate_limited")
            let seconds = PipevideoAPIFormat.retryAfterSeconds(body) ?? retryAfterHeader.flatMap { Double($0) } ?? 60
            let wait = Int64((seconds * 1000).rounded(.up))
            pausedUntil = max(pausedUntil, now() + wait)
            metadata["retry_after_ms"] = .stringConvertible(wait)
            logger.warning("Pipevideo API rate limit reached; pausing requests", metadata: metadata)
            return .rateLimited(retryAfterMilliseconds: wait)
        case 408, 500..<600:
            return failed("HTTP \(status)", metadata: metadata)
        default:
            succeeded()
            metrics.apiRequest(result: "rejected")
            logger.notice("Pipevideo API refused the request", metadata: metadata)
            return .rejected(status: status)
        }
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


