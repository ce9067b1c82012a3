import Foundation
import Testing

/// What the package test needs from this machine: root (it installs and purges a system package
/// and creates the system user pipehook), dpkg-deb and systemd-analyze. Without them the test is
/// skipped locally and fails on CI (`CI` set), like the PostgreSQL suites.
enum PackageHost {
    /// The repository root: this file is `Tests/PipehookIntegrationTests/PackageTests.swift`.
    static let repository: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static let onCI: Bool = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty && $0 != "false" && $0 != "0" } ?? false

    static let searchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    static let missingTools: [String] = ["dpkg", "dpkg-deb", "systemd-analyze", "setpriv", "strip", "objdump"].filter { tool in
        !searchPath.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
    }

    /// Every reason the test cannot run here (empty: it can).
    static let problems: [String] = {
        var problems: [String] = []
        if getuid() != 0 { problems.append("not running as root") }
        if !missingTools.isEmpty { problems.append("missing \(missingTools.joined(separator: ", "))") }
        return problems
    }()

    /// test-deb.sh purges an installed pipehook first (with its configuration and state): never
    /// on a developer's machine that has one, only on CI, where nothing real is installed.
    static let spareInstalledPackage: Bool = onCI
        || !["list", "postrm"].contains { FileManager.default.fileExists(atPath: "/var/lib/dpkg/info/pipehook.\($0)") }
}

/// Issue 12: the Debian package. `Packaging/build-deb.sh --binary` packages the binary these
/// tests were built with; `Packaging/test-deb.sh` installs it, checks the user, folders, modes,
/// conffile, configuration and unit (verify, security exposure), runs the daemon briefly as its
/// user, purges the package and checks that nothing it made is left.
@Suite(.serialized) struct PackageTests {
    @Test(
        .enabled(if: PackageHost.problems.isEmpty, "needs root, dpkg-deb and systemd-analyze"),
        .enabled(if: PackageHost.spareInstalledPackage, "a pipehook package is installed here and the test would purge it"),
        .timeLimit(.minutes(2))
    )
    func packageInstallsRunsAndPurgesCleanly() async throws {
        let dir = TempDir()
        let packaging = PackageHost.repository + "/Packaging"
        // No compression: the debug binary is large, and only the contents are under test.
        let built = try await Self.run([packaging + "/build-deb.sh", "--binary", Binary.path, "--out", dir.path, "--compression", "none"], in: dir)
        try #require(built.code == 0, "build-deb.sh exited \(built.code)\nstdout:\n\(built.stdout)\nstderr:\n\(built.stderr)")
        let deb = built.stdout.split(separator: "\n").last.map(String.init) ?? ""
        try #require(deb.hasSuffix(".deb") && FileManager.default.fileExists(atPath: deb), "build-deb.sh named no package: \(built.stdout)")

        let tested = try await Self.run([packaging + "/test-deb.sh", deb], in: dir)
        #expect(tested.code == 0, "test-deb.sh exited \(tested.code)\nstdout:\n\(tested.stdout)\nstderr:\n\(tested.stderr)")
        #expect(tested.stdout.contains("all checks passed"), "stdout:\n\(tested.stdout)")
    }

    /// On CI a machine that cannot run the package test must not pass as "nothing to test".
    @Test(.enabled(if: PackageHost.onCI && !PackageHost.problems.isEmpty))
    func packageTestRunsOnCI() {
        Issue.record("CI is set but the package test cannot run: \(PackageHost.problems.joined(separator: "; ")). .ci/run runs as root and installs systemd (systemd-analyze).")
    }

    /// Runs a command from the repository root to completion, its output captured in files (a
    /// pipe nobody reads would stall it once full).
    static func run(_ arguments: [String], in dir: TempDir) async throws -> (code: Int32, stdout: String, stderr: String) {
        let id = UUID().uuidString
        let stdoutPath = dir.path + "/stdout-\(id).log"
        let stderrPath = dir.path + "/stderr-\(id).log"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        let stdout = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        let stderr = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        defer {
            try? stdout.close()
            try? stderr.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: PackageHost.repository)
        process.environment = ["PATH": PackageHost.searchPath, "HOME": dir.path, "LANG": "C.UTF-8"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        while process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        let output = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        return (process.terminationStatus, output(stdoutPath), output(stderrPath))
    }
}
