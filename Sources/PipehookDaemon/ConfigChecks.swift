import Foundation
import PipehookSettings

/// What `check-config` looks at beyond the file itself: things that parse but would only fail
/// later, at the first event (a handler that is missing, an archive folder that cannot be
/// written). The parser stays pure; these read the machine, as the user running the check.
public enum ConfigChecks {
    /// Every problem found, each with the key path of the value that causes it.
    public static func machineProblems(
        _ settings: Settings, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> [ConfigProblem] {
        var problems: [ConfigProblem] = []
        if let message = folderProblem(settings.dataDir) {
            problems.append(ConfigProblem(path: "data_dir", message: message))
        }
        for (routeIndex, route) in settings.routes.enumerated() {
            for (stepIndex, step) in route.steps.enumerated() {
                let path = "routes[\(routeIndex)].steps[\(stepIndex)]"
                switch step.action {
                case .exec(let exec):
                    if let message = executableProblem(exec.command[0], searchPath: environment["PATH"]) {
                        problems.append(ConfigProblem(path: path + ".exec.command[0]", message: message))
                    }
                case .download(let download):
                    if let message = folderProblem(download.directory) {
                        problems.append(ConfigProblem(path: path + ".download.dir", message: message))
                    }
                case .post:
                    break
                }
            }
        }
        return problems
    }

    /// Why `name` would not start, found the way the exec runner finds it: a path (with a `/`)
    /// relative to the working directory, or a name searched in `PATH`.
    static func executableProblem(_ name: String, searchPath: String?) -> String? {
        guard !name.contains("/") else { return fileProblem(name, shownAs: name) }
        let folders = (searchPath ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        for folder in folders where !folder.isEmpty {
            let candidate = folder + "/" + name
            if fileProblem(candidate, shownAs: candidate) == nil { return nil }
        }
        return "command not found: \(name) is in no folder of PATH (\(searchPath ?? "unset"))"
    }

    private static func fileProblem(_ path: String, shownAs: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "command not found: no file at \(shownAs)" }
        guard info.st_mode & S_IFMT == S_IFREG else { return "command is not a regular file: \(shownAs)" }
        guard access(path, X_OK) == 0 else { return "command is not executable by \(userName()): \(shownAs) (chmod +x?)" }
        return nil
    }

    /// Why a folder could not be created or written: it exists and is no folder or is not
    /// writable, or the nearest folder that exists above it is not writable.
    static func folderProblem(_ folder: String) -> String? {
        var path = folder
        var info = stat()
        while stat(path, &info) != 0 {
            let parent = (path as NSString).deletingLastPathComponent
            if parent == path || parent.isEmpty {
                path = path.hasPrefix("/") ? "/" : "."
                guard stat(path, &info) == 0 else { return "cannot find any folder above \(folder)" }
                break
            }
            path = parent
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            return path == folder ? "\(folder) is not a folder" : "cannot create \(folder): \(path) is not a folder"
        }
        guard access(path, W_OK | X_OK) == 0 else {
            return path == folder
                ? "\(folder) is not writable by \(userName())"
                : "cannot create \(folder): \(path) is not writable by \(userName())"
        }
        return nil
    }

    /// Checks run as whoever runs `check-config`, which may not be the daemon's user: say who.
    static func userName() -> String {
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return "user \(String(cString: name))" }
        return "uid \(geteuid())"
    }
}
