import Foundation
import PipehookLifecycle
import PipehookMetrics
import PipehookStore

/// The status page's charts (issue 14), drawn here as SVG: no script, no third-party code, and
/// the page's CSP unchanged. Each is a stacked bar per time bucket, from the store's activity;
/// every bar carries its numbers in a `<title>` (a tooltip) and in data attributes (for tests).
enum ActivityCharts {
    struct Series {
        var name: String
        var color: String
        var values: [Int]
    }

    static let transitionColors: [(Transition, String)] = [
        (.applied, "#2da44e"), (.same, "#8c959f"), (.stale, "#bf8700"), (.conflict, "#cf222e"),
    ]
    static let statusColors: [(GenerationStatus, String)] = [
        (.queued, "#d4a72c"), (.inProgress, "#218bff"), (.completed, "#2da44e"), (.failed, "#cf222e"),
        (.cancelled, "#8c959f"), (.incomplete, "#8250df"),
    ]
    static let outcomeColors: [(AttemptOutcome, String)] = [
        (.succeeded, "#2da44e"), (.failed, "#d4a72c"), (.dead, "#cf222e"), (.interrupted, "#8c959f"),
    ]

    static func section(_ snapshot: StatusPageSnapshot) -> String {
        var out = #"<section id="charts"><h2>Flow</h2><div class="charts">"#
        for (key, caption, activity) in [("hour", "last hour, per minute", snapshot.hour), ("day", "last day, per hour", snapshot.day)] {
            out += chart(
                id: "events-\(key)", title: "Events stored, " + caption, window: activity.window,
                series: transitionColors.map { transition, color in
                    Series(name: transition.rawValue, color: color, values: activity.eventSeries { $0.transition == transition })
                } + [Series(name: "unrecognized", color: "#6e7781", values: activity.unrecognized)]
            )
            out += chart(
                id: "transitions-\(key)", title: "Status changes, " + caption, window: activity.window,
                series: statusColors.map { status, color in
                    Series(name: status.rawValue, color: color, values: activity.eventSeries { $0.transition == .applied && $0.status == status })
                }
            )
            out += chart(
                id: "attempts-\(key)", title: "Step attempts, " + caption, window: activity.window,
                series: outcomeColors.map { outcome, color in Series(name: outcome.rawValue, color: color, values: activity.attemptSeries(outcome)) }
            )
        }
        out += "</div>" + latencies(snapshot)
        return out + "</section>\n"
    }

    /// One stacked bar chart over `window`; series with nothing in the window stay out of the legend.
    static func chart(id: String, title: String, window: ActivityWindow, series: [Series]) -> String {
        let gridColor = "#d0d7de", textColor = "#57606a"
        let width = 360.0, height = 130.0, left = 34.0, right = 4.0, top = 8.0, bottom = 18.0
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let totals = (0..<window.buckets).map { bucket in series.reduce(0) { $0 + ($1.values.indices.contains(bucket) ? $1.values[bucket] : 0) } }
        let peak = max(1, totals.max() ?? 0)
        let slot = plotWidth / Double(window.buckets)
        func number(_ value: Double) -> String { String(format: "%.1f", value) }
        var svg = #"<svg viewBox="0 0 \#(Int(width)) \#(Int(height))" role="img" aria-label=""# + StatusPageHTML.html(title) + #"" id=""#
            + StatusPageHTML.html(id) + #"" data-total="\#(totals.reduce(0, +))">"#
        // Axes: the peak at the top, zero at the bottom, the first bucket's time and the last's.
        svg += #"<line x1="\#(number(left))" y1="\#(number(top + plotHeight))" x2="\#(number(width - right))" y2="\#(number(top + plotHeight))" stroke="\#(gridColor)"/>"#
        svg += #"<text x="\#(number(left - 4))" y="\#(number(top + 8))" text-anchor="end" font-size="10" fill="\#(textColor)">\#(peak)</text>"#
        svg += #"<text x="\#(number(left - 4))" y="\#(number(top + plotHeight))" text-anchor="end" font-size="10" fill="\#(textColor)">0</text>"#
        svg += #"<text x="\#(number(left))" y="\#(number(height - 4))" font-size="10" fill="\#(textColor)">\#(clock(window.since))</text>"#
        svg += #"<text x="\#(number(width - right))" y="\#(number(height - 4))" text-anchor="end" font-size="10" fill="\#(textColor)">\#(clock(window.start(of: window.buckets - 1)))</text>"#
        for bucket in 0..<window.buckets where totals[bucket] > 0 {
            let x = left + slot * Double(bucket) + slot * 0.08
            var y = top + plotHeight
            var parts: [String] = []
            svg += #"<g data-bucket="\#(bucket)" data-count="\#(totals[bucket])">"#
            for item in series {
                let value = item.values.indices.contains(bucket) ? item.values[bucket] : 0
                guard value > 0 else { continue }
                let barHeight = plotHeight * Double(value) / Double(peak)
                y -= barHeight
                svg += #"<rect x="\#(number(x))" y="\#(number(y))" width="\#(number(max(0.5, slot * 0.84)))" height="\#(number(barHeight))" fill="\#(item.color)"/>"#
                parts.append("\(item.name) \(value)")
            }
            svg += "<title>" + StatusPageHTML.html(clock(window.start(of: bucket)) + " UTC: " + parts.joined(separator: ", ")) + "</title></g>"
        }
        svg += "</svg>"
        let shown = series.filter { $0.values.contains { $0 > 0 } }
        var legend = shown.map { #"<span style="background:\#($0.color)"></span>"# + StatusPageHTML.html($0.name) }.joined()
        if shown.isEmpty { legend = #"<span class="muted">nothing in this window</span>"# }
        return #"<figure class="chart">"# + svg + "<figcaption><strong>" + StatusPageHTML.html(title) + #"</strong><br><span class="legend">"#
            + legend + "</span></figcaption></figure>"
    }

    /// Ingest (since start, from the in-process tally) and step (last hour, from the store)
    /// latency percentiles.
    static func latencies(_ snapshot: StatusPageSnapshot) -> String {
        var out = #"<table id="latencies"><caption>Latency</caption><thead><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>of</th></tr></thead><tbody>"#
        if let since = snapshot.sinceStart {
            let cells = [0.5, 0.9, 0.99].map { fraction in
                LocalTally.percentile(since.latencies, fraction).map { "≤ " + duration(nanoseconds: $0) } ?? "–"
            }
            out += #"<tr><th scope="row">ingest, since start</th><td>"# + cells.joined(separator: "</td><td>") + "</td><td>\(since.latencies.reduce(0, +))</td></tr>"
        }
        let steps = snapshot.hour.attemptDurations
        let cells = [0.5, 0.9, 0.99].map { fraction in Percentiles.of(steps, fraction).map { duration(nanoseconds: $0 * 1_000_000) } ?? "–" }
        out += #"<tr><th scope="row">steps, last hour</th><td>"# + cells.joined(separator: "</td><td>") + "</td><td>\(steps.count)</td></tr>"
        return out + "</tbody></table>"
    }

    /// "0.52 ms", "12 ms", "3.4 s".
    static func duration(nanoseconds: Int64) -> String {
        let milliseconds = Double(nanoseconds) / 1_000_000
        if milliseconds < 10 { return String(format: "%.2f ms", milliseconds) }
        if milliseconds < 1000 { return String(format: "%.0f ms", milliseconds) }
        return String(format: "%.1f s", milliseconds / 1000)
    }

    /// "HH:MM" (UTC) of Unix milliseconds.
    static func clock(_ milliseconds: Int64) -> String {
        let seconds = milliseconds / 1000
        let minutes = (seconds / 60) % 60, hours = (seconds / 3600) % 24
        return String(format: "%02d:%02d", hours, minutes)
    }
}
