import Hummingbird
import PipehookStore

/// The read-only status page at `/` (issue 5). Placeholder until the page lands.
enum StatusPage {
    static func register(on router: Router<BasicRequestContext>, _ admin: AdminEndpoints) {
        router.get("/") { request, _ in
            try admin.auth.require(request)
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: "<!doctype html><title>pipehook</title>")))
        }
    }
}
