import Foundation
import HummingbirdTesting
import PipehookDaemon
import PipehookSettings
import PipehookStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SPEC §4's connection rows on a real socket: a request not read whole within `read_timeout`
/// gets 408 `read_timeout` however its bytes trickle, and connections over `max_connections` get
/// 503 `overloaded`; neither leaves anything in the store.
@Suite struct ConnectionLimitsTests {
    func run(extra: String = "", readTimeout: String = "1s", _ test: @Sendable @escaping (Int, MemoryStore) async throws -> Void) async throws {
        let dir = TempDir()
        let store = MemoryStore()
        let settings = try SettingsParser.parse(
            yaml: Fixture.yaml(dir: dir.path, extra: extra, readTimeout: readTimeout), environment: [:]
        )
        let app = Daemon.application(settings: settings, store: store, logger: Fixture.logger)
        try await app.test(.live) { client in try await test(try #require(client.port), store) }
        withExtendedLifetime(dir) {}
    }

    static func signedRequest(id: String, generation: String = "gen_slow") -> String {
        let body = Fixture.body(generation: generation, status: "completed")
        let headers = Fixture.headers(id: id, body: body).map { "\($0.0): \($0.1)\r\n" }.joined()
        return "POST /webhooks/pipevideo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\(headers)"
            + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// The answer's status line and JSON error code, and when the server closed the connection.
    struct Answer {
        var text: String
        var closedAfter: Double
        var status: Int? { text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) } }
        var code: String? {
            guard let start = text.range(of: "\r\n\r\n")?.upperBound,
                  let json = try? JSONSerialization.jsonObject(with: Data(text[start...].utf8)) as? [String: Any] else { return nil }
            return (json["error"] as? [String: Any])?["code"] as? String
        }
    }

    @Test(arguments: ["body", "headers"])
    func aTrickledRequestIsCutOffAtTheDeadline(part: String) async throws {
        try await run { port, store in
            let request = Self.signedRequest(id: "msg_trickle")
            // The head at once and then the body, or the head itself, one byte every 100 ms: each
            // byte restarts an idle timer, never this deadline.
            let split = part == "body" ? request.range(of: "\r\n\r\n")!.upperBound : request.index(request.startIndex, offsetBy: 20)
            let answer = try await RawConnection.onThread {
                let connection = try RawConnection(port: port)
                connection.send(String(request[..<split]))
                for character in request[split...] {
                    guard connection.send(String(character)) else { break }
                    usleep(100_000)
                }
                return connection.readUntilClosed(limit: 15)
            }
            #expect(answer.status == 408, "\(answer.text)")
            #expect(answer.code == "read_timeout")
            #expect(answer.closedAfter < 8, "the deadline is 1 s; the whole body would take \(request.utf8.count / 10) s")
            #expect(try await store.counts() == StoreCounts(deliveries: 0, events: 0, generations: 0, unrecognized: 0))
        }
    }

    /// The deadline starts again after each response: a keep-alive client that sends its next
    /// request in time is served, and an idle one is closed at the deadline.
    @Test func keepAliveRequestsEachGetTheirOwnDeadline() async throws {
        try await run(readTimeout: "2s") { port, store in
            let answers = try await RawConnection.onThread {
                let connection = try RawConnection(port: port)
                var answers: [String] = []
                for index in 0..<3 {
                    connection.send(Self.signedRequest(id: "msg_keep\(index)", generation: "gen_keep\(index)"))
                    answers.append(connection.readResponse())
                    usleep(1_200_000)  // 3.6 s in all on one connection, each wait under the 2 s deadline
                }
                answers.append(connection.readUntilClosed(limit: 10).text)
                return answers
            }
            #expect(answers.prefix(3).allSatisfy { $0.hasPrefix("HTTP/1.1 200") }, "\(answers)")
            #expect(answers[3].hasPrefix("HTTP/1.1 408"), "an idle keep-alive connection is closed at the deadline")
            #expect(try await store.counts().deliveries == 3)
        }
    }

    @Test func connectionsOverTheCapAreAnswered503() async throws {
        // Three: HummingbirdTesting's own client keeps one connection open, these two the rest.
        try await run(extra: "max_connections: 3", readTimeout: "10s") { port, store in
            let result = try await RawConnection.onThread { () throws -> (String, String, String) in
                let first = try RawConnection(port: port)
                let second = try RawConnection(port: port)
                first.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                _ = first.readResponse()
                second.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                _ = second.readResponse()
                let third = try RawConnection(port: port)
                third.send(Self.signedRequest(id: "msg_over"))
                let over = third.readUntilClosed(limit: 10).text
                first.close()
                // The server notices the close a moment later (longer on a loaded machine): a
                // new connection is served once it has.
                var after = ""
                for _ in 0..<50 {
                    let fourth = try RawConnection(port: port)
                    fourth.send(Self.signedRequest(id: "msg_after"))
                    after = fourth.readResponse()
                    if !after.hasPrefix("HTTP/1.1 503") { break }
                    usleep(200_000)
                }
                second.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                return (over, after, second.readResponse())
            }
            #expect(result.0.hasPrefix("HTTP/1.1 503"), "\(result.0)")
            #expect(Answer(text: result.0, closedAfter: 0).code == "overloaded")
            #expect(result.1.hasPrefix("HTTP/1.1 200"), "a connection that closed frees its place: \(result.1)")
            #expect(result.2.hasPrefix("HTTP/1.1 200"), "connections under the cap are served as before")
            #expect(try await store.counts().deliveries == 1)
        }
    }
}

/// A plain blocking TCP connection, for requests no HTTP client would send.
final class RawConnection: @unchecked Sendable {
    struct Failure: Error {}
    private let fd: Int32
    private var closed = false

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure() }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            throw Failure()
        }
        var on: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// False once the peer has closed.
    @discardableResult
    func send(_ text: String) -> Bool {
        text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } >= 0
    }

    /// Everything until the server closes (or `limit` seconds pass), and how long that took.
    func readUntilClosed(limit: Int) -> ConnectionLimitsTests.Answer {
        var timeout = timeval(tv_sec: limit, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let start = Date()
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let received = recv(fd, &buffer, buffer.count, 0)
            if received <= 0 { break }
            bytes += buffer[..<received]
        }
        return .init(text: String(decoding: bytes, as: UTF8.self), closedAfter: Date().timeIntervalSince(start))
    }

    /// One response: its head and a `Content-Length` body.
    func readResponse(limit: Int = 20) -> String {
        var timeout = timeval(tv_sec: limit, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let text = String(decoding: bytes, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let length = text[..<end.lowerBound].split(separator: "\r\n")
                    .first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if text.utf8.count - text.utf8.distance(from: text.startIndex, to: end.upperBound) >= length { return text }
            }
            let received = recv(fd, &buffer, buffer.count, 0)
            if received <= 0 { return text }
            bytes += buffer[..<received]
        }
    }

    /// Runs blocking socket code on its own thread, off the cooperative pool.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }
}
