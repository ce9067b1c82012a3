/// Values that go into log lines. Sender-controlled text (a delivery id may be 64 KB) is clipped so
/// one request cannot write one huge line.
public enum LogText {
    /// Identifiers are clipped to this many UTF-8 bytes (a generation id is at most 256 by format).
    public static let identifierLimit = 128
    public static let clippedMarker = "…[clipped]"

    /// `text` when it fits `maxBytes`, else its head (cut between scalars) followed by
    /// `clippedMarker` (the marker is not counted in `maxBytes`).
    public static func clip(_ text: String, maxBytes: Int = identifierLimit) -> String {
        guard text.utf8.count > maxBytes else { return text }
        var head = String.UnicodeScalarView()
        var bytes = 0
        for scalar in text.unicodeScalars {
            let width = UTF8.width(scalar)
            if bytes + width > maxBytes { break }
            head.append(scalar)
            bytes += width
        }
        return String(head) + clippedMarker
    }
}
