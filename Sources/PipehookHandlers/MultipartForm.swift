import PipehookSignature

/// The framing of a `body: multipart` re-POST (SPEC §5): an `event` part with the event document
/// and a `file` part with the downloaded file. Only the parts around the file are built here; the
/// file's bytes are streamed between `head` and `tail` (see `MultipartBody`), so memory stays flat.
///
/// Pure and deterministic for a given boundary, so it is table-tested and fuzzed (Fuzz/).
public struct MultipartForm: Sendable, Equatable {
    public let boundary: String
    /// Everything before the file's bytes: the event part, then the file part's headers.
    public let head: [UInt8]
    /// Everything after the file's bytes: the closing delimiter.
    public let tail: [UInt8]
    /// The `filename` parameter of the file part, as sent.
    public let fileName: String

    /// `filePath` is the saved file; only its last component is sent.
    public init(boundary: String, document: [UInt8], filePath: String) {
        self.boundary = boundary
        let fileName = Self.fileName(filePath)
        self.fileName = fileName
        head = Array((
            "--\(boundary)\r\nContent-Disposition: form-data; name=\"event\"\r\nContent-Type: application/json\r\n\r\n"
            + String(decoding: document, as: UTF8.self)
            + "\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(fileName)\"\r\n"
            + "Content-Type: application/octet-stream\r\n\r\n"
        ).utf8)
        tail = Array("\r\n--\(boundary)--\r\n".utf8)
    }

    /// `pipehook-` and 24 random hex digits: a file cannot contain the delimiter by chance.
    public static func randomBoundary() -> String {
        "pipehook-" + Crypto.randomBytes(12).hexString
    }

    public var contentType: String { "multipart/form-data; boundary=\(boundary)" }

    /// The last path component, made safe for a quoted header parameter: `"`, `\\` and control
    /// characters become `_`, so a name can neither end the parameter nor start a new header line
    /// (a CR LF in a name injected headers; found by Fuzz/, event_document). Empty becomes `file`.
    static func fileName(_ path: String) -> String {
        let last = DownloadPath.lastComponent(path)
        let safe = String(String.UnicodeScalarView(last.unicodeScalars.map { scalar -> Unicode.Scalar in
            (scalar.value < 0x20 || scalar.value == 0x7F || scalar == "\"" || scalar == "\\") ? "_" : scalar
        }))
        return safe.isEmpty ? "file" : safe
    }
}
