import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process groups of running exec steps, in one append-only journal
/// (`<directory>/running`: `+PID START` when a step's group starts, `-PID` when it ended).
///
/// A step runs in its own session so a timeout can end its whole group; the price is that a
/// daemon killed with SIGKILL leaves the group running, and after the restart the step runs
/// again beside it. At start the daemon ends what the journal lists as running. A file is
/// enough: it outlives a killed process, and a power loss takes the groups down with it.
///
/// One `write(2)` per step start and end on a file kept open: a file created and unlinked per
/// step (the previous layout, still read at start) cost two metadata updates of the folder each.
/// The journal is rewritten with only the live entries once it passes `compactAfterBytes`.
/// A ledger owns its journal: one per data folder and process.
public final class StepProcessLedger: Sendable {
    public let directory: String
    static let journalName = "running"
    /// Past this size the journal is rewritten with only the live entries.
    let compactAfterBytes: Int

    private struct State {
        var fd: Int32 = -1
        var bytes = 0
        var live: [pid_t: UInt64] = [:]
    }

    private let state = Mutex(State())

    public init(directory: String, compactAfterBytes: Int = 1 << 20) {
        self.directory = directory
        self.compactAfterBytes = compactAfterBytes
    }

    deinit {
        state.withLock { state in
            if state.fd >= 0 { close(state.fd) }
        }
    }

    public var journalPath: String { directory + "/" + Self.journalName }

    func record(pid: pid_t) {
        guard let start = Self.startTime(pid: pid) else { return }
        state.withLock { state in
            state.live[pid] = start
            append("+\(pid) \(start)\n", to: &state)
        }
    }

    func remove(pid: pid_t) {
        state.withLock { state in
            guard state.live.removeValue(forKey: pid) != nil else { return }
            append("-\(pid)\n", to: &state)
            if state.bytes > compactAfterBytes { compact(&state) }
        }
    }

    private func append(_ line: String, to state: inout State) {
        if state.fd < 0 { openJournal(&state) }
        guard state.fd >= 0 else { return }
        var line = line
        let written = line.withUTF8 { write(state.fd, $0.baseAddress, $0.count) }
        if written > 0 { state.bytes += written }
    }

    private func openJournal(_ state: inout State) {
        var fd = Foundation.open(journalPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0, errno == ENOENT {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            fd = Foundation.open(journalPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        }
        state.fd = fd
        var info = stat()
        state.bytes = fd >= 0 && fstat(fd, &info) == 0 ? Int(info.st_size) : 0
    }

    /// Only the live entries, written beside the journal and renamed over it.
    private func compact(_ state: inout State) {
        let temporary = journalPath + ".tmp"
        let fd = Foundation.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        var text = state.live.map { "+\($0.key) \($0.value)\n" }.joined()
        let complete = text.withUTF8 { bytes in write(fd, bytes.baseAddress, bytes.count) == bytes.count }
        close(fd)
        guard complete, rename(temporary, journalPath) == 0 else {
            unlink(temporary)
            return
        }
        if state.fd >= 0 { close(state.fd) }
        state.fd = -1
        openJournal(&state)
    }

    /// What the journal (and any per-pid file of the previous layout) lists as running: pid →
    /// start time.
    public func listed() -> [pid_t: UInt64] {
        var running: [pid_t: UInt64] = [:]
        if let text = try? String(contentsOfFile: journalPath, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                if line.hasPrefix("+") {
                    let fields = line.dropFirst().split(separator: " ")
                    if fields.count == 2, let pid = pid_t(fields[0]), let start = UInt64(fields[1]) { running[pid] = start }
                } else if line.hasPrefix("-"), let pid = pid_t(line.dropFirst()) {
                    running.removeValue(forKey: pid)
                }
            }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let pid = pid_t(name),
                let recorded = (try? String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8))
                    .flatMap({ UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
            else { continue }
            running[pid] = recorded
        }
        return running
    }

    /// Ends every group a previous run left behind; returns their ids, and empties the journal.
    /// A listed group is signalled only if its leader is the process that was recorded, or is
    /// gone (then only members of that old group can still hold the id: a group id is not
    /// reused while the group has members).
    public func killLeftovers() -> [Int32] {
        var killed: [Int32] = []
        for (pid, recorded) in listed() where pid > 1 {
            if let current = Self.startTime(pid: pid), current != recorded { continue }  // the pid was reused
            if kill(-pid, SIGKILL) == 0 { killed.append(pid) }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            unlink("\(directory)/\(name)")
        }
        state.withLock { state in
            if state.fd >= 0 { close(state.fd) }
            state = State()
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
