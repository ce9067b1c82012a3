import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import PipehookSettings
import PipehookSignature
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs one attempt of a `download` (file drop) step (SPEC §5).
///
/// The body is streamed chunk by chunk into `<final>.part` next to the destination while its
/// SHA-256 is computed; the byte count is checked against `max_bytes` (declared and streamed) and
/// against Content-Length; then fsync, rename into place, fsync of the folder, and a sidecar
/// `<final>.json` written atomically. A final file that already has the same SHA-256 is left
/// untouched. Every failure removes the `.part` file. Memory stays flat (one chunk at a time).
///
/// Timeouts: the step's `timeout` is the idle/read timeout — no response head or no body chunk
/// for that long fails the attempt (retryable). The whole transfer additionally has a generous
/// deadline, `transferDeadline` (default: the larger of 1 hour and 20 × `timeout`).
///
/// Redirects: followed (CDNs redirect), at most `maxRedirects`, and only to `https` unless
/// `allow_http`. Give this runner a client with `redirectConfiguration: .disallow` so every hop
/// is checked *before* it is requested; with a client that follows redirects itself the hops are
/// checked afterwards from `response.history` and a non-https hop still fails the attempt.
public struct DownloadRunner: Sendable {
    private let httpClient: HTTPClient
    private let logger: Logger
    private let now: @Sendable () -> Date
    public var maxRedirects = 5
    /// Whole-transfer deadline; nil means max(1 hour, 20 × the step's timeout).
    public var transferDeadline: Duration? = nil

    public init(httpClient: HTTPClient, logger: Logger, now: @escaping @Sendable () -> Date = { Date() }) {
        self.httpClient = httpClient
        self.logger = logger
        self.now = now
    }

    /// One attempt. Never throws: every failure is a `StepOutcome`.
    public func run(_ step: DownloadStep, context: StepContext) async -> StepOutcome {
        var logger = self.logger
        logger[metadataKey: "job_id"] = "\(context.jobID)"
        logger[metadataKey: "attempt"] = "\(context.attempt)"
        StepLog.addEvent(context, to: &logger)

        guard let urlText = context.document.outputURL, !urlText.isEmpty else {
            return StepOutcome(result: .permanent, summary: "no output_url to download")
        }
        guard let url = URL(string: urlText), let host = url.host, !host.isEmpty else {
            return StepOutcome(result: .permanent, summary: "invalid output_url")
        }
        if let refusal = Self.schemeRefusal(url, allowHTTP: step.allowHTTP) {
            return StepOutcome(result: .permanent, summary: refusal)
        }
        // Only the host: the query string of a signed URL is a credential.
        logger[metadataKey: "host"] = "\(host)"

        let idle = Duration.milliseconds(max(1, step.timeoutMilliseconds))
        let overall = transferDeadline ?? max(.seconds(3600), idle * 20)
        let progress = Progress()
        let started = ContinuousClock.now
        let requestLogger = logger

        let outcome: StepOutcome
        do {
            outcome = try await withThrowingTaskGroup(of: StepOutcome?.self) { group in
                group.addTask {
                    try await self.transfer(step, context: context, url: url, overall: overall, progress: progress, logger: requestLogger)
                }
                group.addTask {
                    try await progress.watch(idle: idle)
                    return nil
                }
                defer { group.cancelAll() }
                while let next = try await group.next() {
                    if let outcome = next { return outcome }
                }
                return StepOutcome(result: .retryable(retryAfter: nil), summary: "download ended without a result")
            }
        } catch is DownloadStalled {
            outcome = StepOutcome(
                result: .retryable(retryAfter: nil),
                summary: "stalled: no data for \(ExecRunner.format(idle))", httpStatus: progress.status
            )
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            outcome = StepOutcome(
                result: .retryable(retryAfter: nil), summary: "timed out after \(ExecRunner.format(overall))",
                httpStatus: progress.status
            )
        } catch let error as DownloadFileError {
            outcome = StepOutcome(result: .retryable(retryAfter: nil), summary: error.description, httpStatus: progress.status)
        } catch {
            outcome = StepOutcome(
                result: .retryable(retryAfter: nil), summary: "download failed: \(Self.describe(error))",
                httpStatus: progress.status
            )
        }
        logger.log(
            level: outcome.result == .succeeded ? .debug : .notice, "download finished",
            metadata: [
                "summary": "\(outcome.summary)", "http_status": "\(outcome.httpStatus.map(String.init) ?? "-")",
                "elapsed": "\(ContinuousClock.now - started)",
            ]
        )
        return outcome
    }

    // MARK: - Transfer

    private func transfer(
        _ step: DownloadStep, context: StepContext, url: URL, overall: Duration, progress: Progress, logger: Logger
    ) async throws -> StepOutcome {
        let deadline = NIODeadline.now() + .milliseconds(overall.milliseconds)
        var current = url
        var redirects = 0
        var response: HTTPClientResponse
        while true {
            var request = HTTPClientRequest(url: current.absoluteString)
            request.headers.add(name: "User-Agent", value: "pipehook")
            response = try await httpClient.execute(request, deadline: deadline, logger: logger)
            progress.touch(status: Int(response.status.code))
            // Hops the client followed on its own.
            for hop in response.history.dropFirst() {
                if let hopURL = URL(string: hop.request.url), let refusal = Self.schemeRefusal(hopURL, allowHTTP: step.allowHTTP) {
                    return StepOutcome(result: .permanent, summary: "redirect refused: \(refusal)", httpStatus: Int(response.status.code))
                }
            }
            let code = Int(response.status.code)
            guard (300..<400).contains(code), code != 304, let location = response.headers.first(name: "location") else { break }
            redirects += 1
            guard redirects <= maxRedirects else {
                return StepOutcome(result: .permanent, summary: "too many redirects", httpStatus: code)
            }
            guard let next = URL(string: location, relativeTo: current)?.absoluteURL, next.host != nil else {
                return StepOutcome(result: .permanent, summary: "redirect to an invalid URL", httpStatus: code)
            }
            if let refusal = Self.schemeRefusal(next, allowHTTP: step.allowHTTP) {
                return StepOutcome(result: .permanent, summary: "redirect refused: \(refusal)", httpStatus: code)
            }
            current = next
        }

        let status = Int(response.status.code)
        if let failure = statusFailure(status, retryAfter: response.headers.first(name: "retry-after")) { return failure }

        let declared = response.headers.first(name: "content-length").flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
        if let declared, declared > step.maxBytes {
            return StepOutcome(
                result: .permanent, summary: "Content-Length \(declared) exceeds max_bytes \(step.maxBytes)", httpStatus: status
            )
        }

        // Where it goes: known only now, since {ext} may come from the Content-Type.
        let ext = DownloadPath.fileExtension(
            urlPaths: [url.path, (response.url ?? current).path],
            contentType: response.headers.first(name: "content-type")
        )
        let document = context.document
        let date = document.receivedAt > 0 ? Date(timeIntervalSince1970: Double(document.receivedAt) / 1000) : now()
        let relative = step.pathTemplate.render(document: document, ext: ext, date: date)
        guard let final = DownloadPath.resolve(relative: relative, in: step.directory) else {
            return StepOutcome(result: .permanent, summary: "download path would leave the directory", httpStatus: status)
        }
        let folder = (final as NSString).deletingLastPathComponent
        let directory = DownloadPath.standardizedDirectory(step.directory)
        try Self.makeDirectories(folder)
        // Symlinks inside the directory must not lead out of it either.
        guard let realDirectory = Self.realPath(directory), let realFolder = Self.realPath(folder),
            realFolder == realDirectory || realFolder.hasPrefix(realDirectory.hasSuffix("/") ? realDirectory : realDirectory + "/")
        else {
            return StepOutcome(result: .permanent, summary: "download folder resolves outside the directory", httpStatus: status)
        }

        // Stream into <final>.part.
        let partPath = final + ".part"
        let part = try PartFile(path: partPath)
        let hasher = SHA256Hasher()
        var received: Int64 = 0
        do {
            for try await chunk in response.body {
                progress.touch(status: status)
                received += Int64(chunk.readableBytes)
                if received > step.maxBytes {
                    part.discard()
                    return StepOutcome(
                        result: .permanent, summary: "body exceeds max_bytes \(step.maxBytes)", httpStatus: status
                    )
                }
                try chunk.withUnsafeReadableBytes { bytes in
                    hasher.update(bytes)
                    try part.append(bytes)
                }
            }
            progress.finish()
            if let declared, received != declared {
                part.discard()
                return StepOutcome(
                    result: .retryable(retryAfter: nil),
                    summary: "incomplete body: received \(received) of \(declared) bytes", httpStatus: status
                )
            }
            try part.sync()
        } catch {
            part.discard()
            throw error
        }
        let sha256 = hasher.finalize().hexString

        // Same content already in place: leave it untouched (same inode, same mtime).
        var reused = false
        do {
            if try Self.existingFileMatches(final, bytes: received, sha256: sha256) {
                part.discard()
                reused = true
            } else {
                try Self.check(rename(partPath, final), "rename", final)
                part.close()
                try Self.syncDirectory(folder)
            }
        } catch {
            part.discard()
            throw error
        }

        var saved = document
        saved.artifact = Artifact(file: final, sha256: sha256, bytes: received)
        try Self.writeSidecar(final + ".json", contents: saved.json(), folder: folder)

        let summary =
            reused
            ? "already saved \(received) bytes at \(final) (same sha256)"
            : "saved \(received) bytes to \(final)"
        return StepOutcome(result: .succeeded, summary: summary, httpStatus: status, artifact: saved.artifact)
    }

    /// nil for 2xx; otherwise the outcome for the status (SPEC §5: a 403/404/410 usually means the
    /// signed URL expired; reconciliation refreshes it, so those are retried).
    private func statusFailure(_ status: Int, retryAfter retryAfterHeader: String?) -> StepOutcome? {
        switch status {
        case 200..<300:
            return nil
        case 403, 404, 410:
            return StepOutcome(
                result: .retryable(retryAfter: nil), summary: "HTTP \(status): the output URL may have expired",
                httpStatus: status
            )
        case 408:
            return StepOutcome(result: .retryable(retryAfter: nil), summary: "HTTP 408", httpStatus: status)
        case 429, 503:
            let retryAfter = Self.retryAfter(retryAfterHeader, now: now())
            return StepOutcome(result: .retryable(retryAfter: retryAfter), summary: "HTTP \(status)", httpStatus: status)
        case 500..<600:
            return StepOutcome(result: .retryable(retryAfter: nil), summary: "HTTP \(status)", httpStatus: status)
        default:
            return StepOutcome(result: .permanent, summary: "HTTP \(status)", httpStatus: status)
        }
    }

    // MARK: - Helpers

    static func schemeRefusal(_ url: URL, allowHTTP: Bool) -> String? {
        switch url.scheme?.lowercased() {
        case "https": return nil
        case "http": return allowHTTP ? nil : "only https URLs are downloaded (allow_http is off)"
        default: return "unsupported URL scheme \(url.scheme ?? "(none)")"
        }
    }

    /// `Retry-After` as delay-seconds or an HTTP-date; nil when absent or unreadable.
    public static func retryAfter(_ value: String?, now: Date) -> Duration? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Int64(value) { return .seconds(max(0, seconds)) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .seconds(max(0, Int64(date.timeIntervalSince(now).rounded(.up))))
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return "\(error)" }
        if error is CancellationError { return "cancelled" }
        return String(describing: error)
    }

    /// `mkdir -p` with mode 0750.
    static func makeDirectories(_ path: String) throws {
        var info = stat()
        if stat(path, &info) == 0 {
            if (info.st_mode & S_IFMT) == S_IFDIR { return }
            throw DownloadFileError(operation: "create folder", path: path, code: ENOTDIR)
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path { try makeDirectories(parent) }
        if mkdir(path, 0o750) != 0 && errno != EEXIST {
            throw DownloadFileError(operation: "create folder", path: path, code: errno)
        }
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func check(_ result: Int32, _ operation: String, _ path: String) throws {
        if result != 0 { throw DownloadFileError(operation: operation, path: path, code: errno) }
    }

    static func syncDirectory(_ folder: String) throws {
        let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw DownloadFileError(operation: "open folder", path: folder, code: errno) }
        defer { close(fd) }
        try check(fsync(fd), "fsync folder", folder)
    }

    /// True when `path` is a regular file of `bytes` bytes whose SHA-256 is `sha256`.
    static func existingFileMatches(_ path: String, bytes: Int64, sha256: String) throws -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else { return false }
        guard (info.st_mode & S_IFMT) == S_IFREG, Int64(info.st_size) == bytes else { return false }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let hasher = SHA256Hasher()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return false
            }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        return hasher.finalize().hexString == sha256
    }

    /// Temp file + fsync + rename + fsync of the folder. Skipped when the sidecar already has
    /// exactly these contents.
    static func writeSidecar(_ path: String, contents: [UInt8], folder: String) throws {
        if let existing = FileManager.default.contents(atPath: path), Array(existing) == contents { return }
        let temporary = path + ".tmp"
        let file = try PartFile(path: temporary)
        do {
            try contents.withUnsafeBytes { try file.append($0) }
            try file.sync()
            try check(rename(temporary, path), "rename", path)
            file.close()
            try syncDirectory(folder)
        } catch {
            file.discard()
            throw error
        }
    }
}

// MARK: - Support types

extension DownloadPath {
    /// `{ext}` from the first URL path with a usable extension, else the Content-Type, else `mp4`.
    public static func fileExtension(urlPaths: [String], contentType: String?) -> String {
        for path in urlPaths {
            let last = path.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? ""
            if let dot = last.lastIndex(of: "."), let ext = sanitizeExtension(String(last[last.index(after: dot)...])) {
                return ext
            }
        }
        return fileExtension(urlPath: "", contentType: contentType)
    }
}

/// `close(2)`, callable where a `close()` method shadows it.
private func systemClose(_ fd: Int32) -> Int32 {
    close(fd)
}

/// The idle watchdog's error: nothing arrived for the step's timeout.
struct DownloadStalled: Error {}

/// Last time anything arrived (response head or a body chunk), watched by the idle timer.
private final class Progress: Sendable {
    private let state = Mutex<(last: ContinuousClock.Instant, status: Int?, done: Bool)>((ContinuousClock.now, nil, false))

    func touch(status: Int) {
        state.withLock {
            $0.last = ContinuousClock.now
            $0.status = status
        }
    }

    /// The body is complete: the idle watchdog stands down (hashing an existing file and the
    /// sidecar are local work, not network silence).
    func finish() {
        state.withLock { $0.done = true }
    }

    var status: Int? { state.withLock { $0.status } }

    /// Throws `DownloadStalled` once `idle` passes without a `touch`; returns after `finish()`.
    func watch(idle: Duration) async throws {
        while true {
            let (last, done) = state.withLock { ($0.last, $0.done) }
            if done { return }
            let deadline = last + idle
            if ContinuousClock.now >= deadline { throw DownloadStalled() }
            try await Task.sleep(until: deadline, clock: .continuous)
        }
    }
}

struct DownloadFileError: Error, CustomStringConvertible {
    var operation: String
    var path: String
    var code: Int32
    var description: String {
        code == EWOULDBLOCK ? "\(operation) \(path)" : "\(operation) \(path): \(String(cString: strerror(code)))"
    }
}

/// A file being written (`<final>.part` or a sidecar temp): removed unless it was renamed away.
private final class PartFile {
    let path: String
    private var fd: Int32

    /// Opens (creating) and locks the file, then truncates it. Two attempts that would write the
    /// same path at once (two jobs for one generation) do not interleave: the second one fails
    /// with `EWOULDBLOCK` ("in progress") without touching the first one's file.
    init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640)
        guard fd >= 0 else { throw DownloadFileError(operation: "create", path: path, code: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            _ = systemClose(fd)
            fd = -1
            throw DownloadFileError(operation: code == EWOULDBLOCK ? "another attempt is writing" : "lock", path: path, code: code)
        }
        if ftruncate(fd, 0) != 0 {
            let code = errno
            discard()
            throw DownloadFileError(operation: "truncate", path: path, code: code)
        }
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw DownloadFileError(operation: "write", path: path, code: errno)
            }
            offset += written
        }
    }

    func sync() throws {
        if fsync(fd) != 0 { throw DownloadFileError(operation: "fsync", path: path, code: errno) }
    }

    /// Closes the descriptor, releasing the lock. Called only after the file was renamed into
    /// place, so no other attempt can lock and truncate it in between.
    func close() {
        if fd >= 0 {
            _ = systemClose(fd)
            fd = -1
        }
    }

    /// Removes the file (while still holding the lock), then closes. Safe to call more than once.
    func discard() {
        if fd >= 0 {
            unlink(path)
            close()
        }
    }

    deinit {
        close()
    }
}
