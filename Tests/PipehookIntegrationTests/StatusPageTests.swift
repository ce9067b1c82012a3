import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import PipehookDaemon
import PipehookFormats
import PipehookLifecycle
import PipehookSettings
import PipehookSignature
import PipehookSQLite
import PipehookStore
import Testing

/// The status page at `/` and its retry form: over HTTP against the real server and a real
/// SQLite file, then in a real headless Chromium that loads the page and clicks Retry.
@Suite struct StatusPageTests {
    static let token = "status-page-token-0123456789"

    struct Harness {
        let dir = TempDir()
        let store: SQLiteStore
        var token: String? = StatusPageTests.token
        /// More configuration (routes) after `admin_token`.
        var extra = ""

        init() throws {
            store = try SQLiteStore(path: dir.path + "/pipehook.sqlite")
        }

        func run(_ test: @Sendable @escaping (any TestClientProtocol, SQLiteStore) async throws -> Void) async throws {
            let extra = (token.map { #"admin_token: "\#($0)""# } ?? "") + "\n" + self.extra
            let settings = try SettingsParser.parse(yaml: Fixture.yaml(dir: dir.path, extra: extra), environment: [:])
            let app = Daemon.application(settings: settings, store: store, logger: Fixture.logger)
            let store = self.store
            try await app.test(.live) { client in try await test(client, store) }
        }
    }

    /// The page's own script tag taken out: what is left may hold no script at all.
    static func withoutOurScript(_ html: String) -> String {
        html.replacingOccurrences(of: #"<script src="/static/status.js" defer></script>"#, with: "")
    }

    static func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    static func event(
        _ store: SQLiteStore, id: String, generation: String, status: GenerationStatus, at: Int64,
        outputURL: String? = nil, error: String? = nil, routes: [RoutePin] = []
    ) async throws {
        var delivery = IncomingDelivery(
            source: "pipevideo", deliveryID: id, receivedAt: at, signedAt: at / 1000, body: Array("{}".utf8),
            content: .event(GenerationEvent(
                eventType: "video.generation.\(status.rawValue)", generationID: generation, status: status,
                outputURL: outputURL, errorMessage: error
            ))
        )
        delivery.routes = routes
        _ = try await store.ingest(delivery)
    }

    /// A generation queued then completed, whose `notify` job ran once and ended as `disposition`.
    /// Returns the job id.
    static func finishedJob(
        _ store: SQLiteStore, generation: String, disposition: AttemptDisposition, summary: String, at: Int64, route: String = "notify"
    ) async throws -> String {
        try await event(store, id: "msg_\(generation)_1", generation: generation, status: .queued, at: at - 2_000)
        try await event(store, id: "msg_\(generation)_2", generation: generation, status: .completed, at: at - 1_000,
                        outputURL: "https://cdn.example/\(generation).mp4?sig=abc&exp=1", routes: [RoutePin(stringLiteral: route)])
        let claimed = try await store.claimJobs(owner: "test", leaseMilliseconds: 60_000, limit: 10)
        let mine = try #require(claimed.first { $0.job.generationID == generation })
        let attempt = try await store.startAttempt(mine.lease, step: 0, stepKind: "exec", attempt: 1)
        let outcome: AttemptOutcome = if case .dead = disposition { .dead } else { .succeeded }
        _ = try await store.finishAttempt(
            attempt, lease: mine.lease, result: AttemptResult(outcome: outcome, summary: summary), disposition: disposition
        )
        return mine.job.id
    }

    static func deadJob(
        _ store: SQLiteStore, generation: String, error: String, at: Int64 = nowMilliseconds(), route: String = "notify"
    ) async throws -> String {
        try await finishedJob(store, generation: generation, disposition: .dead(error: error), summary: "exit status 3", at: at, route: route)
    }

    /// The form token, derived here independently of the server: hex HMAC-SHA256 keyed with
    /// SHA-256 of the admin token, over "retry:" + job id.
    static func csrf(_ jobID: String, token: String = token) -> String {
        csrf(purpose: "retry:\(jobID)", token: token)
    }

    /// The same for any purpose: "retry-route:" + route, "replay:" + source + NUL + event id.
    static func csrf(purpose: String, token: String = token) -> String {
        let key = Array(token.utf8).withUnsafeBytes { Crypto.sha256($0) }
        return Crypto.hmacSHA256(key: key, message: Array(purpose.utf8)).hexString
    }

    /// A form body, each value percent-encoded.
    static func form(_ pairs: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return pairs.map { "\($0)=\($1.addingPercentEncoding(withAllowedCharacters: allowed)!)" }.joined(separator: "&")
    }

    static func post(_ client: any TestClientProtocol, _ uri: String, form body: String, headers: [(String, String)] = []) async throws -> RetryAnswer {
        let response = try await client.execute(
            uri: uri, method: .post, headers: fields([bearer, ("Content-Type", "application/x-www-form-urlencoded")] + headers),
            body: ByteBuffer(string: body)
        )
        return RetryAnswer(response: response)
    }

    static func fields(_ pairs: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in pairs { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return fields
    }

    static let bearer = ("Authorization", "Bearer \(token)")
    static var basic: (String, String) { ("Authorization", "Basic " + Data("someone:\(token)".utf8).base64EncodedString()) }

    static func page(_ client: any TestClientProtocol, _ uri: String = "/") async throws -> (TestResponse, String) {
        let response = try await client.execute(uri: uri, method: .get, headers: fields([bearer]))
        return (response, String(buffer: response.body))
    }

    struct RetryAnswer {
        var response: TestResponse
        var status: HTTPResponse.Status { response.status }
        var code: String? {
            let json = (try? JSONSerialization.jsonObject(with: Data(buffer: response.body))) as? [String: Any]
            return (json?["error"] as? [String: Any])?["code"] as? String
        }
        var outcome: String { "\(status.code) \(code ?? "-")" }
    }

    static func retry(_ client: any TestClientProtocol, _ jobID: String, body: String?, headers: [(String, String)] = []) async throws -> RetryAnswer {
        let form = [("Content-Type", "application/x-www-form-urlencoded")]
        let response = try await client.execute(
            uri: "/jobs/\(jobID)/retry", method: .post, headers: fields([bearer] + form + headers), body: body.map { ByteBuffer(string: $0) }
        )
        return RetryAnswer(response: response)
    }

    static func state(_ store: SQLiteStore, _ jobID: String) async throws -> JobState? {
        try await store.jobs(state: nil, limit: 100).first { $0.id == jobID }?.state
    }

    // MARK: HTTP

    @Test func absentWithoutAdminToken() async throws {
        var harness = try Harness()
        harness.token = nil
        try await harness.run { client, _ in
            let page = try await client.execute(uri: "/", method: .get, headers: Self.fields([Self.bearer]))
            #expect(page.status == .notFound)
            let post = try await client.execute(uri: "/jobs/job_0123456789abcdef/retry", method: .post, headers: Self.fields([Self.bearer]))
            #expect(post.status == .notFound)
        }
    }

    @Test func needsTheTokenThenServesTheSecuredPage() async throws {
        try await Harness().run { client, _ in
            let wrongBasic = "Basic " + Data("someone:not-the-token-at-all".utf8).base64EncodedString()
            for headers in [[], [("Authorization", "Bearer not-the-token-at-all")], [("Authorization", wrongBasic)]] {
                let response = try await client.execute(uri: "/", method: .get, headers: Self.fields(headers))
                #expect(response.status == .unauthorized)
                #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Basic ") == true)
                #expect(!String(buffer: response.body).contains("<html"))
            }
            for credentials in [Self.bearer, Self.basic] {
                let response = try await client.execute(uri: "/", method: .get, headers: Self.fields([credentials]))
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                #expect(response.headers[.contentSecurityPolicy] == "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; media-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
                #expect(response.headers[.cacheControl] == "no-store")
                #expect(response.headers[.xContentTypeOptions] == "nosniff")
                #expect(response.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer")
                let html = String(buffer: response.body)
                #expect(html.hasPrefix("<!doctype html>"))
                #expect(html.contains("<h2>Counters</h2>") && html.contains("No dead jobs.") && html.contains("No generations yet."))
                #expect(!Self.withoutOurScript(html).contains("<script"))
            }
        }
    }

    @Test func everyOutsideValueIsEscaped() async throws {
        try await Harness().run { client, store in
            let now = Self.nowMilliseconds()
            try await Self.event(
                store, id: "msg_x'\"&1", generation: "<script>alert(1)</script>", status: .failed, at: now,
                outputURL: #"https://x.example/"><img src=x onerror=alert(2)>"#, error: "<b>bold</b> & 'quoted'"
            )
            let (response, html) = try await Self.page(client)
            #expect(response.status == .ok)
            #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
            #expect(html.contains("https://x.example/&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"))
            #expect(html.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &#39;quoted&#39;"))
            #expect(html.contains("msg_x&#39;&quot;&amp;1"))
            #expect(!Self.withoutOurScript(html).contains("<script") && !html.contains("<img") && !html.contains("<b>"))
            // Output URLs are text, never links (nor anything else that loads): the only links are
            // the page's own, to paths here, with outside values percent-encoded.
            let hrefs = html.components(separatedBy: #"href=""#).dropFirst().map { $0.prefix { $0 != "\"" } }
            #expect(!hrefs.isEmpty && hrefs.allSatisfy { $0.hasPrefix("/") && !$0.contains("x.example") }, "\(hrefs)")
            #expect(hrefs.contains("/generation?source=pipevideo&amp;id=%3Cscript%3Ealert%281%29%3C%2Fscript%3E"), "\(hrefs)")
            #expect(!Self.withoutOurScript(html).contains(#"src=""#))
        }
    }

    /// Issue 14: the list pages through every generation with its filters in the URL, and each
    /// generation has a page of its own at a stable address (timeline, jobs and attempts).
    @Test func generationsArePagedFilteredAndHaveTheirOwnPage() async throws {
        try await Harness().run { client, store in
            let now = Self.nowMilliseconds()
            for index in 0..<60 {
                try await Self.event(store, id: "msg_page_\(index)", generation: "gen_page_\(index)", status: index % 3 == 0 ? .failed : .queued, at: now + Int64(index))
            }
            let (_, first) = try await Self.page(client)
            #expect(first.contains("gen_page_59") && first.contains("gen_page_10") && !first.contains("gen_page_9<"), "the first 50")
            let next = try #require(first.components(separatedBy: #"<a id="next-page" href=""#).dropFirst().first?.prefix { $0 != "\"" })
            let (secondResponse, second) = try await Self.page(client, next.replacingOccurrences(of: "&amp;", with: "&"))
            #expect(secondResponse.status == .ok)
            #expect(second.contains("gen_page_9<") && second.contains("gen_page_0<") && !second.contains("gen_page_10<"))
            #expect(!second.contains("next-page"), "the last page has no next link")

            let (_, failed) = try await Self.page(client, "/?status=failed&source=pipevideo")
            #expect(failed.contains("gen_page_57") && !failed.contains("gen_page_58") && failed.contains(#"<option value="failed" selected>"#))
            let (badResponse, _) = try await Self.page(client, "/?after=not-a-cursor!")
            #expect(badResponse.status == .badRequest)
            for bad in ["/?job_state=sleeping", "/?route=a%00b", "/?source=%0A", "/api/generations?job_state=x"] {
                #expect(try await Self.page(client, bad).0.status == .badRequest, "\(bad)")
            }
            // By job: only gen_page_1 has a dead job of route notify; the filters stay in the form.
            let dead = try await Self.deadJob(store, generation: "gen_page_1", error: "boom", at: now - 100_000)
            let (_, byJob) = try await Self.page(client, "/?job_state=dead&route=notify")
            #expect(byJob.contains("gen_page_1<") && !byJob.contains("gen_page_2<") && byJob.contains(#"<option value="dead" selected>"#))
            #expect(byJob.contains(#"name="route" value="notify""#) && byJob.contains(dead))
            let (_, none) = try await Self.page(client, "/?job_state=dead&route=publish")
            #expect(none.contains("No generations match."))

            let (pageResponse, own) = try await Self.page(client, "/generation?source=pipevideo&id=gen_page_3")
            #expect(pageResponse.status == .ok && pageResponse.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true)
            #expect(own.contains("<h1>Generation <code>gen_page_3</code></h1>") && own.contains("msg_page_3") && own.contains(#"<details class="generation" open>"#))
            #expect(own.contains(#"<section id="events">"#) && own.contains(#"<pre class="payload">{}</pre>"#), "\(own)")
            // A payload is shown as the text it is, never as markup.
            let hostile = IncomingDelivery(
                source: "pipevideo", deliveryID: "msg_hostile", receivedAt: now + 100, signedAt: (now + 100) / 1000,
                body: Array(#"{"note":"</pre><script>alert(3)</script>"}"#.utf8),
                content: .event(GenerationEvent(eventType: "video.generation.failed", generationID: "gen_page_3", status: .failed))
            )
            _ = try await store.ingest(hostile)
            let (_, shown) = try await Self.page(client, "/generation?source=pipevideo&id=gen_page_3")
            #expect(shown.contains("&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;") && !shown.contains("<script>"), "\(shown)")
            #expect(try await Self.page(client, "/generation?source=other&id=gen_page_3").0.status == .notFound)
            #expect(try await Self.page(client, "/generation?id=gen_page_3").0.status == .badRequest)
        }
    }

    /// Issue 14: find a generation by the id a person has — its own, a delivery's, a job's; one
    /// answer goes straight to its page, several are listed, none is said, markup stays text.
    @Test func searchFindsGenerationsByGenerationDeliveryOrJobID() async throws {
        try await Harness().run { client, store in
            let now = Self.nowMilliseconds()
            let jobID = try await Self.deadJob(store, generation: "gen_found", error: "no", at: now)
            var twin = IncomingDelivery(
                source: "rotating", deliveryID: "msg_twin", receivedAt: now, signedAt: now / 1000, body: Array("{}".utf8),
                content: .event(GenerationEvent(eventType: "video.generation.queued", generationID: "gen_found", status: .queued))
            )
            _ = try await store.ingest(twin)
            twin.source = "pipevideo"
            twin.deliveryID = "msg_lonely"
            twin.content = .event(GenerationEvent(eventType: "video.generation.queued", generationID: "gen_lonely", status: .queued))
            _ = try await store.ingest(twin)
            func find(_ text: String) async throws -> TestResponse {
                var allowed = CharacterSet.alphanumerics
                allowed.insert(charactersIn: "-._~")
                return try await Self.page(client, "/search?q=" + text.addingPercentEncoding(withAllowedCharacters: allowed)!).0
            }
            for (text, target) in [
                (jobID, "/generation?source=pipevideo&id=gen_found"), ("msg_gen_found_2", "/generation?source=pipevideo&id=gen_found"),
                ("gen_lonely", "/generation?source=pipevideo&id=gen_lonely"), ("  msg_lonely ", "/generation?source=pipevideo&id=gen_lonely"),
            ] {
                let answer = try await find(text)
                #expect(answer.status == .seeOther && answer.headers[.location] == target, "\(text) → \(answer.headers[.location] ?? "")")
            }
            // The same id in two sources: both listed.
            let both = try await find("gen_found")
            let listed = String(buffer: both.body)
            #expect(both.status == .ok && listed.contains("2 generations:"), "\(listed)")
            #expect(listed.contains(#"href="/generation?source=pipevideo&amp;id=gen_found""#) && listed.contains(#"href="/generation?source=rotating&amp;id=gen_found""#))
            let none = try await find("<img src=x>")
            let nothing = String(buffer: none.body)
            #expect(none.status == .ok && nothing.contains("Nothing in the store has the id <code>&lt;img src=x&gt;</code>") && !nothing.contains("<img"))
            #expect(try await find("").status == .seeOther)
            let (_, home) = try await Self.page(client)
            #expect(home.contains(#"<form method="get" action="/search""#))
        }
    }

    @Test func pageShowsCountersDeadJobsGenerationsAndAttempts() async throws {
        try await Harness().run { client, store in
            let jobID = try await Self.deadJob(store, generation: "gen_page", error: "upload refused: 403")
            let (_, html) = try await Self.page(client)
            #expect(html.contains(#"<th scope="row">dead</th><td>1</td>"#))
            #expect(html.contains(#"<th scope="row">events stored</th><td>2</td>"#))
            // The charts: SVG drawn here, the two events of the last hour in its minute bars.
            #expect(html.contains(#"<svg viewBox="0 0 360 130" role="img" aria-label="Events stored, last hour, per minute" id="events-hour" data-total="2">"#))
            #expect(html.contains(#"id="attempts-hour" data-total="1""#))
            #expect(html.contains(#"<table id="latencies">"#))
            #expect(html.contains("<code>\(jobID)</code>"))
            #expect(html.contains("upload refused: 403"))
            #expect(html.contains("queued → completed") && html.contains("(new) → queued") && html.contains("msg_gen_page_2"))
            #expect(html.contains("exit status 3"))
            #expect(html.contains("https://cdn.example/gen_page.mp4?sig=abc&amp;exp=1"))
            // The form carries the token the server will check, derived from the admin token.
            #expect(html.contains(#"<form method="post" action="/jobs/\#(jobID)/retry">"#))
            #expect(html.contains(#"name="csrf" value="\#(Self.csrf(jobID))""#))
            #expect(!html.contains(Self.token))
            // ISO-8601 UTC times.
            #expect(html.range(of: #"<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">"#, options: .regularExpression) != nil)
        }
    }

    @Test func retryNeedsTokenFormTokenAndSameOrigin() async throws {
        try await Harness().run { client, store in
            let jobID = try await Self.deadJob(store, generation: "gen_retry", error: "boom")
            let good = "csrf=" + Self.csrf(jobID)
            // Missing or wrong form token: another job's, another admin token's, garbage.
            for body in [
                nil, "other=1", "csrf=", "csrf=00", "csrf=" + Self.csrf("job_0123456789abcdef"),
                "csrf=" + Self.csrf(jobID, token: "another-token-0123456789"), "csrf=" + Self.csrf(jobID).uppercased(),
            ] {
                let answer = try await Self.retry(client, jobID, body: body)
                #expect(answer.outcome == "403 csrf_failed", "\(body ?? "no body")")
            }
            // The right form token, but the browser says another site sent it.
            for headers in [
                [("Origin", "http://evil.example")], [("Origin", "https://evil.example")], [("Origin", "http://localhost.evil.example")],
                [("Origin", "null")], [("Origin", "file://")], [("Sec-Fetch-Site", "cross-site")], [("Sec-Fetch-Site", "same-site")],
                [("Origin", "null"), ("Sec-Fetch-Site", "cross-site")], [("Origin", "http://localhost"), ("Sec-Fetch-Site", "cross-site")],
            ] {
                let answer = try await Self.retry(client, jobID, body: good, headers: headers)
                #expect(answer.outcome == "403 csrf_failed", "\(headers)")
            }
            // Without the admin token the form token alone does nothing.
            let anonymous = try await client.execute(
                uri: "/jobs/\(jobID)/retry", method: .post, headers: Self.fields([("Content-Type", "application/x-www-form-urlencoded")]),
                body: ByteBuffer(string: good)
            )
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.headers[.wwwAuthenticate] != nil)
            // Not a form, or too large.
            let json = try await client.execute(
                uri: "/jobs/\(jobID)/retry", method: .post, headers: Self.fields([Self.bearer, ("Content-Type", "application/json")]),
                body: ByteBuffer(string: #"{"csrf":"x"}"#)
            )
            #expect(json.status == .unsupportedMediaType)
            let large = try await Self.retry(client, jobID, body: good + "&pad=" + String(repeating: "x", count: 5000))
            #expect(large.outcome == "413 body_too_large")
            #expect(try await Self.state(store, jobID) == .dead)
        }
    }

    @Test func goodRetryRedirectsAndTheJobIsPending() async throws {
        try await Harness().run { client, store in
            let jobID = try await Self.deadJob(store, generation: "gen_good", error: "boom")
            // Same origin as the Host the client sends, and the form value percent-encoded.
            let answer = try await Self.retry(
                client, jobID, body: "x=1&csrf=" + Self.csrf(jobID) + "&y=%26", headers: [("Origin", "http://localhost"), ("Sec-Fetch-Site", "same-origin")]
            )
            #expect(answer.status == .seeOther)
            #expect(answer.response.headers[.location] == "/?retried=\(jobID)")
            #expect(try await Self.state(store, jobID) == .pending)
            let (_, html) = try await Self.page(client, "/?retried=\(jobID)")
            #expect(html.contains("Job <code>\(jobID)</code> queued again."))
            #expect(html.contains("No dead jobs."))
            // A notice for something that is not a job id is not shown.
            let (_, other) = try await Self.page(client, "/?retried=%3Cscript%3E")
            #expect(!other.contains("queued again") && !Self.withoutOurScript(other).contains("<script"))
        }
    }

    @Test func retryAllDeadJobsOfARouteAndReplayAnEventFromThePage() async throws {
        var harness = try Harness()
        harness.extra = """
            routes:
              - name: notify
                on: [completed]
                steps:
                  - exec: {command: ["/bin/true"]}
            """
        try await harness.run { client, store in
            let first = try await Self.deadJob(store, generation: "gen_r1", error: "boom")
            let second = try await Self.deadJob(store, generation: "gen_r2", error: "boom")
            let other = try await Self.deadJob(store, generation: "gen_r3", error: "boom", route: "publish")
            let (_, html) = try await Self.page(client)
            #expect(html.contains("Retry all dead jobs of route notify"))
            #expect(html.contains("Retry all dead jobs of route publish"))
            let good = Self.form([("route", "notify"), ("csrf", Self.csrf(purpose: "retry-route:notify"))])
            // Another route's token, no token, another site: refused, nothing retried.
            for (body, headers) in [
                (Self.form([("route", "notify"), ("csrf", Self.csrf(purpose: "retry-route:publish"))]), [(String, String)]()),
                (Self.form([("route", "notify")]), []),
                (good, [("Sec-Fetch-Site", "cross-site")]),
            ] {
                #expect(try await Self.post(client, "/routes/retry-dead", form: body, headers: headers).outcome == "403 csrf_failed")
            }
            #expect(try await Self.post(client, "/routes/retry-dead", form: "csrf=x").outcome == "400 invalid_request")
            #expect(try await Self.state(store, first) == .dead)
            let answer = try await Self.post(client, "/routes/retry-dead", form: good, headers: [("Sec-Fetch-Site", "same-origin")])
            #expect(answer.status == .seeOther)
            #expect(answer.response.headers[.location] == "/?retried_route=notify&retried_count=2")
            #expect(try await Self.state(store, first) == .pending)
            #expect(try await Self.state(store, second) == .pending)
            #expect(try await Self.state(store, other) == .dead)
            let (_, after) = try await Self.page(client, "/?retried_route=notify&retried_count=2")
            #expect(after.contains("2 dead jobs of route <strong>notify</strong> queued again."))
            let (_, hostile) = try await Self.page(client, "/?retried_route=%3Cb%3E&retried_count=1")
            #expect(hostile.contains("&lt;b&gt;") && !hostile.contains("<b>"))

            // Replay: the event's routes (as configured now) run again.
            let event = "msg_gen_r1_2"
            let replay = Self.form([("source", "pipevideo"), ("event", event), ("csrf", Self.csrf(purpose: "replay:pipevideo\u{0}\(event)"))])
            let (_, generationPage) = try await Self.page(client, "/generation?source=pipevideo&id=gen_r1")
            #expect(generationPage.contains(#"action="/events/replay""#))
            #expect(generationPage.contains(Self.csrf(purpose: "replay:pipevideo\u{0}\(event)")))
            let forged = Self.form([("source", "pipevideo"), ("event", "msg_gen_r2_2"), ("csrf", Self.csrf(purpose: "replay:pipevideo\u{0}\(event)"))])
            #expect(try await Self.post(client, "/events/replay", form: forged).outcome == "403 csrf_failed")
            let missing = Self.form([("source", "pipevideo"), ("event", "msg_none"), ("csrf", Self.csrf(purpose: "replay:pipevideo\u{0}msg_none"))])
            #expect(try await Self.post(client, "/events/replay", form: missing).outcome == "404 event_not_found")
            let before = try await store.jobs(generationID: "gen_r1", source: "pipevideo").count
            let replayed = try await Self.post(client, "/events/replay", form: replay)
            #expect(replayed.status == .seeOther)
            #expect(replayed.response.headers[.location] == "/generation?source=pipevideo&id=gen_r1&replayed=msg_gen_r1_2&replayed_count=1")
            #expect(try await store.jobs(generationID: "gen_r1", source: "pipevideo").count == before + 1)
            let (_, shown) = try await Self.page(client, replayed.response.headers[.location]!)
            #expect(shown.contains("Event <code>msg_gen_r1_2</code> replayed: 1 job queued."))
        }
    }

    /// A generation's own page shows what each attempt printed (escaped); the list does not.
    @Test func generationPageShowsEachAttemptsCapturedOutput() async throws {
        try await Harness().run { client, store in
            let now = Self.nowMilliseconds()
            try await Self.event(store, id: "msg_out_1", generation: "gen_out", status: .completed, at: now, routes: ["notify"])
            let claimed = try #require(try await store.claimJobs(owner: "t", leaseMilliseconds: 60_000, limit: 10).first)
            let attempt = try await store.startAttempt(claimed.lease, step: 0, stepKind: "exec", attempt: 1)
            _ = try await store.finishAttempt(
                attempt, lease: claimed.lease,
                result: AttemptResult(outcome: .dead, summary: "exit 3", exitCode: 3, output: Array("uploading…\n<b>refused</b> & gone\n".utf8)),
                disposition: .dead(error: "exit 3")
            )
            let (_, own) = try await Self.page(client, "/generation?source=pipevideo&id=gen_out")
            #expect(own.contains("Output, 35 bytes, exit 3"), "\(own)")
            #expect(own.contains("uploading…\n&lt;b&gt;refused&lt;/b&gt; &amp; gone") && !own.contains("<b>refused"))
            let (_, list) = try await Self.page(client)
            #expect(!list.contains("uploading…"))
        }
    }

    @Test func unknownMalformedAndUnretryableJobs() async throws {
        try await Harness().run { client, store in
            let unknown = "job_00000000000000ff"
            #expect(try await Self.retry(client, unknown, body: "csrf=" + Self.csrf(unknown)).outcome == "404 job_not_found")
            for malformed in ["job_123", "job_0123456789ABCDEF", "nope", "job_0123456789abcdef0", "job_0123456789abcdeg"] {
                #expect(try await Self.retry(client, malformed, body: "csrf=" + Self.csrf(malformed)).outcome == "404 job_not_found", "\(malformed)")
            }
            let succeeded = try await Self.finishedJob(
                store, generation: "gen_ok", disposition: .advance(artifact: nil, done: true), summary: "ok", at: Self.nowMilliseconds()
            )
            let answer = try await Self.retry(client, succeeded, body: "csrf=" + Self.csrf(succeeded))
            #expect(answer.outcome == "409 job_not_retryable")
            #expect(String(buffer: answer.response.body).contains("already succeeded"))
            #expect(try await Self.state(store, succeeded) == .succeeded)
        }
    }

    // MARK: Real browser

    struct BrowserResult: Decodable {
        var loaded: String
        var expanded: String
        var clicked: String?
        var statuses: [Int]
        var urls: [String]
        var seconds: Double
    }

    static let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Browser/check_page.py").path

    static func onPath(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs the driver; its own cap is 60 s (120 s with a scenario), ours (SIGTERM, which it turns
    /// into cleanup) 30 s more.
    static func runDriver(url: String, in dir: String, scenario: String? = nil) async throws -> (status: Int32, stdout: String, stderr: String) {
        let outPath = dir + "/browser.out", errPath = dir + "/browser.err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", driver, url, token] + (scenario.map { [$0] } ?? [])
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let (exits, continuation) = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { finished in
            continuation.yield(finished.terminationStatus)
            continuation.finish()
        }
        try process.run()
        let pid = process.processIdentifier
        let watchdog = Task {
            try await Task.sleep(for: .seconds(scenario == nil ? 90 : 150))
            kill(pid, SIGTERM)
        }
        var status: Int32 = -1
        for await code in exits { status = code }
        watchdog.cancel()
        try out.close()
        try err.close()
        let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return (status, stdout, stderr)
    }

    /// What a person sees, with table cells and line breaks folded to single spaces.
    static func flat(_ text: String) -> String {
        text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    @Test(.timeLimit(.minutes(3)))
    func realChromiumShowsThePageAndRetries() async throws {
        // CI installs chromium (.ci/run); its absence is a failure, never a skip.
        guard Self.onPath("chromium") != nil else {
            Issue.record("chromium is not installed: this test drives a real headless Chromium (apt-get install chromium)")
            return
        }
        guard Self.onPath("python3") != nil else {
            Issue.record("python3 is not installed: it runs the Chromium driver \(Self.driver)")
            return
        }
        let harness = try Harness()
        let dir = harness.dir.path
        let now = Self.nowMilliseconds()
        let jobID = try await Self.deadJob(harness.store, generation: "gen_browser_dead", error: "upload refused: HTTP 403", at: now)
        try await Self.event(harness.store, id: "msg_failed_1", generation: "gen_browser_failed", status: .failed, at: now + 1_000,
                             error: "content policy violation")
        try await Self.event(harness.store, id: "msg_xss_1", generation: "<script>alert(1)</script>", status: .queued, at: now + 2_000)

        try await harness.run { client, store in
            let port = try #require(client.port)
            let started = ContinuousClock.now
            let run = try await Self.runDriver(url: "http://127.0.0.1:\(port)/", in: dir)
            let elapsed = ContinuousClock.now - started
            print("StatusPageTests: the Chromium run took \(elapsed)")
            try #require(run.status == 0, "driver exited \(run.status): \(run.stdout) \(run.stderr.suffix(2000))")
            let result = try JSONDecoder().decode(BrowserResult.self, from: Data(run.stdout.utf8))
            #expect(result.statuses == [200, 200])

            let loaded = Self.flat(result.loaded)
            for visible in [
                "Counters", "pending 0", "running 0", "dead 1",
                "Last hour", "events stored 4", "status changes 4", "unrecognized 0", "steps dead 1", "Last day",
                "Events stored, last hour, per minute", "Step attempts, last day, per hour", "Latency", "steps, last hour",
                // The dead job, with its error and a Retry button.
                jobID, "notify", "upload refused: HTTP 403", "Retry",
                // Generations with their status; the one with a dead job is unfolded.
                "gen_browser_dead completed", "gen_browser_failed failed", "content policy violation",
                "https://cdn.example/gen_browser_dead.mp4?sig=abc&exp=1",
                "webhook queued → completed applied msg_gen_browser_dead_2", "exit status 3",
                // An id that looks like markup is shown as the text it is.
                "<script>alert(1)</script>",
            ] {
                #expect(loaded.contains(visible), "not on the page: \(visible)\n\(loaded)")
            }
            // Folded generations show their timeline once opened.
            #expect(!loaded.contains("(new) → failed"))
            #expect(Self.flat(result.expanded).contains("webhook (new) → failed applied msg_failed_1"))

            let clicked = Self.flat(try #require(result.clicked, "no Retry button was found to click"))
            #expect(result.urls.last == "http://127.0.0.1:\(port)/?retried=\(jobID)")
            #expect(clicked.contains("Job \(jobID) queued again."))
            #expect(clicked.contains("pending 1") && clicked.contains("dead 0") && clicked.contains("No dead jobs."))
            #expect(try await Self.state(store, jobID) == .pending)
        }
    }

    /// Where the Chromium flows leave their screenshots: `PIPEHOOK_TEST_ARTIFACTS`, or
    /// `.build/test-artifacts` in the package.
    static let artifacts: String = {
        if let given = ProcessInfo.processInfo.environment["PIPEHOOK_TEST_ARTIFACTS"], !given.isEmpty { return given + "/status-page" }
        let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return package.appendingPathComponent(".build/test-artifacts/status-page").path
    }()

    static let media = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Browser/media").path

    struct ScenarioResult: Decodable {
        var results: [String: JSONValue]
        var statuses: [Int]
        var urls: [String]
        var media: [MediaRequest]
    }

    /// `[status, Range header or null]`.
    struct MediaRequest: Decodable, CustomStringConvertible {
        var status: Int
        var range: String?
        init(from decoder: any Decoder) throws {
            var container = try decoder.unkeyedContainer()
            status = try container.decode(Int.self)
            range = try container.decodeIfPresent(String.self)
        }
        var description: String { "\(status) \(range ?? "-")" }
    }

    /// What a scenario step hands back: text, a number or a flag.
    enum JSONValue: Decodable, Equatable {
        case text(String), number(Double), flag(Bool), null
        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() { self = .null }
            else if let flag = try? container.decode(Bool.self) { self = .flag(flag) }
            else if let number = try? container.decode(Double.self) { self = .number(number) }
            else { self = .text(try container.decode(String.self)) }
        }
        var text: String { if case .text(let text) = self { text } else { "" } }
        var number: Double? { if case .number(let number) = self { number } else { nil } }
    }

    /// Every flow of the page in one real Chromium: search, filter, paginate, open a generation,
    /// play its archived video, replay an event, retry a dead job and all of a route's; a
    /// screenshot after each (in `artifacts`).
    @Test(.timeLimit(.minutes(4)))
    func realChromiumSearchesFiltersPagesPlaysReplaysAndRetries() async throws {
        guard Self.onPath("chromium") != nil, Self.onPath("python3") != nil else {
            Issue.record("chromium and python3 are needed: this test drives a real headless Chromium (apt-get install chromium)")
            return
        }
        var harness = try Harness()
        let dir = harness.dir.path
        let archive = dir + "/videos"
        harness.extra = """
            routes:
              - name: archive
                on: [completed]
                steps:
                  - download: {dir: "\(archive)", path: "{generation_id}.{ext}"}
              - name: notify
                on: [completed]
                steps:
                  - exec: {command: ["/bin/true"]}
            """
        try FileManager.default.createDirectory(atPath: archive, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.media + "/sample.webm", toPath: archive + "/gen_video.webm")
        try FileManager.default.copyItem(atPath: Self.media + "/sample.jpg", toPath: archive + "/gen_video.jpg")
        let videoBytes = Int64(try Data(contentsOf: URL(fileURLWithPath: archive + "/gen_video.webm")).count)
        let store = harness.store
        let now = Self.nowMilliseconds()
        // 55 plain generations: more than one page of 50.
        for index in 0..<55 {
            try await Self.event(store, id: "msg_bulk_\(index)", generation: "gen_bulk_\(index)", status: .completed, at: now - 600_000 + Int64(index))
        }
        try await Self.event(store, id: "msg_failed_1", generation: "gen_failed", status: .failed, at: now - 5_000, error: "content policy violation")
        let video = try await Self.finishedJob(
            store, generation: "gen_video",
            disposition: .advance(artifact: JobArtifact(file: archive + "/gen_video.webm", sha256: String(repeating: "c", count: 64), bytes: videoBytes), done: true),
            summary: "saved", at: now - 4_000, route: "archive"
        )
        let dead = try await Self.deadJob(store, generation: "gen_dead", error: "upload refused: HTTP 403", at: now - 3_000)
        let deadOther = try await Self.deadJob(store, generation: "gen_dead2", error: "timeout", at: now - 2_000, route: "publish")
        try? FileManager.default.removeItem(atPath: Self.artifacts)
        let shots = Self.artifacts
        let videoPage = "/generation?source=pipevideo&id=gen_video"
        let steps: [[String: Any]] = [
            ["goto": "/"], ["text": true, "as": "overview"], ["screenshot": shots + "/1-overview.png"],
            // Search by a job id: straight to its generation's page.
            ["fill": "input[name=q]", "value": dead], ["click": "form[role=search] button", "navigate": true],
            ["eval": "location.pathname + location.search", "as": "searchURL"], ["text": true, "as": "searchResult"],
            ["screenshot": shots + "/2-search.png"],
            // Filter by status; the filter stays in the URL.
            ["goto": "/"], ["fill": "select[name=status]", "value": "failed"],
            ["click": #"form[action="/"] button[type=submit]"#, "navigate": true],
            ["eval": "location.search", "as": "filterURL"], ["text": true, "as": "filtered"], ["screenshot": shots + "/3-filter.png"],
            // The next page of all generations.
            ["goto": "/"], ["click": "#next-page", "navigate": true], ["eval": "location.search", "as": "nextURL"],
            ["text": true, "as": "nextPage"],
            // By job state and route.
            ["goto": "/"], ["fill": "select[name=job_state]", "value": "dead"], ["fill": #"form[action="/"] input[name=route]"#, "value": "publish"],
            ["click": #"form[action="/"] button[type=submit]"#, "navigate": true],
            ["eval": "location.search", "as": "jobFilterURL"], ["text": true, "as": "jobFiltered"], ["screenshot": shots + "/3b-job-filter.png"],
            // The generation's own page plays its archived video.
            ["goto": videoPage],
            ["wait": "(() => { const v = document.querySelector('video'); return !!v && v.readyState >= 1 && isFinite(v.duration) && v.duration > 0; })()"],
            ["eval": "document.querySelector('video').duration", "as": "duration"],
            ["eval": "(async () => { const v = document.querySelector('video'); v.muted = true; await v.play(); await new Promise(r => setTimeout(r, 700)); v.pause(); return v.currentTime; })()", "await": true, "as": "playedTo"],
            ["eval": "document.querySelector('video').videoWidth", "as": "videoWidth"],
            // The CSP lets the page reach its own origin only, and runs no inline script.
            ["eval": "(async () => { let blocked = false; document.addEventListener('securitypolicyviolation', () => { blocked = true; }); try { await fetch('http://127.0.0.2:9/x'); } catch (e) {} const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s); await new Promise(r => setTimeout(r, 200)); return blocked && window.__inline === undefined ? 'blocked' : 'allowed'; })()", "await": true, "as": "fetch"],
            ["eval": "(async () => { const i = new Image(); i.src = document.querySelector('video').poster; await i.decode(); return i.naturalWidth; })()", "await": true, "as": "posterWidth"],
            ["text": true, "as": "videoPage"], ["screenshot": shots + "/4-video.png"],
            // Replay the completed event from the same page.
            ["click": #"form.replay:has(input[value="msg_gen_video_2"]) button"#, "navigate": true], ["text": true, "as": "replayed"], ["screenshot": shots + "/5-replay.png"],
            // Retry one dead job, then all dead jobs of the other route.
            ["goto": "/"], ["click": #"form[action^="/jobs/"] button"#, "navigate": true], ["text": true, "as": "retried"],
            ["screenshot": shots + "/6-retry.png"],
            ["click": "button.retry-route", "navigate": true], ["text": true, "as": "retriedRoute"], ["screenshot": shots + "/7-retry-route.png"],
        ]
        let scenario = dir + "/scenario.json"
        try JSONSerialization.data(withJSONObject: steps).write(to: URL(fileURLWithPath: scenario))

        try await harness.run { client, store in
            let port = try #require(client.port)
            let started = ContinuousClock.now
            let run = try await Self.runDriver(url: "http://127.0.0.1:\(port)/", in: dir, scenario: scenario)
            print("StatusPageTests: the Chromium flows took \(ContinuousClock.now - started); screenshots in \(shots)")
            try #require(run.status == 0, "driver exited \(run.status): \(run.stdout) \(run.stderr.suffix(2000))")
            let result = try JSONDecoder().decode(ScenarioResult.self, from: Data(run.stdout.utf8))
            let r = result.results
            func text(_ key: String) -> String { r[key]?.text ?? "" }
            func number(_ key: String) -> Double? { r[key]?.number }
            #expect(result.statuses.allSatisfy { $0 == 200 }, "\(result.statuses)")
            print("StatusPageTests: media requests (status, range): \(result.media)")

            let overview = Self.flat(text("overview"))
            #expect(overview.contains("50, most recently updated first") && overview.contains("Retry all dead jobs of route notify"), "\(overview.prefix(800))")
            #expect(overview.contains("events stored 62") && overview.contains("steps succeeded 1") && overview.contains("steps dead 2"), "\(overview.prefix(800))")

            #expect(text("searchURL") == "/generation?source=pipevideo&id=gen_dead")
            #expect(Self.flat(text("searchResult")).contains("Generation gen_dead"))

            #expect(text("filterURL").hasPrefix("?status=failed"), "\(text("filterURL"))")
            let filtered = Self.flat(text("filtered"))
            #expect(filtered.contains("gen_failed failed") && !filtered.contains("gen_bulk_"), "\(filtered.prefix(800))")

            #expect(text("nextURL").contains("after="))
            #expect(text("jobFilterURL") == "?status=&source=&route=publish&job_state=dead", "\(text("jobFilterURL"))")
            let jobFiltered = Self.flat(text("jobFiltered"))
            #expect(jobFiltered.contains("gen_dead2 completed") && !jobFiltered.contains("gen_dead completed") && !jobFiltered.contains("gen_bulk_"), "\(jobFiltered.prefix(600))")
            let next = Self.flat(text("nextPage"))
            #expect(next.contains("after the previous page") && next.contains("gen_bulk_0 ") && !next.contains("gen_video"), "\(next.prefix(600))")

            // sample.webm is 2 s long, 160×90; the poster is the 160-wide thumbnail.
            let duration = try #require(number("duration"))
            #expect(abs(duration - 2) < 0.2, "duration \(duration)")
            #expect(((number("playedTo") ?? 0)) > 0, "the video did not play: \(String(describing: r["playedTo"]))")
            #expect(number("videoWidth") == 160)
            #expect(text("fetch") == "blocked")
            // The browser asked for the video by range and got partial content.
            #expect(result.media.contains { $0.status == 206 && $0.range?.hasPrefix("bytes=") == true }, "\(result.media)")
            #expect(number("posterWidth") == 160)
            let videoText = Self.flat(text("videoPage"))
            #expect(videoText.contains("gen_video.webm") && videoText.contains(String(repeating: "c", count: 64)), "\(videoText.prefix(600))")

            #expect(Self.flat(text("replayed")).contains("Event msg_gen_video_2 replayed: 2 jobs queued."))
            #expect(try await store.jobs(generationID: "gen_video", source: "pipevideo").count == 3)

            #expect(Self.flat(text("retried")).contains("queued again"))
            #expect(Self.flat(text("retriedRoute")).contains("queued again") && Self.flat(text("retriedRoute")).contains("No dead jobs."))
            #expect(try await Self.state(store, dead) == .pending)
            #expect(try await Self.state(store, deadOther) == .pending)
            #expect(try await Self.state(store, video) == .succeeded)
            for shot in ["1-overview", "2-search", "3-filter", "4-video", "5-replay", "6-retry", "7-retry-route"] {
                let size = (try? FileManager.default.attributesOfItem(atPath: shots + "/\(shot).png")[.size] as? Int) ?? 0
                #expect(size > 1000, "screenshot \(shot).png missing or empty")
            }
        }
    }

    /// The page refreshes its lists by itself and keeps the filter it was opened with: a
    /// generation that arrives after the page loaded shows up if it matches, and not otherwise.
    @Test(.timeLimit(.minutes(3)))
    func realChromiumRefreshesByItselfKeepingTheFilters() async throws {
        guard Self.onPath("chromium") != nil, Self.onPath("python3") != nil else {
            Issue.record("chromium and python3 are needed: this test drives a real headless Chromium (apt-get install chromium)")
            return
        }
        let harness = try Harness()
        let dir = harness.dir.path
        let store = harness.store
        let now = Self.nowMilliseconds()
        try await Self.event(store, id: "msg_old_1", generation: "gen_old", status: .completed, at: now - 10_000)
        let loaded = dir + "/loaded"
        let steps: [[String: Any]] = [
            ["goto": "/?status=completed&refresh=1"],
            ["eval": "document.body.innerText.includes('gen_live')", "as": "presentAtFirst"],
            ["touch": loaded],
            ["wait": "document.body.innerText.includes('gen_live_done')", "seconds": 20],
            ["eval": "location.search", "as": "search"],
            ["eval": "document.querySelector('select[name=status]').value", "as": "select"],
            ["eval": "document.body.innerText.includes('gen_live_failed')", "as": "showsUnfiltered"],
            ["eval": "Number(document.body.dataset.refreshed || 0)", "as": "refreshed"],
            ["eval": "document.getElementById('live').textContent", "as": "live"],
            ["screenshot": Self.artifacts + "/8-live.png"],
        ]
        let scenario = dir + "/scenario.json"
        try JSONSerialization.data(withJSONObject: steps).write(to: URL(fileURLWithPath: scenario))
        try await harness.run { client, store in
            let port = try #require(client.port)
            // Once the page has loaded: one generation that matches its filter and one that does not.
            let arrivals = Task {
                while !FileManager.default.fileExists(atPath: loaded) { try await Task.sleep(for: .milliseconds(50)) }
                try await Self.event(store, id: "msg_live_1", generation: "gen_live_failed", status: .failed, at: Self.nowMilliseconds())
                try await Self.event(store, id: "msg_live_2", generation: "gen_live_done", status: .completed, at: Self.nowMilliseconds())
            }
            defer { arrivals.cancel() }
            let run = try await Self.runDriver(url: "http://127.0.0.1:\(port)/", in: dir, scenario: scenario)
            try #require(run.status == 0, "driver exited \(run.status): \(run.stdout) \(run.stderr.suffix(2000))")
            try await arrivals.value
            let result = try JSONDecoder().decode(ScenarioResult.self, from: Data(run.stdout.utf8))
            let r = result.results
            #expect(r["presentAtFirst"] == .flag(false))
            #expect(r["search"] == .text("?status=completed&refresh=1"))
            #expect(r["select"] == .text("completed"))
            #expect(r["showsUnfiltered"] == .flag(false))
            #expect((r["refreshed"]?.number ?? 0) >= 1)
            #expect(r["live"]?.text.hasPrefix("Live: refreshed") == true)
            // One document load: the page changed without being reloaded.
            #expect(result.statuses == [200])
        }
    }
}
