import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PipehookDaemon
import PipehookHTTP
import PipehookSettings
import PipehookSQLite
import ServiceLifecycle
import Testing

/// The optional TLS listener, over real sockets with a certificate made by the `openssl` CLI.
@Suite struct TLSTests {
    // MARK: Certificates

    /// A self-signed certificate and key for localhost / 127.0.0.1 in a fresh folder.
    struct Material {
        let dir = TempDir()
        var certPath: String { dir.path + "/cert.pem" }
        var keyPath: String { dir.path + "/key.pem" }

        init() throws {
            try OpenSSL.selfSigned(cert: dir.path + "/cert.pem", key: dir.path + "/key.pem")
        }

        func certificate() throws -> NIOSSLCertificate {
            try #require(NIOSSLCertificate.fromPEMFile(certPath).first)
        }
    }

    enum OpenSSL {
        struct Failure: Error, CustomStringConvertible { var description: String }

        /// Runs `openssl ARGS`; fails with its stderr. The CLI must be on PATH (package `openssl`).
        static func run(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["openssl"] + arguments
            let errors = Pipe()
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = errors
            try process.run()
            let message = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw Failure(description: "openssl \(arguments.first ?? "") failed (is the openssl CLI installed?): "
                    + String(decoding: message, as: UTF8.self))
            }
        }

        static func selfSigned(cert: String, key: String) throws {
            try run([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
        }
    }

    // MARK: Harness

    static func settings(dir: String, cert: String, key: String) throws -> Settings {
        try SettingsParser.parse(
            yaml: Fixture.yaml(dir: dir, extra: #"tls: {cert: "\#(cert)", key: "\#(key)"}"#, readTimeout: "1s"), environment: [:]
        )
    }

    /// Runs the daemon's application with `Daemon.serverBuilder` on an ephemeral 127.0.0.1 port.
    static func withServer(
        _ material: Material, tls: Bool = true, _ body: @Sendable (Int) async throws -> Void
    ) async throws {
        var settings = try settings(dir: material.dir.path, cert: material.certPath, key: material.keyPath)
        if !tls { settings.tls = nil }
        let store = try SQLiteStore(path: material.dir.path + "/pipehook.sqlite")
        let intake = WebhookIntake(
            store: store, configuration: IntakeConfigurationBox(Daemon.intakeConfiguration(settings)), logger: Fixture.logger
        )
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: HTTPRoutes.router(intake: intake),
            server: try Daemon.serverBuilder(settings: settings),
            configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: Fixture.logger
        )
        let services = ServiceGroup(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: Fixture.logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var outcome: Result<Void, any Error> = .success(())
            do {
                var iterator = ports.makeAsyncIterator()
                let port = try #require(await iterator.next())
                try #require(port > 0)
                try await body(port)
            } catch {
                outcome = .failure(error)
            }
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
            try outcome.get()
        }
    }

    /// An AsyncHTTPClient that trusts only `trusting` (or the system roots when nil); always shut down.
    /// AsyncHTTPClient retries failed connections until the connect timeout, so tests that expect
    /// a failed handshake pass a short one.
    static func withClient(
        trusting certificate: NIOSSLCertificate?, maximumTLSVersion: TLSVersion? = nil,
        connectTimeout: TimeAmount = .seconds(5), _ body: (HTTPClient) async throws -> Void
    ) async throws {
        var configuration = HTTPClient.Configuration()
        var tls = TLSConfiguration.makeClientConfiguration()
        if let certificate { tls.trustRoots = .certificates([certificate]) }
        if let maximumTLSVersion {
            tls.minimumTLSVersion = .tlsv1
            tls.maximumTLSVersion = maximumTLSVersion
        }
        configuration.tlsConfiguration = tls
        configuration.timeout = .init(connect: connectTimeout, read: .seconds(5))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let result: Result<Void, any Error>
        do { result = .success(try await body(client)) } catch { result = .failure(error) }
        try await client.shutdown()
        try result.get()
    }

    // MARK: Serving over TLS

    @Test func healthzAndSignedWebhookOverTLS() async throws {
        let material = try Material()
        let certificate = try material.certificate()
        try await Self.withServer(material) { port in
            try await Self.withClient(trusting: certificate) { client in
                let health = try await client.execute(
                    HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"), timeout: .seconds(10)
                )
                #expect(health.status == .ok)
                #expect(String(buffer: try await health.body.collect(upTo: 1024)) == #"{"status":"ok"}"#)

                let body = Fixture.body(generation: "gen_tls", status: "completed", outputURL: "https://v/tls.mp4")
                var request = HTTPClientRequest(url: "https://127.0.0.1:\(port)/webhooks/pipevideo")
                request.method = .POST
                for (name, value) in Fixture.headers(id: "msg_tls", body: body) { request.headers.add(name: name, value: value) }
                request.body = .bytes(ByteBuffer(string: body))
                let response = try await client.execute(request, timeout: .seconds(10))
                let answer = try await response.body.collect(upTo: 4096)
                let json = try JSONSerialization.jsonObject(with: Data(buffer: answer)) as? [String: Any]
                #expect(response.status == .ok)
                #expect(json?["result"] as? String == "accepted")
                #expect(json?["generation_id"] as? String == "gen_tls")
            }
        }
    }

    @Test func plainHTTPToTheTLSPortFails() async throws {
        let material = try Material()
        try await Self.withServer(material) { port in
            try await Self.withClient(trusting: nil) { client in
                await #expect(throws: (any Error).self) {
                    let response = try await client.execute(
                        HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"), timeout: .seconds(10)
                    )
                    _ = try await response.body.collect(upTo: 1024)
                }
            }
        }
    }

    @Test func clientThatDoesNotTrustTheCertificateFailsTheHandshake() async throws {
        let material = try Material()
        let certificate = try material.certificate()
        try await Self.withServer(material) { port in
            try await Self.withClient(trusting: nil, connectTimeout: .seconds(1)) { client in
                let error = await #expect(throws: NIOSSLError.self) {
                    _ = try await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
                }
                #expect(String(describing: error).contains("CERTIFICATE_VERIFY_FAILED"), "\(String(describing: error))")
            }
            // A refused handshake does not take the listener down.
            try await Self.withClient(trusting: certificate) { client in
                let health = try await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
                #expect(health.status == .ok)
            }
        }
    }

    @Test func tls11IsRefused() async throws {
        let material = try Material()
        let certificate = try material.certificate()
        try await Self.withServer(material) { port in
            try await Self.withClient(trusting: certificate, maximumTLSVersion: .tlsv11, connectTimeout: .seconds(1)) { client in
                let error = await #expect(throws: NIOSSLError.self) {
                    _ = try await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
                }
                #expect(String(describing: error).contains("PROTOCOL_VERSION"), "\(String(describing: error))")
            }
            // TLS 1.2 is enough.
            try await Self.withClient(trusting: certificate, maximumTLSVersion: .tlsv12) { client in
                let health = try await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
                #expect(health.status == .ok)
            }
        }
    }

    /// read_timeout (1s in the fixture) still cuts off a client that completes the handshake and stalls.
    @Test func readTimeoutAppliesUnderTLS() async throws {
        let material = try Material()
        let certificate = try material.certificate()
        try await Self.withServer(material) { port in
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates([certificate])
            let context = try NIOSSLContext(configuration: tls)
            let (handshake, handshakeDone) = AsyncStream.makeStream(of: Void.self)
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: context, serverHostname: "localhost")
                        )
                        try channel.pipeline.syncOperations.addHandler(HandshakeWatcher { handshakeDone.yield() })
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
            let start = ContinuousClock.now
            // Half a request: the handshake completes, the headers never do. (On a loaded machine
            // the deadline, which counts from the connection's start, may close it before this
            // write: that is the cut-off too.)
            try? await channel.writeAndFlush(ByteBuffer(string: "POST /webhooks/pipevideo HTTP/1.1\r\nHost: x\r\n"))
            let closed = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { try await channel.closeFuture.get(); return true }
                group.addTask { try await Task.sleep(for: .seconds(10)); return false }
                let first = try await group.next() ?? false
                group.cancelAll()
                return first
            }
            if !closed { try? await channel.close() }
            handshakeDone.finish()
            var handshakes = handshake.makeAsyncIterator()
            #expect(await handshakes.next() != nil, "the TLS handshake did not complete")
            #expect(closed, "stalled TLS connection was not closed within 10s")
            #expect(ContinuousClock.now - start < .seconds(5))
        }
    }

    /// Without `tls`, the builder is the plain HTTP/1.1 server.
    @Test func withoutTLSTheServerIsPlainHTTP() async throws {
        let material = try Material()
        try await Self.withServer(material, tls: false) { port in
            try await Self.withClient(trusting: nil) { client in
                let health = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
                #expect(health.status == .ok)
            }
        }
    }

    // MARK: Configuration errors

    static func failure(cert: String, key: String, dir: String) throws -> String? {
        let settings = try settings(dir: dir, cert: cert, key: key)
        do {
            _ = try Daemon.serverBuilder(settings: settings)
            return nil
        } catch let error as CommandFailure {
            if let tls = settings.tls {
                // validateTLS reports the same problem.
                #expect(throws: CommandFailure.self) { try Daemon.validateTLS(tls) }
            }
            return error.description
        }
    }

    @Test func validFilesPassValidation() throws {
        let material = try Material()
        let settings = try Self.settings(dir: material.dir.path, cert: material.certPath, key: material.keyPath)
        try Daemon.validateTLS(try #require(settings.tls))
        _ = try Daemon.serverBuilder(settings: settings)
    }

    @Test func missingCertificateFile() throws {
        let material = try Material()
        let missing = material.dir.path + "/nope.pem"
        let message = try #require(try Self.failure(cert: missing, key: material.keyPath, dir: material.dir.path))
        #expect(message.contains("tls.cert"))
        #expect(message.contains(missing))
    }

    @Test func missingKeyFile() throws {
        let material = try Material()
        let missing = material.dir.path + "/nope.key"
        let message = try #require(try Self.failure(cert: material.certPath, key: missing, dir: material.dir.path))
        #expect(message.contains("tls.key"))
        #expect(message.contains(missing))
    }

    @Test func certificatePathIsADirectory() throws {
        let material = try Material()
        let message = try #require(try Self.failure(cert: material.dir.path, key: material.keyPath, dir: material.dir.path))
        #expect(message.contains("tls.cert") && message.contains("directory"))
    }

    @Test func garbageCertificatePEM() throws {
        let material = try Material()
        let garbage = material.dir.path + "/garbage.pem"
        try Data("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n".utf8).write(to: URL(fileURLWithPath: garbage))
        let message = try #require(try Self.failure(cert: garbage, key: material.keyPath, dir: material.dir.path))
        #expect(message.contains("tls.cert"))
        #expect(message.contains(garbage))
    }

    @Test func emptyCertificateFile() throws {
        let material = try Material()
        let empty = material.dir.path + "/empty.pem"
        try Data().write(to: URL(fileURLWithPath: empty))
        let message = try #require(try Self.failure(cert: empty, key: material.keyPath, dir: material.dir.path))
        #expect(message.contains("tls.cert") && message.contains("empty"))
    }

    @Test func swappedCertificateAndKey() throws {
        let material = try Material()
        let message = try #require(try Self.failure(cert: material.keyPath, key: material.certPath, dir: material.dir.path))
        #expect(message.contains("tls.cert") && message.contains("swapped"))
        let key = try String(contentsOfFile: material.keyPath, encoding: .utf8)
        let base64Line = try #require(key.split(separator: "\n").dropFirst().first)
        #expect(!message.contains(base64Line))
    }

    @Test func garbageKeyPEMIsNotEchoed() throws {
        let material = try Material()
        let garbage = material.dir.path + "/garbage.key"
        let secretLooking = "SECRETKEYMATERIALdoNotPrintMe0123456789"
        try Data("-----BEGIN PRIVATE KEY-----\n\(secretLooking)\n-----END PRIVATE KEY-----\n".utf8).write(to: URL(fileURLWithPath: garbage))
        let message = try #require(try Self.failure(cert: material.certPath, key: garbage, dir: material.dir.path))
        #expect(message.contains("tls.key"))
        #expect(message.contains(garbage))
        #expect(!message.contains(secretLooking))
    }

    @Test func keyThatDoesNotMatchTheCertificate() throws {
        let material = try Material()
        let other = try Material()
        let message = try #require(try Self.failure(cert: material.certPath, key: other.keyPath, dir: material.dir.path))
        #expect(message.contains("tls.key") && message.contains("does not match"))
        #expect(message.contains(other.keyPath) && message.contains(material.certPath))
        let key = try String(contentsOfFile: other.keyPath, encoding: .utf8)
        let base64Line = try #require(key.split(separator: "\n").dropFirst().first)
        #expect(!message.contains(base64Line))
    }

    /// An encrypted key is refused with a message, never with a passphrase prompt on the terminal.
    @Test func encryptedKeyIsRefusedWithoutPrompting() throws {
        let material = try Material()
        let encrypted = material.dir.path + "/encrypted.key"
        try OpenSSL.run(["pkey", "-in", material.keyPath, "-out", encrypted, "-aes256", "-passout", "pass:hunter2"])
        let message = try #require(try Self.failure(cert: material.certPath, key: encrypted, dir: material.dir.path))
        #expect(message.contains("tls.key") && message.contains("encrypted"))
    }
}

/// Signals when the TLS handshake has completed on a raw NIO client channel.
private final class HandshakeWatcher: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let completed: @Sendable () -> Void
    init(_ completed: @escaping @Sendable () -> Void) { self.completed = completed }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { completed() }
        context.fireUserInboundEventTriggered(event)
    }
}
