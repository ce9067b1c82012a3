import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

/// `SIGHUP` reload through the real binary: no request fails during the swap, a new secret works
/// at once, a removed one stops working, and an invalid file keeps the running configuration.
@Suite(.serialized) struct ReloadTests {
    func write(_ dir: TempDir, secrets: [String], extra: String = "") throws -> String {
        let path = dir.path + "/pipehook.yaml"
        let list = secrets.map { "\"\($0)\"" }.joined(separator: ", ")
        try """
            listen: "127.0.0.1:0"
            data_dir: "\(dir.path)/data"
            log_level: info
            sources:
              pipevideo:
                secrets: [\(list)]
            \(extra)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func post(_ http: HTTPClient, port: Int, secret: String, id: String) async throws -> Int {
        let body = Fixture.body(generation: "gen_\(id)", status: "queued")
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhooks/pipevideo")
        request.method = .POST
        for (name, value) in Fixture.headers(id: id, body: body, secret: secret) { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await http.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 4096)
        return Int(response.status.code)
    }

    /// Starts `serve` on `path` and runs `body` with it, its port and a client that is always shut
    /// down; the server is stopped with SIGTERM when `body` succeeds (killed by its deinit otherwise).
    func serving(_ path: String, in dir: TempDir, _ body: (RunningPipehook, Int, HTTPClient) async throws -> Void) async throws {
        let server = try RunningPipehook(["serve", "--config", path], directory: dir.path)
        let port = try await server.waitForPort()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        let result: Result<Void, any Error>
        do { result = .success(try await body(server, port, http)) } catch { result = .failure(error) }
        try await http.shutdown()
        try result.get()
        server.kill(SIGTERM)
    }

    func waitForLog(_ server: RunningPipehook, _ message: String, count: Int) async throws {
        let deadline = Date().addingTimeInterval(15)
        while server.stdout.components(separatedBy: "\"msg\":\"\(message)\"").count - 1 < count {
            if Date() > deadline { throw ProcessFailure(message: "no '\(message)' log line; stdout: \(server.stdout)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test func reloadSwapsSecretsWithoutFailingRequests() async throws {
        let dir = TempDir()
        let path = try write(dir, secrets: [Fixture.secret])
        try await serving(path, in: dir) { server, port, http in
            #expect(try await post(http, port: port, secret: Fixture.otherSecret, id: "before") == 401)
            // Load with the old secret while the file gains the new one and SIGHUP arrives.
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<300 {
                    group.addTask { try await post(http, port: port, secret: Fixture.secret, id: "load\(i)") }
                }
                try await Task.sleep(for: .milliseconds(20))
                _ = try write(dir, secrets: [Fixture.secret, Fixture.otherSecret])
                kill(server.process.processIdentifier, SIGHUP)
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.count == 300 && statuses.allSatisfy { $0 == 200 })
            try await waitForLog(server, "configuration reloaded", count: 1)
            #expect(try await post(http, port: port, secret: Fixture.otherSecret, id: "new") == 200)

            // Rotation finished: the old secret is removed.
            _ = try write(dir, secrets: [Fixture.otherSecret])
            kill(server.process.processIdentifier, SIGHUP)
            try await waitForLog(server, "configuration reloaded", count: 2)
            #expect(try await post(http, port: port, secret: Fixture.secret, id: "old-after") == 401)
            #expect(try await post(http, port: port, secret: Fixture.otherSecret, id: "new-after") == 200)

            // An invalid file is refused and the running configuration stays.
            try "sources: {pipevideo: {secrets: [\"${NOT_SET_FOR_RELOAD}\"]}}\n".write(toFile: path, atomically: true, encoding: .utf8)
            kill(server.process.processIdentifier, SIGHUP)
            try await waitForLog(server, "reload failed; the running configuration stays", count: 1)
            #expect(server.stdout.contains("NOT_SET_FOR_RELOAD"))
            #expect(try await post(http, port: port, secret: Fixture.otherSecret, id: "still") == 200)
            #expect(server.process.isRunning)
            #expect(!server.stdout.contains("C2FVsBQIhrscChlQIMV") && !server.stdout.contains("MfKQ9r8GKYqrTwjUPD8"))
        }
    }

    /// Issue 12 item 4: a secret kept in a file (`file:/PATH`, e.g. a systemd credential) is
    /// rotated by rewriting the file and sending SIGHUP, with no change to the configuration.
    @Test func aSecretFileIsReReadOnReload() async throws {
        let dir = TempDir()
        let secretFile = dir.path + "/webhook-secret"
        try (Fixture.secret + "\n").write(toFile: secretFile, atomically: true, encoding: .utf8)
        let path = try write(dir, secrets: ["file:" + secretFile])
        try await serving(path, in: dir) { server, port, http in
            #expect(try await post(http, port: port, secret: Fixture.secret, id: "file-old") == 200)
            #expect(try await post(http, port: port, secret: Fixture.otherSecret, id: "file-new-early") == 401)
            try (Fixture.otherSecret + "\n").write(toFile: secretFile, atomically: true, encoding: .utf8)
            kill(server.process.processIdentifier, SIGHUP)
            try await waitForLog(server, "configuration reloaded", count: 1)
            #expect(try await post(http, port: port, secret: Fixture.otherSecret, id: "file-new") == 200)
            #expect(try await post(http, port: port, secret: Fixture.secret, id: "file-old-after") == 401)
            // A file that disappears fails the reload, naming the file; the running secret stays.
            try FileManager.default.removeItem(atPath: secretFile)
            kill(server.process.processIdentifier, SIGHUP)
            try await waitForLog(server, "reload failed; the running configuration stays", count: 1)
            #expect(server.stdout.contains(secretFile))
            #expect(try await post(http, port: port, secret: Fixture.otherSecret, id: "file-still") == 200)
            #expect(!server.stdout.contains("C2FVsBQIhrscChlQIMV") && !server.stdout.contains("MfKQ9r8GKYqrTwjUPD8"))
        }
    }

    /// The SHA-256 fingerprint of the certificate a new TLS handshake with 127.0.0.1:`port` gets,
    /// through the openssl CLI (a client outside the process under test).
    func servedFingerprint(port: Int) throws -> String {
        try shell("openssl s_client -connect 127.0.0.1:\(port) -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256")
    }

    func fileFingerprint(_ path: String) throws -> String {
        try shell("openssl x509 -in '\(path)' -noout -fingerprint -sha256")
    }

    func shell(_ command: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// SPEC §9: a renewed certificate is picked up by SIGHUP; new handshakes use the new pair,
    /// and a pair that does not load refuses the reload and keeps the running one.
    @Test func theTLSCertificateIsReReadOnReload() async throws {
        let dir = TempDir()
        let first = try TLSTests.Material(), second = try TLSTests.Material()
        let cert = dir.path + "/cert.pem", key = dir.path + "/key.pem"
        func install(_ material: TLSTests.Material) throws {
            for (from, to) in [(material.certPath, cert), (material.keyPath, key)] {
                try? FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: from, toPath: to)
            }
        }
        try install(first)
        let path = try write(dir, secrets: [Fixture.secret], extra: #"tls: {cert: "\#(cert)", key: "\#(key)"}"#)
        let server = try RunningPipehook(["serve", "--config", path], directory: dir.path)
        let port = try await server.waitForPort()
        let before = try servedFingerprint(port: port), firstFingerprint = try fileFingerprint(first.certPath)
        #expect(before.contains("Fingerprint") && before == firstFingerprint, "\(before)")

        try install(second)
        kill(server.process.processIdentifier, SIGHUP)
        try await waitForLog(server, "configuration reloaded", count: 1)
        #expect(!server.stdout.contains("needs_restart"), "\(server.stdout)")
        let after = try servedFingerprint(port: port), secondFingerprint = try fileFingerprint(second.certPath)
        #expect(after == secondFingerprint && after != before, "\(after)")

        // A key that belongs to another certificate: the reload is refused, the pair stays.
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: first.keyPath, toPath: key)
        kill(server.process.processIdentifier, SIGHUP)
        try await waitForLog(server, "reload failed; the running configuration stays", count: 1)
        #expect(server.stdout.contains("does not match the certificate"))
        let kept = try servedFingerprint(port: port)
        #expect(kept == after)
        #expect(!server.stdout.contains("PRIVATE KEY"))
        server.kill(SIGTERM)
    }

    /// `Type=notify` (SPEC §9): READY once listening, RELOADING then READY around a reload,
    /// STOPPING as soon as SIGTERM arrives — read from a datagram socket as systemd would.
    @Test func systemdIsToldReadyReloadingAndStopping() async throws {
        let dir = TempDir()
        let socketPath = dir.path + "/notify.sock"
        let notifications = try NotifySocket(path: socketPath)
        let path = try write(dir, secrets: [Fixture.secret])
        let server = try RunningPipehook(["serve", "--config", path], directory: dir.path, environment: ["NOTIFY_SOCKET": socketPath])
        _ = try await server.waitForPort()
        let ready = try await notifications.next()
        #expect(ready.hasPrefix("READY=1\nSTATUS=listening on 127.0.0.1:"), "\(ready)")
        kill(server.process.processIdentifier, SIGHUP)
        let reloading = try await notifications.next()
        #expect(reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="), "\(reloading)")
        #expect(try await notifications.next() == "READY=1\nSTATUS=configuration reloaded")
        server.kill(SIGTERM)
        #expect(try await notifications.next().hasPrefix("STOPPING=1"))
        while server.process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        #expect(server.process.terminationStatus == 0, "\(server.stdout)")
    }
}

/// A bound `AF_UNIX` datagram socket standing in for systemd's notification socket.
final class NotifySocket: Sendable {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw ProcessFailure(message: "cannot bind \(path): errno \(errno)") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit { close(fd) }

    /// The next datagram, within 15 s.
    func next() async throws -> String {
        let deadline = Date().addingTimeInterval(15)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 { return String(decoding: buffer[0..<count], as: UTF8.self) }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ProcessFailure(message: "no notification within 15 s")
    }
}

import Logging
import PipehookDaemon
import ServiceLifecycle

/// SPEC §9: a service of the daemon that stops makes the process exit non-zero.
@Suite struct EssentialServiceTests {
    struct ReturnsAtOnce: Service { func run() async throws {} }
    struct RunsUntilShutdown: Service {
        func run() async throws { try? await gracefulShutdown() }
    }

    @Test func aServiceThatReturnsByItselfFailsTheGroup() async throws {
        let group = ServiceGroup(services: [Essential(service: RunsUntilShutdown()), Essential(service: ReturnsAtOnce())], logger: Fixture.logger)
        let error = await #expect(throws: ServiceStopped.self) { try await group.run() }
        #expect(error?.description == "the ReturnsAtOnce service stopped by itself")
    }

    @Test func servicesThatEndOnShutdownAreFine() async throws {
        let group = ServiceGroup(services: [Essential(service: RunsUntilShutdown())], logger: Fixture.logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await Task.sleep(for: .milliseconds(100))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

extension ReloadTests {
    /// Every reloaded key is applied or named: retention windows apply at once, the lease needs
    /// a restart and says so.
    @Test func reloadAppliesRetentionAndNamesWhatNeedsARestart() async throws {
        let dir = TempDir()
        let path = try write(dir, secrets: [Fixture.secret])
        let server = try RunningPipehook(["serve", "--config", path], directory: dir.path)
        _ = try await server.waitForPort()
        _ = try write(dir, secrets: [Fixture.secret], extra: "dedup_window: 2d\nretention: 10d\nlease: 30s")
        kill(server.process.processIdentifier, SIGHUP)
        try await waitForLog(server, "configuration reloaded", count: 1)
        let line = try #require(server.stdout.split(separator: "\n").first { $0.contains(#""msg":"configuration reloaded""#) })
        let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let needsRestart = json["needs_restart"] as? [String] ?? []
        #expect(needsRestart == ["lease"], "\(line)")
        server.kill(SIGTERM)
        #expect(server.process.terminationStatus == 0)
    }
}
