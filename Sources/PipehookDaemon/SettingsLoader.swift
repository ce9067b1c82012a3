import Foundation
import PipehookSettings
import PipehookSignature

/// Finds and loads the configuration the same way for every command (SPEC §6, §8).
public enum SettingsLoader {
    public static let defaultPath = "pipehook.yaml"
    public static let secretFileName = "webhook-secret"

    public enum Origin: Sendable, Equatable {
        case file(String)
        /// No file: built-in defaults. `generatedSecretPath` is set when this run created the secret.
        case builtInDefaults(secretFrom: String, generatedSecretPath: String?)
    }

    public struct Loaded: Sendable {
        public var settings: Settings
        public var origin: Origin
    }

    /// - Parameter createSecret: with no file and no `PIPEHOOK_SECRET`, generate and save one
    ///   (only `serve` does; read-only commands never write).
    public static func load(
        configPath: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        createSecret: Bool
    ) throws(ConfigError) -> Loaded {
        let path = configPath ?? defaultPath
        if configPath != nil || FileManager.default.fileExists(atPath: path) {
            // Relative paths resolve against the working directory, like the defaults.
            let settings = try SettingsParser.parse(yaml: try text(path), environment: environment)
            return Loaded(settings: settings, origin: .file(path))
        }
        return try builtInDefaults(environment: environment, createSecret: createSecret)
    }

    /// Only what locates the store, for commands that read it (`status`, `generations`, `jobs`):
    /// the file's `data_dir`/`store`/`store_timeout`, or the built-in defaults' store when there
    /// is no file. Secrets are neither needed nor read.
    public static func loadStore(
        configPath: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> StoreSettings {
        let path = configPath ?? defaultPath
        guard configPath != nil || FileManager.default.fileExists(atPath: path) else {
            return SettingsParser.builtInDefaults(secret: SigningSecret(key: [0])).storeSettings
        }
        return try SettingsParser.parseStore(yaml: try text(path), environment: environment)
    }

    /// The configuration file's text.
    static func text(_ path: String) throws(ConfigError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError([ConfigProblem(path: "", message: "cannot read configuration file \(path)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError([ConfigProblem(path: "", message: "\(path) is not UTF-8 text")])
        }
        return text
    }

    static func builtInDefaults(environment: [String: String], createSecret: Bool) throws(ConfigError) -> Loaded {
        if let text = environment["PIPEHOOK_SECRET"], !text.isEmpty {
            do {
                let secret = try SigningSecret(text)
                return Loaded(settings: SettingsParser.builtInDefaults(secret: secret), origin: .builtInDefaults(secretFrom: "PIPEHOOK_SECRET", generatedSecretPath: nil))
            } catch {
                throw ConfigError([ConfigProblem(path: "PIPEHOOK_SECRET", message: "is not a whsec_ secret (base64 after the whsec_ prefix)")])
            }
        }
        let dataDir = SettingsParser.builtInDefaults(secret: SigningSecret(key: [0])).dataDir
        let secretPath = dataDir + "/" + secretFileName
        if let data = FileManager.default.contents(atPath: secretPath),
           let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines)
        {
            do {
                let secret = try SigningSecret(text)
                return Loaded(settings: SettingsParser.builtInDefaults(secret: secret), origin: .builtInDefaults(secretFrom: secretPath, generatedSecretPath: nil))
            } catch {
                throw ConfigError([ConfigProblem(path: secretPath, message: "does not hold a whsec_ secret; delete it to generate a new one")])
            }
        }
        guard createSecret else {
            throw ConfigError([ConfigProblem(
                path: "",
                message: "no \(defaultPath), no PIPEHOOK_SECRET and no \(secretPath): run `pipehook serve` once, or pass --config"
            )])
        }
        let text = SigningSecret.generate()
        do {
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
            try AtomicFile.write(Array((text + "\n").utf8), to: secretPath, permissions: 0o600)
        } catch {
            throw ConfigError([ConfigProblem(path: secretPath, message: "cannot save the generated secret: \(error)")])
        }
        let secret = try! SigningSecret(text)
        return Loaded(settings: SettingsParser.builtInDefaults(secret: secret), origin: .builtInDefaults(secretFrom: secretPath, generatedSecretPath: secretPath))
    }
}

/// Writes a file completely or not at all: temp file, fsync, rename, fsync the folder.
public enum AtomicFile {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func write(_ bytes: [UInt8], to path: String, permissions: mode_t = 0o644) throws {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, permissions)
        guard fd >= 0 else { throw Failure(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var ok = true
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0, errno == EINTR { continue }
                if written <= 0 { ok = false; return }
                offset += written
            }
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        let directory = (path as NSString).deletingLastPathComponent
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY)
        if dirFD >= 0 {
            fsync(dirFD)
            close(dirFD)
        }
    }
}
