import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import PipehookDaemon
import PipehookSQLite
import Testing

/// `/metrics` after a scripted sequence of deliveries: exact values, bounded labels.
@Suite struct MetricsTests {
    /// Prometheus text → ["name{a=\"x\",b=\"y\"}": value] with labels sorted, so order does not matter.
    static func parse(_ text: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            var key = String(line[..<space])
            if let open = key.firstIndex(of: "{"), key.hasSuffix("}") {
                let name = key[..<open]
                let labels = key[key.index(after: open)..<key.index(before: key.endIndex)].split(separator: ",").sorted()
                key = name + "{" + labels.joined(separator: ",") + "}"
            }
            values[key] = value
        }
        return values
    }

    @Test func scriptedDeliveriesShowUpExactly() async throws {
        let dir = TempDir()
        let store = try SQLiteStore(path: dir.path + "/pipehook.sqlite")
        let telemetry = Telemetry()
        let app = Daemon.application(settings: Fixture.settings(dir: dir.path), store: store, logger: Fixture.logger, metrics: telemetry)
        try await app.test(.live) { client in
            func post(_ body: String, _ headers: [(String, String)], source: String = "pipevideo") async throws {
                var fields = HTTPFields()
                for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
                _ = try await client.execute(uri: "/webhooks/\(source)", method: .post, headers: fields, body: ByteBuffer(string: body))
            }
            let queued = Fixture.body(generation: "gen_m", status: "queued")
            let done = Fixture.body(generation: "gen_m", status: "completed")
            try await post(queued, Fixture.headers(id: "m1", body: queued))
            try await post(done, Fixture.headers(id: "m2", body: done))
            try await post(done, Fixture.headers(id: "m2", body: done))                        // duplicate
            try await post(queued, Fixture.headers(id: "m3", body: queued))                    // stale
            try await post("{}", Fixture.headers(id: "m4", body: "{}"))                        // unrecognized
            try await post(done, Fixture.headers(id: "m5", body: done, secret: Fixture.otherSecret))  // forged
            try await post(done, Fixture.headers(id: "m6", body: done, timestamp: Fixture.now() - 999))
            try await post(done, Fixture.headers(id: "m7", body: done), source: "gen_12345_not_a_source")

            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
            let text = String(buffer: response.body)
            let values = Self.parse(text)
            #expect(values[#"pipehook_deliveries_total{result="accepted",source="pipevideo"}"#] == 3)
            #expect(values[#"pipehook_deliveries_total{result="duplicate",source="pipevideo"}"#] == 1)
            #expect(values[#"pipehook_deliveries_total{result="unrecognized",source="pipevideo"}"#] == 1)
            #expect(values[#"pipehook_deliveries_total{result="rejected",source="pipevideo"}"#] == 2)
            #expect(values[#"pipehook_deliveries_total{result="rejected",source="_unknown"}"#] == 1)
            #expect(values[#"pipehook_signature_failures_total{reason="invalid_signature",source="pipevideo"}"#] == 1)
            #expect(values[#"pipehook_signature_failures_total{reason="timestamp_too_old",source="pipevideo"}"#] == 1)
            #expect(values[#"pipehook_transitions_total{from="none",to="queued"}"#] == 1)
            #expect(values[#"pipehook_transitions_total{from="queued",to="completed"}"#] == 1)
            #expect(values[#"pipehook_events_total{source="pipevideo",transition="stale"}"#] == 1)
            #expect(values[#"pipehook_ingest_duration_seconds_count"#] == 5)
            // Nothing sender-controlled becomes a label.
            #expect(!text.contains("gen_m") && !text.contains("gen_12345") && !text.contains("\"m1\""))
        }
    }
}
