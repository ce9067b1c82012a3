import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import PipehookSettings
import PipehookSignature

/// The re-POST step (SPEC §5): sends the event document, or multipart with the downloaded file,
/// optionally signed the Standard Webhooks way with `webhook-id` = the job id (stable across
/// attempts, so the receiver can dedupe). The client must not follow redirects.
public struct PostRunner: Sendable {
    let httpClient: HTTPClient
    let logger: Logger
    let now: @Sendable () -> Int64

    /// `httpClient` must be configured with `redirectConfiguration: .disallow`.
    public init(httpClient: HTTPClient, logger: Logger, now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.httpClient = httpClient
        self.logger = logger
        self.now = now
    }

    public func run(_ step: PostStep, context: StepContext) async -> StepOutcome {
        let document = context.document.json()
        var request = HTTPClientRequest(url: step.url)
        request.method = .POST
        request.headers.add(name: "user-agent", value: "pipehook")
        let timestamp = now()
        var signature: String?
        switch step.body {
        case .event:
            request.headers.add(name: "content-type", value: "application/json")
            signature = step.secret.map { Signer.signature(secret: $0, id: context.jobID, timestamp: timestamp, body: document) }
            request.body = .bytes(ByteBuffer(bytes: document))
        case .multipart:
            guard let artifact = context.document.artifact else {
                return StepOutcome(result: .permanent, summary: "body: multipart needs an earlier download step in the same route")
            }
            let form = MultipartForm(boundary: MultipartForm.randomBoundary(), document: document, filePath: artifact.file)
            let head = form.head
            let tail = form.tail
            var info = stat()
            guard stat(artifact.file, &info) == 0 else {
                return StepOutcome(result: .retryable(retryAfter: nil), summary: "cannot read \(artifact.file)")
            }
            if let secret = step.secret {
                // The signature covers the whole body, so the file is read once to sign it.
                var signer = Signer.streamingSignature(secret: secret, id: context.jobID, timestamp: timestamp)
                signer.update(head)
                guard FileChunks.forEach(path: artifact.file, { signer.update($0) }) else {
                    return StepOutcome(result: .retryable(retryAfter: nil), summary: "cannot read \(artifact.file)")
                }
                signer.update(tail)
                signature = signer.header()
            }
            request.headers.add(name: "content-type", value: form.contentType)
            let parts = MultipartBody(head: head, file: artifact.file, tail: tail)
            request.body = .stream(parts, length: .known(Int64(head.count + tail.count) + Int64(info.st_size)))
        }
        if step.secret != nil {
            request.headers.add(name: "webhook-id", value: context.jobID)
            request.headers.add(name: "webhook-timestamp", value: String(timestamp))
            if let signature { request.headers.add(name: "webhook-signature", value: signature) }
        }
        do {
            let response = try await httpClient.execute(request, timeout: .milliseconds(step.timeoutMilliseconds))
            let body = (try? await response.body.collect(upTo: StepOutcome.outputLimit)).map { Array($0.readableBytesView) } ?? []
            return Self.classify(status: Int(response.status.code), retryAfter: response.headers.first(name: "retry-after"),
                                 location: response.headers.first(name: "location"), body: body)
        } catch {
            return StepOutcome(result: .retryable(retryAfter: nil), summary: "request failed: \(Self.describe(error))")
        }
    }

    /// 2xx succeeds; 408, 429 and 5xx retry (429 after `Retry-After`); 3xx (never followed),
    /// 410 and other 4xx dead-letter at once.
    static func classify(status: Int, retryAfter: String?, location: String?, body: [UInt8]) -> StepOutcome {
        switch status {
        case 200..<300:
            return StepOutcome(result: .succeeded, summary: "HTTP \(status)", httpStatus: status, output: body)
        case 408, 429, 500..<600:
            let delay = retryAfter.flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }.map { Duration.seconds(max(0, $0)) }
            return StepOutcome(result: .retryable(retryAfter: status == 429 ? delay : nil), summary: "HTTP \(status)", httpStatus: status, output: body)
        case 300..<400:
            return StepOutcome(result: .permanent, summary: "HTTP \(status): redirects are not followed (to \(location ?? "?")); configure the final URL", httpStatus: status, output: body)
        default:
            return StepOutcome(result: .permanent, summary: "HTTP \(status)", httpStatus: status, output: body)
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return String(describing: error) }
        return String(describing: type(of: error)) + ": " + String(describing: error)
    }
}

public enum StepHTTP {
    /// The client steps use: it never follows a redirect by itself (re-POSTs must not; downloads
    /// follow them one checked hop at a time). The caller shuts it down.
    public static func makeClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}

/// Reads a file in 64 KiB chunks.
enum FileChunks {
    static let size = 64 * 1024

    /// Returns false when the file cannot be read.
    static func forEach(path: String, _ body: (UnsafeRawBufferPointer) -> Void) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        while true {
            let chunk: Data?
            do { chunk = try handle.read(upToCount: size) } catch { return false }
            guard let data = chunk, !data.isEmpty else { return true }  // nil or empty: end of file
            data.withUnsafeBytes(body)
        }
    }
}

/// `head`, the file's bytes, `tail` — streamed, so memory stays flat whatever the file size.
struct MultipartBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let head: [UInt8]
    let file: String
    let tail: [UInt8]

    struct AsyncIterator: AsyncIteratorProtocol {
        var stage = 0
        let body: MultipartBody
        var handle: FileHandle?

        mutating func next() async throws -> ByteBuffer? {
            switch stage {
            case 0:
                stage = 1
                handle = FileHandle(forReadingAtPath: body.file)
                guard handle != nil else { throw CocoaError(.fileReadNoSuchFile) }
                return ByteBuffer(bytes: body.head)
            case 1:
                if let data = try handle?.read(upToCount: FileChunks.size), !data.isEmpty {
                    return ByteBuffer(bytes: data)
                }
                try? handle?.close()
                stage = 2
                return ByteBuffer(bytes: body.tail)
            default:
                return nil
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}
