import Foundation
import ServiceLifecycle
import UnixSignals

/// Tells systemd (`Type=notify`) what the daemon is doing, over the datagram socket named by
/// `NOTIFY_SOCKET`. Without that variable (not under systemd) every call does nothing.
///
/// Written here rather than linking libsystemd: the protocol is one `sendto` of `KEY=VALUE` lines.
public struct SystemdNotifier: Sendable {
    /// The socket's address bytes (`@` for the abstract namespace becomes a leading NUL).
    private let address: [UInt8]?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty, path.hasPrefix("/") || path.hasPrefix("@") else {
            address = nil
            return
        }
        var bytes = Array(path.utf8)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
        // sun_path holds 108 bytes; a longer name cannot be addressed.
        address = bytes.count < 108 ? bytes : nil
    }

    public var isActive: Bool { address != nil }

    /// The service is up: the listener is open.
    public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }
    /// A reload began (systemd waits for the next `READY=1`).
    public func reloading() { send("RELOADING=1\nMONOTONIC_USEC=\(Self.monotonicMicroseconds())") }
    /// The reload ended, applied or refused; `status` says which.
    public func reloaded(status: String) { send("READY=1\nSTATUS=\(status)") }
    /// Shutdown began: in-flight requests and steps are being drained.
    public func stopping() { send("STOPPING=1\nSTATUS=draining in-flight requests and steps") }

    /// Best effort: a lost notification must never stop the daemon.
    func send(_ message: String) {
        guard let address else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { path in
            for (index, byte) in address.enumerated() { path[index] = byte }
        }
        // An abstract name's length counts exactly its bytes; a path's includes its NUL.
        let length = MemoryLayout<sa_family_t>.size + address.count + (address[0] == 0 ? 0 : 1)
        let bytes = Array(message.utf8)
        _ = withUnsafePointer(to: &socketAddress) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), raw, socklen_t(length))
            }
        }
    }

    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}

/// Sends `STOPPING=1` as soon as SIGTERM or SIGINT arrives, not when the service group's
/// ordered shutdown reaches it (after the server has drained), then waits for that shutdown.
struct SystemdStoppingService: Service, CustomStringConvertible {
    var description: String { "SystemdStoppingService" }
    let notifier: SystemdNotifier

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let signalled = await cancelWhenGracefulShutdown { () async -> Bool in
            for await _ in signals {
                notifier.stopping()
                return true
            }
            return false
        }
        // Return only once shutdown reached this service (`Essential` treats an earlier return
        // as a failure). A shutdown that came another way than a signal says STOPPING now.
        try? await gracefulShutdown()
        if !signalled { notifier.stopping() }
    }
}
