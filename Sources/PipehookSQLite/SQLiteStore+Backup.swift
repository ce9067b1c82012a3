import Foundation
import GRDB
import PipehookStore

extension SQLiteStore {
    /// `pipehook backup FILE`: a consistent copy of the store while the daemon keeps running,
    /// through SQLite's online backup API from one read snapshot (writers are not blocked: WAL).
    ///
    /// The copy is written next to `file`, made a single self-contained file (journal mode
    /// DELETE, no `-wal` beside it), fsynced and renamed into place, so `file` is either absent or
    /// whole. An existing `file` is never overwritten. Returns the copy's size in bytes.
    public func backup(to file: String) throws(StoreError) -> Int64 {
        guard !FileManager.default.fileExists(atPath: file) else {
            throw StoreError(.invalid, "\(file) exists already; pipehook backup never overwrites a file")
        }
        let partial = file + ".partial-\(getpid())"
        do {
            try Self.copy(from: pool, to: partial)
            try Self.syncFile(partial)
            guard rename(partial, file) == 0 else {
                throw StoreError(.unavailable, "cannot move the backup into place at \(file): \(String(cString: strerror(errno)))")
            }
            Self.syncFolder(of: file)
        } catch {
            for suffix in ["", "-wal", "-shm", "-journal"] { unlink(partial + suffix) }
            if let error = error as? StoreError { throw error }
            throw StoreError(.unavailable, "cannot write the backup \(file): \(Self.describe(error))")
        }
        var info = stat()
        return stat(file, &info) == 0 ? Int64(info.st_size) : 0
    }

    private static func copy(from pool: DatabasePool, to path: String) throws {
        let destination = try DatabaseQueue(path: path)
        try pool.backup(to: destination)
        try destination.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA journal_mode = DELETE")
            let check = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "no answer"
            guard check == "ok" else { throw StoreError(.unavailable, "the copy failed its integrity check: \(check)") }
        }
        try destination.close()
    }

    private static func syncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError(.unavailable, "cannot open \(path) to sync it") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StoreError(.unavailable, "cannot sync \(path): \(String(cString: strerror(errno)))") }
    }

    private static func syncFolder(of path: String) {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}
