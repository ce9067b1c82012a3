import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process groups of running exec steps, one small file each (`<directory>/<pid>`).
///
/// A step runs in its own session so a timeout can end its whole group; the price is that a
/// daemon killed with SIGKILL leaves the group running, and after the restart the step runs
/// again beside it. At start the daemon ends what the ledger lists. A file is enough: it
/// outlives a killed process, and a power loss takes the groups down with it.
public struct StepProcessLedger: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    /// Plain open/write/close: this runs for every exec step, and Foundation's `createFile`
    /// (temporary file, rename, attribute calls) was most of a step's cost in the daemon.
    func record(pid: pid_t) {
        guard let start = Self.startTime(pid: pid) else { return }
        let path = "\(directory)/\(pid)"
        var fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0, errno == ENOENT {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        }
        guard fd >= 0 else { return }
        var text = "\(start)\n"
        _ = text.withUTF8 { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    func remove(pid: pid_t) {
        unlink("\(directory)/\(pid)")
    }

    /// Ends every group a previous run left behind; returns their ids. A listed group is
    /// signalled only if its leader is the process that was recorded, or is gone (then only
    /// members of that old group can still hold the id: a group id is not reused while the
    /// group has members).
    public func killLeftovers() -> [Int32] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var killed: [Int32] = []
        for name in names {
            let path = "\(directory)/\(name)"
            defer { unlink(path) }
            guard let pid = pid_t(name), pid > 1,
                let recorded = (try? String(contentsOfFile: path, encoding: .utf8)).flatMap({ UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
            else { continue }
            if let current = Self.startTime(pid: pid), current != recorded { continue }  // the pid was reused
            if kill(-pid, SIGKILL) == 0 { killed.append(pid) }
        }
        return killed.sorted()
    }

    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot; with the pid it
    /// names one process for the machine's uptime.
    static func startTime(pid: pid_t) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)" come fields 3…; the start time is field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }
}
