import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import PipehookHTTP
import PipehookSettings
import Synchronization

/// The certificate chain and key that new TLS handshakes use. A `SIGHUP` that reads a valid pair
/// replaces both at once (a handshake sees the old pair or the new one, never a mix); connections
/// already open keep theirs.
public final class TLSCredentials: Sendable {
    public struct Pair: Sendable {
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
    }

    private let pair: Mutex<Pair>

    init(_ pair: Pair) { self.pair = Mutex(pair) }

    func replace(_ next: Pair) { pair.withLock { $0 = next } }

    var current: Pair { pair.withLock { $0 } }

    /// Asked once per client hello.
    var override: NIOSSLContextConfigurationOverride {
        let current = self.current
        var override = NIOSSLContextConfigurationOverride()
        override.certificateChain = current.chain.map { .certificate($0) }
        override.privateKey = .privateKey(current.key)
        return override
    }
}

extension Daemon {
    /// The HTTP/1.1 server builder: plain, or TLS when `settings.tls` is set.
    ///
    /// The certificate and key are loaded and checked here, before the listener opens, so a bad
    /// `tls` block stops `serve` with a message naming `tls.cert` / `tls.key` and the path.
    /// Messages never contain key material.
    public static func serverBuilder(settings: Settings) throws -> HTTPServerBuilder {
        try serverBuilder(settings: settings, credentials: nil)
    }

    /// As above; with TLS, the handshakes take their pair from `credentials` (when given), so a
    /// reload can replace it without reopening the listener.
    static func serverBuilder(settings: Settings, credentials: TLSCredentials?) throws -> HTTPServerBuilder {
        // The read timeout lives in the inner HTTP/1 channel, so it applies under TLS as well.
        let http1 = HTTPRoutes.server(limits: settings.connectionLimits)
        guard let tls = settings.tls else { return http1 }
        // The files are read once: from the credentials the daemon already loaded, if given.
        var configuration = serverConfiguration(try credentials?.current ?? tlsPair(tls))
        if let credentials {
            configuration.sslContextCallback = { _, promise in promise.succeed(credentials.override) }
        }
        return try .tls(http1, tlsConfiguration: configuration)
    }

    /// Loads and checks the `tls` files without opening a listener (for `check-config`).
    public static func validateTLS(_ tls: TLSFiles) throws {
        _ = try tlsPair(tls)
    }

    /// Server TLS configuration (TLS 1.2 minimum) from the PEM files, with every problem reported
    /// as a `CommandFailure`.
    static func tlsConfiguration(_ tls: TLSFiles) throws -> TLSConfiguration {
        serverConfiguration(try tlsPair(tls))
    }

    private static func serverConfiguration(_ pair: TLSCredentials.Pair) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: pair.chain.map { .certificate($0) },
            privateKey: .privateKey(pair.key)
        )
        configuration.minimumTLSVersion = .tlsv12
        return configuration
    }

    /// The chain and key from the PEM files, checked to belong together.
    static func tlsPair(_ tls: TLSFiles) throws -> TLSCredentials.Pair {
        let pair = TLSCredentials.Pair(chain: try loadCertificateChain(tls.certificatePath), key: try loadPrivateKey(tls.keyPath))
        // Building a context is what makes BoringSSL check that the key belongs to the leaf
        // certificate (and that the key type is usable); do it now rather than at first bind.
        do {
            _ = try NIOSSLContext(configuration: serverConfiguration(pair))
        } catch {
            throw CommandFailure(
                "tls.key: the private key in \(tls.keyPath) does not match the certificate in \(tls.certificatePath) (tls.cert)"
            )
        }
        return pair
    }

    private static func loadCertificateChain(_ path: String) throws -> [NIOSSLCertificate] {
        let bytes = try readPEMFile(path, key: "tls.cert")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(bytes)
        } catch {
            let hint = PEMText.containsPrivateKey(bytes)
                ? "; it holds a private key: are tls.cert and tls.key swapped?"
                : ""
            throw CommandFailure(
                "tls.cert: \(path) is not a valid PEM certificate chain (expected -----BEGIN CERTIFICATE-----)\(hint)"
            )
        }
        guard !chain.isEmpty else {
            throw CommandFailure("tls.cert: \(path) holds no certificate (expected -----BEGIN CERTIFICATE-----)")
        }
        return chain
    }

    private static func loadPrivateKey(_ path: String) throws -> NIOSSLPrivateKey {
        let bytes = try readPEMFile(path, key: "tls.key")
        if PEMText.isEncrypted(bytes) {
            throw CommandFailure(
                "tls.key: the private key in \(path) is encrypted; pipehook needs an unencrypted PEM key (protect it with file permissions instead)"
            )
        }
        do {
            // A passphrase callback that supplies nothing: BoringSSL's default would prompt on the
            // terminal, which a daemon must never do.
            return try NIOSSLPrivateKey(bytes: bytes, format: .pem) { (_: NIOSSLPassphraseSetter<[UInt8]>) in }
        } catch {
            throw CommandFailure(
                "tls.key: \(path) is not a valid PEM private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key block)"
            )
        }
    }

    /// The file's bytes, or a `CommandFailure` saying why they could not be read.
    private static func readPEMFile(_ path: String, key: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CommandFailure("\(key): no file at \(path)")
        }
        guard !isDirectory.boolValue else {
            throw CommandFailure("\(key): \(path) is a directory, not a PEM file")
        }
        guard FileManager.default.isReadableFile(atPath: path),
              let data = FileManager.default.contents(atPath: path)
        else {
            throw CommandFailure("\(key): cannot read \(path) (permission denied?)")
        }
        guard !data.isEmpty else {
            throw CommandFailure("\(key): \(path) is empty")
        }
        return Array(data)
    }
}

/// Cheap looks at PEM text for better messages; never echoed back.
private enum PEMText {
    static func isEncrypted(_ bytes: [UInt8]) -> Bool {
        contains(bytes, "-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(bytes, "Proc-Type: 4,ENCRYPTED")
    }

    static func containsPrivateKey(_ bytes: [UInt8]) -> Bool {
        contains(bytes, "PRIVATE KEY-----")
    }

    private static func contains(_ bytes: [UInt8], _ marker: String) -> Bool {
        let needle = Array(marker.utf8)
        guard bytes.count >= needle.count else { return false }
        for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] {
            if bytes[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}
