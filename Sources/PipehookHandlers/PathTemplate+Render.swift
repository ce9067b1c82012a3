import Foundation
import PipehookSettings

extension PathTemplate {
    /// Renders the template to a path relative to the download directory.
    ///
    /// Every substituted value is sanitised with `DownloadPath.sanitize(_:)` (no `/`, no NUL or
    /// control characters, no leading dot, length-capped), so a value can never add a folder level
    /// or climb out of the directory. Literal parts may contain `/` to make folders; after
    /// substitution every path component is normalised once more: empty and `.` components are
    /// dropped, a `..` component becomes `__`, and each component is capped at 255 bytes.
    ///
    /// `date` supplies `{yyyy}`, `{mm}`, `{dd}` in UTC. The download step passes the event's
    /// `received_at`, so every attempt of a job renders the same path.
    public func render(document: EventDocument, ext: String, date: Date) -> String {
        let (year, month, day) = DownloadPath.utcDay(date)
        var text = ""
        for piece in pieces {
            switch piece {
            case .literal(let literal):
                text += literal
            case .placeholder(let name):
                switch name {
                case "generation_id": text += DownloadPath.sanitize(document.generationID)
                case "source": text += DownloadPath.sanitize(document.source)
                case "status": text += DownloadPath.sanitize(document.status.rawValue)
                case "yyyy": text += year
                case "mm": text += month
                case "dd": text += day
                case "ext": text += DownloadPath.sanitizeExtension(ext) ?? DownloadPath.defaultExtension
                default: text += "_"  // PathTemplate rejects unknown names at load time.
                }
            }
        }
        return DownloadPath.normalizeRelative(text)
    }
}

/// Pure helpers for where a download lands. Everything here is deterministic and table-tested.
public enum DownloadPath {
    /// A substituted value longer than this (UTF-8 bytes) is truncated.
    public static let maxValueBytes = 100
    /// The usual file-name limit (ext4, XFS, APFS).
    public static let maxComponentBytes = 255
    public static let defaultExtension = "mp4"

    /// Makes one substituted value safe to use inside a single path component.
    ///
    /// Letters and digits (Unicode included) and `-`, `_`, `.`, `+`, `=`, `@`, `,`, `~` are kept;
    /// everything else (`/`, `\`, NUL, control and format characters, spaces, quotes …) becomes
    /// `_`. Leading dots become `_` (no hidden files, no `.`/`..`). Empty becomes `_`.
    public static func sanitize(_ value: String) -> String {
        var out = ""
        var bytes = 0
        for character in value {
            let safe: Character
            if character.isASCII {
                if character.isLetter || character.isNumber || "-_.+=@,~".contains(character) {
                    safe = character
                } else {
                    safe = "_"
                }
            } else if character.unicodeScalars.allSatisfy({ isSafeScalar($0) }) {
                safe = character
            } else {
                safe = "_"
            }
            let length = safe.utf8.count
            if bytes + length > maxValueBytes { break }
            out.append(safe)
            bytes += length
        }
        // No leading dots: ".hidden" → "_hidden", ".." → "__".
        var result = ""
        var leading = true
        for character in out {
            if leading && character == "." {
                result.append("_")
            } else {
                leading = false
                result.append(character)
            }
        }
        return result.isEmpty ? "_" : result
    }

    private static func isSafeScalar(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
            .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return false
        }
    }

    /// `mp4` from `MP4`; nil unless 1…8 ASCII letters or digits.
    public static func sanitizeExtension(_ ext: String) -> String? {
        let lower = ext.lowercased()
        guard (1...8).contains(lower.utf8.count),
            lower.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7a) })
        else { return nil }
        return lower
    }

    /// The `{ext}` value: the URL path's extension when it is 1…8 letters/digits, else one derived
    /// from the Content-Type, else `mp4`.
    public static func fileExtension(urlPath: String, contentType: String?) -> String {
        let lastComponent = urlPath.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? ""
        if let dot = lastComponent.lastIndex(of: "."),
            let ext = sanitizeExtension(String(lastComponent[lastComponent.index(after: dot)...]))
        {
            return ext
        }
        if let contentType {
            let mime = contentType.split(separator: ";").first.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            } ?? ""
            let known: [String: String] = [
                "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov",
                "video/x-matroska": "mkv", "video/mpeg": "mpg", "video/ogg": "ogv",
                "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
                "audio/mpeg": "mp3", "audio/mp4": "m4a", "audio/wav": "wav",
            ]
            if let ext = known[mime] { return ext }
        }
        return defaultExtension
    }

    /// Normalises a rendered relative path: drops empty and `.` components, turns `..` into `__`,
    /// replaces NUL/control characters that a literal may contain, caps every component.
    ///
    /// Works on Unicode scalars, never on Characters: the file system splits at every `/` byte,
    /// while a `/` followed by a combining mark is one Character (`"/\u{301}"`) that a Character
    /// split would not cut, so `../\u{301}x` would keep a `..` component.
    public static func normalizeRelative(_ path: String) -> String {
        var components: [String] = []
        for raw in path.unicodeScalars.split(separator: "/", omittingEmptySubsequences: true) {
            var scalars = String.UnicodeScalarView(raw.map { scalar -> Unicode.Scalar in
                (scalar.value < 0x20 || scalar.value == 0x7f || scalar == "\\") ? "_" : scalar
            })
            if scalars.elementsEqual(".".unicodeScalars) { continue }
            if scalars.elementsEqual("..".unicodeScalars) { scalars = "__".unicodeScalars }
            components.append(capComponent(String(scalars)))
        }
        return components.isEmpty ? "_" : components.joined(separator: "/")
    }

    /// Shortens a component to `maxComponentBytes` UTF-8 bytes, keeping a short extension (a dot
    /// and at most 9 scalars) at the end. Counted in scalars: one Character can be any number of
    /// bytes (a letter with combining marks), so a Character-based cap can overshoot.
    static func capComponent(_ component: String) -> String {
        guard component.utf8.count > maxComponentBytes else { return component }
        let scalars = Array(component.unicodeScalars)
        var suffix: ArraySlice<Unicode.Scalar> = []
        if let dot = scalars.lastIndex(of: "."), scalars.count - dot <= 10 {
            suffix = scalars[dot...]
        }
        let suffixBytes = suffix.reduce(0) { $0 + UTF8.width($1) }
        var out = String.UnicodeScalarView()
        var bytes = 0
        for scalar in scalars {
            let length = UTF8.width(scalar)
            if bytes + length + suffixBytes > maxComponentBytes { break }
            out.append(scalar)
            bytes += length
        }
        out.append(contentsOf: suffix)
        return String(out)
    }

    /// The absolute, standardised destination for `relative` under `directory`, or nil when it
    /// would not be strictly inside `directory` (the last line of defence after sanitising).
    /// A relative `directory` is taken relative to the current working directory.
    public static func resolve(relative: String, in directory: String) -> String? {
        guard !relative.utf8.contains(0), !directory.utf8.contains(0), !directory.isEmpty else { return nil }
        let base = URL(fileURLWithPath: directory, isDirectory: true).standardizedFileURL.path
        let full = URL(fileURLWithPath: base, isDirectory: true)
            .appendingPathComponent(relative, isDirectory: false)
            .standardizedFileURL.path
        // Compared as UTF-8 bytes, as the file system does: as Characters, "/srv/v/\u{301}x" does not
        // start with "/srv/v/" (the slash and the mark are one Character).
        let prefix = Array((base.hasSuffix("/") ? base : base + "/").utf8)
        let fullBytes = Array(full.utf8)
        guard fullBytes.starts(with: prefix), fullBytes.count > prefix.count else { return nil }
        let components = fullBytes.split(separator: UInt8(ascii: "/"))
        guard !components.contains(where: { $0.elementsEqual([0x2e, 0x2e]) || $0.elementsEqual([0x2e]) }) else { return nil }
        return full
    }

    /// The last non-empty `/`-separated component of `path` ("" for "/" or ""), split on scalars.
    ///
    /// Instead of `NSString.lastPathComponent`, which traps in swift-corelibs-foundation (6.3.1)
    /// when a doubled slash precedes a non-ASCII character: `("a//é" as NSString).lastPathComponent`
    /// ends the process (found by Fuzz/, event_document).
    public static func lastComponent(_ path: String) -> String {
        guard let last = path.unicodeScalars.split(separator: "/").last else { return "" }
        return String(String.UnicodeScalarView(last))
    }

    /// The standardised absolute form of a download directory.
    public static func standardizedDirectory(_ directory: String) -> String {
        URL(fileURLWithPath: directory, isDirectory: true).standardizedFileURL.path
    }

    static func utcDay(_ date: Date) -> (String, String, String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day], from: date)
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return (pad(parts.year ?? 1970, 4), pad(parts.month ?? 1, 2), pad(parts.day ?? 1, 2))
    }
}
