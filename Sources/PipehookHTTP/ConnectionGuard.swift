import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import PipehookFormats
import Synchronization

/// The limits every connection is held to before the application sees a request (SPEC §4):
/// a whole request (head and body) must arrive within `readTimeout` of the connection opening or
/// of the previous response ending, and no more than `maxConnections` are served at once.
public struct ConnectionLimits: Sendable {
    public var readTimeoutMilliseconds: Int64
    public var maxConnections: Int
    public init(readTimeoutMilliseconds: Int64, maxConnections: Int) {
        self.readTimeoutMilliseconds = readTimeoutMilliseconds
        self.maxConnections = maxConnections
    }
}

/// Counts the connections one server has open (shared by all its connection handlers).
public final class ConnectionCount: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    /// The count after this connection was added.
    func open() -> Int { value.add(1, ordering: .relaxed).newValue }
    func close() { value.subtract(1, ordering: .relaxed) }
    public var current: Int { value.load(ordering: .relaxed) }
}

/// Enforces `ConnectionLimits` on one connection, between the HTTP codec and the application.
///
/// Hummingbird's idle timer restarts with every byte, so a client trickling one byte a second holds
/// a connection for as long as it likes. This deadline does not move: it is set when the connection
/// opens (and again when a response ends) and cleared only when a request's last byte has arrived.
/// When it passes the client gets `408 read_timeout` and the connection is closed; the request
/// never reaches the application whole, so nothing is stored. A connection over the cap gets `503
/// overloaded` at its first request (or when its deadline passes) and is closed.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limits: ConnectionLimits
    private let count: ConnectionCount
    /// When the client's time runs out; nil while it owes nothing (a request is being answered).
    private var deadline: NIODeadline?
    /// At most one timer per connection, at or before `deadline`. Moving the deadline does not
    /// touch it (a timer armed and cancelled per request cost a timer-heap update and a wake-up
    /// each): when it fires early it is set again for the deadline as it stands then.
    private var timer: Scheduled<Void>?
    private var counted = false
    private var overCap = false
    /// Answered by this handler (408 or 503): everything else is dropped.
    private var closing = false
    /// Between a request's head and its end.
    private var insideRequest = false
    /// Requests read whole whose responses have not ended yet.
    private var unanswered = 0
    /// The application has started a response it has not ended.
    private var responding = false

    init(limits: ConnectionLimits, count: ConnectionCount) {
        self.limits = limits
        self.count = count
    }

    /// The client owes bytes: inside a request, or with nothing left to answer.
    private var waitingForClient: Bool { insideRequest || unanswered == 0 }

    func handlerAdded(context: ChannelHandlerContext) {
        counted = true
        overCap = count.open() > limits.maxConnections
        armDeadline(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        deadline = nil
        if counted {
            counted = false
            count.close()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        switch unwrapInboundIn(data) {
        case .head:
            if overCap {
                answer(context, APIError.overloaded)
                return
            }
            insideRequest = true
            // A pipelined request's deadline starts at its head.
            if deadline == nil { armDeadline(context) }
        case .body:
            break
        case .end:
            insideRequest = false
            unanswered += 1
            deadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closing else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head:
            responding = true
        case .body:
            break
        case .end:
            responding = false
            unanswered = max(0, unanswered - 1)
            if waitingForClient, deadline == nil { armDeadline(context) }
        }
        context.write(data, promise: promise)
    }

    private func armDeadline(_ context: ChannelHandlerContext) {
        let at = NIODeadline.now() + .milliseconds(limits.readTimeoutMilliseconds)
        deadline = at
        if timer == nil { startTimer(context, at: at) }
    }

    private func startTimer(_ context: ChannelHandlerContext, at: NIODeadline) {
        let loop = context.eventLoop.assumeIsolated()
        timer = loop.scheduleTask(deadline: at) { [self] in
            timer = nil
            guard !closing, let deadline else { return }
            if NIODeadline.now() < deadline {
                startTimer(context, at: deadline)
                return
            }
            self.deadline = nil
            guard waitingForClient else { return }
            // The application may be answering (a 413 for a declared length while the body still
            // trickles, or an earlier pipelined request): a response of ours would interleave with
            // its, so only the connection goes.
            if responding || unanswered > 0 {
                closing = true
                context.close(promise: nil)
            } else {
                answer(context, overCap ? APIError.overloaded : APIError.readTimeout)
            }
        }
    }

    /// Writes a complete JSON error response with `Connection: close`, then closes.
    private func answer(_ context: ChannelHandlerContext, _ error: APIError) {
        closing = true
        timer?.cancel()
        timer = nil
        deadline = nil
        let body = ByteBuffer(string: error.jsonBody)
        var head = HTTPResponse(status: error.status)
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.connection] = "close"
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

extension APIError {
    static let overloaded = APIError(
        .serviceUnavailable, code: "overloaded", message: "too many open connections; retry later"
    )

    /// `{"error":{"code","message"}}`, as every error answer is written.
    var jsonBody: String {
        #"{"error":{"code":"# + JSONText.quote(code) + #","message":"# + JSONText.quote(message) + "}}"
    }
}
