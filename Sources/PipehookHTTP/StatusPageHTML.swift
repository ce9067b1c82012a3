import Foundation
import PipehookLifecycle
import PipehookStore

/// Everything the status page shows, read from the store (one read per list; not one snapshot).
struct StatusPageSnapshot: Sendable {
    struct Job: Sendable {
        var record: JobRecord
        var attempts: [AttemptRecord]
    }

    struct Generation: Sendable {
        var record: GenerationRecord
        var timeline: [TimelineEntry]
        var jobs: [Job]
    }

    static let generationLimit = 50
    static let deadLimit = 50

    var now: Int64
    /// Waiting, running and dead jobs only: each counted over its range of the state index.
    /// (Whole-table counts of a big store cost more than the rest of the page together.)
    var jobCounts: [JobState: Int]
    var dead: [JobRecord]
    var generations: [Generation]
    /// The last hour by minute and the last day by hour, for the counters and charts.
    var hour: Activity
    var day: Activity
    /// Deliveries by result and ingest latencies since this process started (not stored).
    var sinceStart: SinceStart?

    struct SinceStart: Sendable {
        var results: [String: Int]
        var latencies: [Int]
    }
    /// The list's filters and page; `next` is set when there may be another page.
    var query = GenerationQuery(limit: generationLimit)
    var next: GenerationCursor?

    /// The last hour by minute and the last day by hour.
    static func windows(endingAt now: Int64) -> [ActivityWindow] {
        [.last(60, of: 60_000, endingAt: now), .last(24, of: 3_600_000, endingAt: now)]
    }

    static func load(
        from store: any Storage, now: Int64, query: GenerationQuery = GenerationQuery(limit: generationLimit), sinceStart: SinceStart? = nil,
        cache: ActivityCache? = nil
    ) async throws(StoreError) -> Self {
        func activity(_ window: ActivityWindow) async throws(StoreError) -> Activity {
            if let cache { return try await cache.activity(window, now: now, store: store) }
            return try await store.activity(window)
        }
        let jobCounts = try await store.jobCounts(in: [.pending, .running, .dead])
        let dead = try await store.jobs(state: .dead, limit: deadLimit)
        let records = try await store.generations(query)
        let windows = windows(endingAt: now)
        let hour = try await activity(windows[0])
        let day = try await activity(windows[1])
        var snapshot = Self(
            now: now, jobCounts: jobCounts, dead: dead, generations: try await generations(records, from: store),
            hour: hour, day: day, sinceStart: sinceStart
        )
        snapshot.query = query
        snapshot.next = records.count == query.limit ? records.last.map(GenerationCursor.init(after:)) : nil
        return snapshot
    }

    /// Each record with its timeline, jobs and their attempts, read in one call for the page.
    static func generations(_ records: [GenerationRecord], from store: any Storage) async throws(StoreError) -> [Generation] {
        let histories = try await store.histories(records.map { GenerationKey(source: $0.source, generationID: $0.generationID) })
        return records.map { record in
            let history = histories[GenerationKey(source: record.source, generationID: record.generationID)]
            return Generation(
                record: record, timeline: history?.timeline ?? [],
                jobs: (history?.jobs ?? []).map { Job(record: $0.job, attempts: $0.attempts) }
            )
        }
    }
}

/// Server-rendered HTML for the status page. Every value from the store goes through `html(_:)`:
/// generation ids, URLs, error messages and summaries are written by outside senders.
enum StatusPageHTML {
    /// Escapes text for element content and quoted attribute values.
    static func html(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// UTC ISO-8601 from Unix milliseconds.
    static func time(_ milliseconds: Int64) -> String {
        let text = Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(.iso8601)
        return #"<time datetime=""# + html(text) + #"">"# + html(text) + "</time>"
    }

    /// `notice` is HTML made by the caller from validated, escaped values; `formToken` gives the
    /// CSRF token for a purpose (`StatusPage.retryPurpose` and friends).
    static func render(_ snapshot: StatusPageSnapshot, notice: String?, refreshSeconds: Int = 5, formToken: (String) -> String) -> String {
        var page = """
            \(head(title: "pipehook status", script: true))
            <header data-refresh-ms="\(refreshSeconds * 1000)"><h1>pipehook status</h1><p class="muted"><span id="as-of">As of \(time(snapshot.now)) (UTC).</span> <span id="live">Refreshes by itself every \(refreshSeconds) s.</span></p></header>

            """
        if let notice { page += #"<p class="notice" role="status" id="notice">"# + notice + "</p>\n" }
        page += counters(snapshot)
        page += ActivityCharts.section(snapshot)
        page += deadJobs(snapshot, formToken: formToken)
        page += recentGenerations(snapshot)
        page += "</body>\n</html>\n"
        return page
    }

    static func counters(_ snapshot: StatusPageSnapshot) -> String {
        var out = #"<section id="counters"><h2>Counters</h2><div class="counters">"#
        out += #"<table><caption>Jobs now</caption><tbody>"#
        for state in [JobState.pending, .running, .dead] {
            out += #"<tr><th scope="row">"# + html(state.rawValue) + "</th><td>\(snapshot.jobCounts[state] ?? 0)</td></tr>"
        }
        out += "</tbody></table>"
        for (caption, activity) in [("Last hour", snapshot.hour), ("Last day", snapshot.day)] {
            func total(_ series: [Int]) -> Int { series.reduce(0, +) }
            out += "<table><caption>" + caption + "</caption><tbody>"
            for (name, value) in [
                ("events stored", total(activity.eventSeries { _ in true })),
                ("status changes", total(activity.eventSeries { $0.transition == .applied })),
                ("unrecognized", total(activity.unrecognized)),
                ("steps succeeded", total(activity.attemptSeries(.succeeded))),
                ("steps failed", total(activity.attemptSeries(.failed))),
                ("steps dead", total(activity.attemptSeries(.dead))),
            ] {
                out += #"<tr><th scope="row">"# + name + "</th><td>\(value)</td></tr>"
            }
            out += "</tbody></table>"
        }
        if let since = snapshot.sinceStart {
            out += #"<table><caption>Deliveries since start</caption><tbody>"#
            for result in ["accepted", "duplicate", "unrecognized", "rejected", "store_unavailable"] {
                out += #"<tr><th scope="row">"# + html(result) + "</th><td>\(since.results[result] ?? 0)</td></tr>"
            }
            out += "</tbody></table>"
        }
        return out + "</div></section>\n"
    }

    static func deadJobs(_ snapshot: StatusPageSnapshot, formToken: (String) -> String) -> String {
        let total = snapshot.jobCounts[.dead] ?? snapshot.dead.count
        var out = #"<section id="dead"><h2>Dead jobs</h2>"#
        guard !snapshot.dead.isEmpty else { return out + #"<p class="muted">No dead jobs.</p></section>"# + "\n" }
        if total > snapshot.dead.count {
            out += #"<p class="muted">The \#(snapshot.dead.count) most recently updated of \#(total).</p>"#
        }
        // One button per route with dead jobs: the store retries all of that route's, not only these.
        var routes: [String] = []
        for job in snapshot.dead where !routes.contains(job.route) { routes.append(job.route) }
        out += #"<div class="bulk">"#
        for route in routes {
            out += #"<form method="post" action="/routes/retry-dead" class="inline">"#
                + #"<input type="hidden" name="route" value=""# + html(route) + #"">"#
                + #"<input type="hidden" name="csrf" value=""# + html(formToken(StatusPage.retryRoutePurpose(route))) + #"">"#
                + #"<button type="submit" class="retry-route">Retry all dead jobs of route "# + html(route) + "</button></form> "
        }
        out += "</div>"
        out += "<table><thead><tr><th>Job</th><th>Route</th><th>Generation</th><th>Last error</th><th>Updated</th><th></th></tr></thead><tbody>"
        for job in snapshot.dead {
            out += "<tr><td><code>" + html(job.id) + "</code></td><td>" + html(job.route) + "</td><td><code>" + html(job.generationID)
                + #"</code> <span class="muted">"# + html(job.source) + #"</span></td><td class="error">"# + html(job.lastError ?? "")
                + "</td><td>" + time(job.updatedAt) + "</td><td>"
                + #"<form method="post" action="/jobs/"# + html(job.id) + #"/retry">"#
                + #"<input type="hidden" name="csrf" value=""# + html(formToken(StatusPage.retryPurpose(job.id))) + #"">"#
                + #"<button type="submit">Retry</button></form></td></tr>"#
        }
        return out + "</tbody></table></section>\n"
    }

    static func recentGenerations(_ snapshot: StatusPageSnapshot) -> String {
        var out = #"<section id="generations"><h2>Generations</h2>"#
        out += searchForm()
        out += filterForm(snapshot.query)
        let filtered = snapshot.query.status != nil || snapshot.query.source != nil || snapshot.query.filtersJobs
        guard !snapshot.generations.isEmpty else {
            let text = snapshot.query.after != nil ? "No more generations." : filtered ? "No generations match." : "No generations yet."
            return out + #"<p class="muted">"# + text + "</p></section>\n"
        }
        out += #"<p class="muted">\#(snapshot.generations.count)\#(filtered ? " matching" : ""), most recently updated first"#
            + (snapshot.query.after != nil ? ", after the previous page" : "") + ". Open one for its timeline and jobs.</p>"
        for generation in snapshot.generations {
            out += self.generation(generation)
        }
        if let next = snapshot.next {
            var parameters: [(String, String)] = []
            if let status = snapshot.query.status { parameters.append(("status", status.rawValue)) }
            if let source = snapshot.query.source { parameters.append(("source", source)) }
            if let route = snapshot.query.route { parameters.append(("route", route)) }
            if let state = snapshot.query.jobState { parameters.append(("job_state", state.rawValue)) }
            parameters.append(("after", next.token))
            out += #"<p><a id="next-page" href="/?"# + html(queryString(parameters)) + #"">Next page →</a></p>"#
        }
        return out + "</section>\n"
    }

    /// A plain GET form: the filters travel in the URL, so a filtered page can be shared.
    static func filterForm(_ query: GenerationQuery) -> String {
        var out = #"<form method="get" action="/" class="filters"><label>Status <select name="status"><option value="">any</option>"#
        for status in GenerationStatus.allCases {
            out += #"<option value=""# + html(status.rawValue) + #"""# + (query.status == status ? " selected" : "") + ">" + html(status.rawValue) + "</option>"
        }
        out += #"</select></label> <label>Source <input name="source" value=""# + html(query.source ?? "") + #"" size="12"></label> "#
        out += #"<label>Route <input name="route" value=""# + html(query.route ?? "") + #"" size="12"></label> "#
        out += #"<label>Job <select name="job_state"><option value="">any</option>"#
        for state in JobState.allCases {
            out += #"<option value=""# + html(state.rawValue) + #"""# + (query.jobState == state ? " selected" : "") + ">" + html(state.rawValue) + "</option>"
        }
        out += "</select></label> "
        return out + #"<button type="submit">Filter</button> <a href="/">Clear</a></form>"#
    }

    /// `name=value&…`, each part percent-encoded (ids may hold any character).
    static func queryString(_ parameters: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return parameters.map { name, value in
            name + "=" + (value.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")
        }.joined(separator: "&")
    }

    /// The stable address of one generation's page.
    static func generationPath(_ record: GenerationRecord) -> String {
        generationPath(GenerationKey(source: record.source, generationID: record.generationID))
    }

    static func generationPath(_ key: GenerationKey) -> String {
        "/generation?" + queryString([("source", key.source), ("id", key.generationID)])
    }

    /// Find anything by the id a person has at hand: a generation, a delivery or a job.
    static func searchForm(_ text: String = "") -> String {
        #"<form method="get" action="/search" class="filters" role="search"><label>Find <input name="q" value=""#
            + html(text) + #"" size="34" placeholder="generation, delivery or job id"></label> <button type="submit">Find</button></form>"#
    }

    /// `GET /search?q=` when it does not lead to exactly one generation.
    static func renderSearch(_ text: String, found: [GenerationKey], now: Int64) -> String {
        var page = """
            \(head(title: "Search · pipehook"))
            <header><p><a href="/">← status</a></p><h1>Search</h1></header>

            """
        page += searchForm(text)
        if found.isEmpty {
            page += #"<p class="muted" id="search-result">Nothing in the store has the id <code>"# + html(text) + "</code>.</p>"
        } else {
            page += #"<p id="search-result">\#(found.count) generations:</p><ul>"#
            for key in found {
                page += #"<li><a href=""# + html(generationPath(key)) + #""><code>"# + html(key.generationID) + "</code></a> "
                    + #"<span class="muted">source "# + html(key.source) + "</span></li>"
            }
            page += "</ul>"
        }
        return page + "</body>\n</html>\n"
    }

    /// `GET /generation?source=&id=`: one generation on its own page, everything unfolded.
    static func renderGeneration(
        _ generation: StatusPageSnapshot.Generation, events: [StoredEvent] = [], now: Int64, thumbnails: Set<String> = [],
        notice: String? = nil, formToken: (String) -> String = { _ in "" }, replayable: (GenerationStatus) -> Bool = { _ in false }
    ) -> String {
        var page = """
            \(head(title: generation.record.generationID + " · pipehook"))
            <header><p><a href="/">← status</a></p><h1>Generation <code>\(html(generation.record.generationID))</code></h1>
            <p class="muted">Source \(html(generation.record.source)) · as of \(time(now)) (UTC).</p></header>

            """
        if let notice { page += #"<p class="notice" role="status" id="notice">"# + notice + "</p>\n" }
        page += videos(generation, thumbnails: thumbnails)
        page += self.generation(generation, open: true)
        page += payloads(events, formToken: formToken, replayable: replayable)
        return page + "</body>\n</html>\n"
    }

    static func generation(_ generation: StatusPageSnapshot.Generation, open alwaysOpen: Bool = false) -> String {
        let record = generation.record
        // Folded unless a job needs a person's attention.
        let open = alwaysOpen || generation.jobs.contains { $0.record.state == .dead } ? " open" : ""
        var out = #"<details class="generation"\#(open)><summary><a class="permalink" href=""# + html(generationPath(record))
            + #"" title="this generation's own page"><code>"# + html(record.generationID) + "</code></a> "
            + badge(record.status.rawValue) + #" <span class="muted">"# + html(record.source) + " · updated </span>" + time(record.updatedAt)
        if let url = record.outputURL {
            out += #" <span class="muted">· output</span> <span class="url">"# + html(url) + "</span>"
        }
        if let message = record.errorMessage {
            out += #" <span class="muted">· error</span> <span class="error">"# + html(message) + "</span>"
        }
        out += #"</summary><div class="body"><h3>Timeline</h3>"#
        if generation.timeline.isEmpty {
            out += #"<p class="muted">No events kept.</p>"#
        } else {
            out += "<table><thead><tr><th>Received</th><th>Origin</th><th>Change</th><th>Transition</th><th>Event</th></tr></thead><tbody>"
            for entry in generation.timeline {
                out += "<tr><td>" + time(entry.receivedAt) + "</td><td>" + html(entry.origin.rawValue) + "</td><td>"
                    + html(entry.previousStatus?.rawValue ?? "(new)") + " → " + html(entry.status.rawValue) + "</td><td>"
                    + html(entry.transition.rawValue) + "</td><td><code>" + html(entry.eventID) + "</code></td></tr>"
            }
            out += "</tbody></table>"
        }
        out += "<h3>Jobs</h3>"
        if generation.jobs.isEmpty {
            out += #"<p class="muted">No jobs.</p>"#
        }
        for job in generation.jobs {
            out += self.job(job, output: alwaysOpen)
        }
        return out + "</div></details>\n"
    }

    /// `output`: each attempt's captured output too (on a generation's own page; the list would
    /// grow by up to 64 KiB an attempt).
    static func job(_ job: StatusPageSnapshot.Job, output: Bool = false) -> String {
        let record = job.record
        var out = #"<div class="job"><p><code>"# + html(record.id) + "</code> route <strong>" + html(record.route) + "</strong> "
            + badge(record.state.rawValue) + #" <span class="muted">updated</span> "# + time(record.updatedAt)
        if let error = record.lastError {
            out += #" <span class="muted">· last error</span> <span class="error">"# + html(error) + "</span>"
        }
        out += "</p>"
        if let artifact = record.artifact {
            out += #"<p class="muted">Archived "# + self.artifact(artifact, jobID: record.id) + "</p>"
        }
        guard !job.attempts.isEmpty else { return out + #"<p class="muted">No attempts yet.</p></div>"# }
        out += "<table><thead><tr><th>Step</th><th>Kind</th><th>Attempt</th><th>Outcome</th><th>Summary</th><th>Started</th><th>Ended</th></tr></thead><tbody>"
        for attempt in job.attempts {
            out += "<tr><td>\(attempt.step + 1)</td><td>" + html(attempt.stepKind) + "</td><td>\(attempt.attempt)</td><td>"
                + badge(attempt.outcome.rawValue) + "</td><td>" + html(attempt.summary ?? "") + "</td><td>" + time(attempt.startedAt)
                + "</td><td>" + (attempt.endedAt.map(time) ?? "") + "</td></tr>"
            if output, !attempt.output.isEmpty {
                out += #"<tr class="output"><td colspan="7"><details><summary>Output, \#(attempt.output.count) bytes"#
                    + (attempt.exitCode.map { ", exit \($0)" } ?? "") + (attempt.httpStatus.map { ", HTTP \($0)" } ?? "")
                    + #"</summary><pre class="payload">"# + html(String(decoding: attempt.output, as: UTF8.self)) + "</pre></details></td></tr>"
            }
        }
        return out + "</tbody></table></div>"
    }

    /// Each file a download step archived for this generation, played from the archive
    /// (`/media/{job}`), with the thumbnail an exec step made next to it as its poster.
    static func videos(_ generation: StatusPageSnapshot.Generation, thumbnails: Set<String>) -> String {
        let archived = generation.jobs.compactMap { job in job.record.artifact.map { (job.record, $0) } }
        guard !archived.isEmpty else { return "" }
        var out = #"<section id="videos"><h2>Archived video</h2>"#
        for (job, artifact) in archived {
            let source = "/media/" + job.id
            let poster = thumbnails.contains(job.id) ? #" poster=""# + html(source + "/thumbnail") + #"""# : ""
            let type = ArchiveMedia.contentType(artifact.file)
            out += #"<figure class="video">"#
            if type.hasPrefix("video/") {
                out += #"<video controls preload="metadata" src=""# + html(source) + #"""# + poster + "></video>"
            } else if type.hasPrefix("image/") {
                out += #"<img alt="archived image" src=""# + html(source) + #"">"#
            }
            out += "<figcaption>" + self.artifact(artifact, jobID: job.id) + " · route " + html(job.route) + "</figcaption></figure>"
        }
        return out + "</section>\n"
    }

    /// The archived file's name, size and SHA-256, linked to the file itself.
    static func artifact(_ artifact: JobArtifact, jobID: String) -> String {
        #"<a class="artifact" href="/media/"# + html(jobID) + #""><code>"# + html((artifact.file as NSString).lastPathComponent) + "</code></a> "
            + #"<span class="muted">· "# + html(size(artifact.bytes)) + #" · SHA-256</span> <code class="sha">"# + html(artifact.sha256) + "</code>"
    }

    /// "12.3 MB (12,345,678 bytes)": decimal units, the exact count beside.
    static func size(_ bytes: Int64) -> String {
        let units = ["bytes", "kB", "MB", "GB", "TB"]
        var value = Double(bytes), unit = 0
        while value >= 1000, unit < units.count - 1 { value /= 1000; unit += 1 }
        let exact = bytes.formatted(.number.grouping(.automatic).locale(Locale(identifier: "en_US")))
        return unit == 0 ? "\(exact) bytes" : String(format: "%.1f %@ (%@ bytes)", value, units[unit], exact)
    }

    static let payloadLimit = 64 * 1024

    /// Every stored event with the payload exactly as it arrived (text, escaped; a long one cut at
    /// `payloadLimit` bytes with the rest counted).
    /// `replayable` says whether a status starts any route now (only then is Replay offered).
    static func payloads(
        _ events: [StoredEvent], formToken: (String) -> String = { _ in "" }, replayable: (GenerationStatus) -> Bool = { _ in false }
    ) -> String {
        var out = #"<section id="events"><h2>Events and their payloads</h2>"#
        guard !events.isEmpty else { return out + #"<p class="muted">No events kept.</p></section>"# + "\n" }
        for event in events {
            out += #"<details class="generation" open><summary><code>"# + html(event.eventID) + "</code> " + badge(event.status.rawValue)
                + #" <span class="muted">"# + html(event.origin.rawValue) + " · " + html(event.eventType) + " · received </span>" + time(event.receivedAt)
                + "</summary>"
            if replayable(event.status) {
                out += #"<form method="post" action="/events/replay" class="inline replay">"#
                    + #"<input type="hidden" name="source" value=""# + html(event.source) + #"">"#
                    + #"<input type="hidden" name="event" value=""# + html(event.eventID) + #"">"#
                    + #"<input type="hidden" name="csrf" value=""# + html(formToken(StatusPage.replayPurpose(source: event.source, eventID: event.eventID))) + #"">"#
                    + #"<button type="submit" title="run this event's routes again">Replay</button></form>"#
            }
            let shown = event.raw.prefix(payloadLimit)
            out += #"<pre class="payload">"# + html(String(decoding: shown, as: UTF8.self)) + "</pre>"
            if event.raw.count > shown.count {
                out += #"<p class="muted">… \#(event.raw.count - shown.count) more bytes not shown.</p>"#
            }
            out += "</details>"
        }
        return out + "</section>\n"
    }

    /// A coloured label; `value` is one of our own enum raw values, escaped all the same.
    static func badge(_ value: String) -> String {
        #"<span class="badge b-"# + html(value) + #"">"# + html(value) + "</span>"
    }

    /// The start of every page: charset, viewport, the (escaped) title and the inline style.
    static func head(title: String, script: Bool = false) -> String {
        """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(html(title))</title>
        <style>\(style)</style>\(script ? "\n" + #"<script src="/static/status.js" defer></script>"# : "")
        </head>
        <body>
        """
    }

    /// The live refresh of `/`: fetches the same URL (so every filter and page stays as it is)
    /// and swaps in the fresh counters, charts and lists, keeping open what the user opened. It
    /// waits while the tab is hidden or a form field has the focus, and says when it failed.
    static let liveScript = """
        "use strict";
        (() => {
          const header = document.querySelector("header[data-refresh-ms]");
          if (!header) return;
          const every = Number(header.dataset.refreshMs) || 5000;
          const regions = ["as-of", "counters", "charts", "dead", "generations"];
          const live = document.getElementById("live");
          let busy = false, count = 0;
          async function refresh() {
            if (busy || document.hidden) return;
            const focused = document.activeElement;
            if (focused && focused.closest && focused.closest("form") && focused.tagName !== "BUTTON") return;
            busy = true;
            try {
              const answer = await fetch(location.href, {credentials: "same-origin", cache: "no-store"});
              if (!answer.ok) throw new Error("HTTP " + answer.status);
              const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
              const open = new Set(Array.from(document.querySelectorAll("details[open] > summary a.permalink"), a => a.getAttribute("href")));
              for (const id of regions) {
                const mine = document.getElementById(id), theirs = fresh.getElementById(id);
                if (mine && theirs) mine.replaceWith(document.importNode(theirs, true));
              }
              for (const a of document.querySelectorAll("details > summary a.permalink")) {
                if (open.has(a.getAttribute("href"))) a.closest("details").open = true;
              }
              count += 1;
              document.body.dataset.refreshed = String(count);
              live.textContent = "Live: refreshed " + new Date().toISOString().slice(11, 19) + " UTC.";
            } catch (error) {
              live.textContent = "Live refresh failed (" + error.message + "); trying again.";
            } finally {
              busy = false;
            }
          }
          setInterval(refresh, every);
        })();

        """

    static let style = """
        body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#fff}
        h1{font-size:1.4rem;margin:0}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}h3{font-size:1rem;margin:.8rem 0 .3rem}
        .muted{color:#57606a}code{font:12.5px ui-monospace,monospace}
        table{border-collapse:collapse;margin:.3rem 0}th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
        thead th{background:#f6f8fa}caption{text-align:left;font-weight:600;padding:.2rem 0}
        .counters{display:flex;gap:2rem;flex-wrap:wrap;align-items:flex-start}.counters td{text-align:right;min-width:3rem}
        .notice{background:#dafbe1;border:1px solid #4ac26b;padding:.5rem .75rem;border-radius:6px}
        .error{color:#a40e26;white-space:pre-wrap}.url{word-break:break-all}
        details.generation{border:1px solid #d0d7de;border-radius:6px;margin:.4rem 0;padding:.3rem .6rem}
        summary{cursor:pointer}.body{padding:.2rem 0 .4rem 1rem}.job{margin:.5rem 0}
        .badge{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:12px;background:#eaeef2}
        .b-completed,.b-succeeded{background:#dafbe1;color:#116329}.b-failed,.b-dead{background:#ffebe9;color:#a40e26}
        .b-in_progress,.b-running{background:#ddf4ff;color:#0550ae}.b-pending,.b-queued{background:#fff8c5;color:#7d4e00}
        .b-interrupted{background:#fff8c5;color:#7d4e00}
        button{font:inherit;padding:.1rem .7rem;cursor:pointer}
        pre.payload{white-space:pre-wrap;word-break:break-all;background:#f6f8fa;padding:.4rem .6rem;border-radius:6px;max-height:24rem;overflow:auto}
        figure.video{margin:.4rem 0 1rem}figure.video video,figure.video img{max-width:min(100%,720px);max-height:60vh;background:#000;border-radius:6px;display:block}
        figcaption{margin-top:.3rem}code.sha{word-break:break-all}
        form.inline{display:inline-block;margin:.2rem .4rem .2rem 0}.bulk{margin:.3rem 0}
        .charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.4rem 1.2rem}
        .chart svg{width:100%;height:auto;display:block}.chart figcaption{font-size:12px}
        .legend span{display:inline-block;width:.7rem;height:.7rem;border-radius:2px;margin:0 .2rem 0 .5rem;vertical-align:-1px}
        .filters{margin:.3rem 0 .6rem}.filters label{margin-right:.6rem}a.permalink{text-decoration:none}
        """
}
