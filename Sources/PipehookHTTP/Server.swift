import Hummingbird
import HummingbirdCore
import Logging
import PipehookStore

/// Builds the HTTP router: the webhook intake plus health endpoints.
public enum HTTPRoutes {
    /// - Parameter metricsText: the Prometheus exposition, when metrics are exported.
    /// - Parameter admin: `/api/*` and the status page; each answers 404 unless `admin_token` is set.
    /// - Parameter gateway: `/v1/responses`, when `api` is configured and a token may use it.
    public static func router(
        intake: WebhookIntake, metricsText: (@Sendable () -> [UInt8])? = nil, admin: AdminEndpoints? = nil,
        gateway: GatewayEndpoints? = nil
    ) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: JSONNotFoundMiddleware())
        if let gateway, gateway.auth.isEnabled {
            GatewayRoutes.register(on: router, gateway)
            GatewayRoutes.registerEvents(on: router, auth: gateway.auth, store: gateway.control.store)
        }
        if let admin, admin.auth.isEnabled {
            AdminRoutes.register(on: router, admin)
            StatusPage.register(on: router, admin)
            ArchiveMedia.register(on: router, admin)
        }
        router.post("/webhooks/:source") { request, context in
            let source = context.parameters.get("source") ?? ""
            return try await intake.handle(request, sourceName: source)
        }
        router.get("/healthz") { _, _ in
            JSONResponse.make(status: .ok, json: #"{"status":"ok"}"#)
        }
        let store = intake.store
        router.get("/readyz") { _, _ in
            // Answers within a second whatever holds the store (a lock, a queue of commits).
            if await Deadline.within(.seconds(1), { await store.isWritable() }) == true {
                return JSONResponse.make(status: .ok, json: #"{"status":"ready"}"#)
            }
            return JSONResponse.make(
                status: .serviceUnavailable,
                json: #"{"error":{"code":"store_unavailable","message":"the store does not accept writes"}}"#
            )
        }
        if let metricsText {
            router.get("/metrics") { _, _ in
                Response(
                    status: .ok,
                    headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: metricsText()))
                )
            }
        }
        return router
    }

    /// The HTTP/1.1 server with `ConnectionGuard` on every connection (read deadline, connection
    /// cap). Hummingbird's idle timer stays as a backstop at twice the deadline, so that the
    /// guard, which answers 408, always acts first.
    public static func server(limits: ConnectionLimits, count: ConnectionCount = ConnectionCount()) -> HTTPServerBuilder {
        .http1(configuration: .init(
            additionalChannelHandlers: [ConnectionGuard(limits: limits, count: count)],
            idleTimeout: .milliseconds(limits.readTimeoutMilliseconds * 2)
        ))
    }
}

/// Unknown paths and methods get the same JSON error shape as everything else.
struct JSONNotFoundMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            throw APIError.notFound
        } catch let error as HTTPError where error.status == .methodNotAllowed {
            throw APIError(.methodNotAllowed, code: "method_not_allowed", message: "this endpoint does not take that method")
        }
    }
}
