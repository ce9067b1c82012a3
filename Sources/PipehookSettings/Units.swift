/// Durations and byte sizes as written in the configuration: `150ms`, `5m`, `1h30m`, `7d`;
/// `1048576`, `512KiB`, `4GiB`, `10MB`. Pure parsing, no Foundation.
public enum Units {
    /// Parses a duration into milliseconds. A bare integer means seconds.
    public static func milliseconds(_ text: String) -> Int64? {
        let trimmed = text.filter { $0 != " " }
        guard !trimmed.isEmpty else { return nil }
        if let seconds = Int64(trimmed), seconds >= 0 { return seconds.multipliedReportingOverflow(by: 1000).overflow ? nil : seconds * 1000 }
        var total: Int64 = 0
        var rest = Substring(trimmed)
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let value = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            rest = rest.dropFirst(unit.count)
            let factor: Int64
            switch unit {
            case "ms": factor = 1
            case "s": factor = 1000
            case "m": factor = 60_000
            case "h": factor = 3_600_000
            case "d": factor = 86_400_000
            case "w": factor = 604_800_000
            default: return nil
            }
            let (product, overflow) = value.multipliedReportingOverflow(by: factor)
            guard !overflow else { return nil }
            let (sum, overflow2) = total.addingReportingOverflow(product)
            guard !overflow2 else { return nil }
            total = sum
        }
        return total
    }

    /// Parses a size into bytes. SI (`KB` = 1000) and IEC (`KiB` = 1024) units; bare = bytes.
    public static func bytes(_ text: String) -> Int64? {
        let trimmed = text.filter { $0 != " " }
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let value = Int64(digits) else { return nil }
        let factor: Int64
        switch trimmed.dropFirst(digits.count).lowercased() {
        case "", "b": factor = 1
        case "kb", "k": factor = 1000
        case "mb", "m": factor = 1000 * 1000
        case "gb", "g": factor = 1000 * 1000 * 1000
        case "tb", "t": factor = 1000 * 1000 * 1000 * 1000
        case "kib": factor = 1 << 10
        case "mib": factor = 1 << 20
        case "gib": factor = 1 << 30
        case "tib": factor = 1 << 40
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: factor)
        return overflow ? nil : product
    }
}

/// Replaces `${NAME}` with the variable's value; `$$` stands for a literal `$`.
public enum EnvSubstitution {
    public enum Failure: Error, Equatable, Sendable {
        case missing(String)
        case unterminated
        case invalidName(String)
    }

    public static func apply(_ text: String, environment: [String: String]) -> Result<String, Failure> {
        guard text.contains("$") else { return .success(text) }
        var out = ""
        var index = text.startIndex
        while index < text.endIndex {
            let char = text[index]
            guard char == "$" else {
                out.append(char)
                index = text.index(after: index)
                continue
            }
            let next = text.index(after: index)
            if next < text.endIndex, text[next] == "$" {
                out.append("$")
                index = text.index(after: next)
            } else if next < text.endIndex, text[next] == "{" {
                guard let close = text[next...].firstIndex(of: "}") else { return .failure(.unterminated) }
                let name = String(text[text.index(after: next)..<close])
                guard isValidName(name) else { return .failure(.invalidName(name)) }
                guard let value = environment[name] else { return .failure(.missing(name)) }
                out += value
                index = text.index(after: close)
            } else {
                out.append("$")
                index = next
            }
        }
        return .success(out)
    }

    static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else {
            return false
        }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }
}
