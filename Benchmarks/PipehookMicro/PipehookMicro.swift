import Benchmark
import Foundation
import PipehookFormats
import PipehookHandlers
import PipehookLifecycle
import PipehookReconcile
import PipehookSignature
import Logging
import PipehookDaemon
import PipehookSettings
import PipehookStore
import Hummingbird
import HummingbirdTesting
import HTTPTypes
import NIOCore

// The hot path of one webhook, piece by piece (release build, `swift package benchmark`):
// how long each part takes and how many allocations it makes. Whole-request throughput and
// latency are measured against the running binary by Benchmarks/ingest/run.sh (wrk).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(3)
    )

    let secret = try! SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    let body = Array(#"{"eventType":"video.generation.completed","generationId":"gen_01HZX3Q9","status":"completed","outputUrl":"https://cdn.pipevideo.co/v/gen_01HZX3Q9.mp4?sig=abc","errorMessage":null}"#.utf8)
    let now: Int64 = 1_760_000_000
    let signature = Signer.signature(secret: secret, id: "msg_2kP9", timestamp: now, body: body)
    let headers = SignedHeaders(id: "msg_2kP9", timestamp: String(now), signature: signature)
    let rotated = try! [SigningSecret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"), SigningSecret("whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldA=="), secret]

    Benchmark("verify signature (1 secret)") { benchmark in
        let verifier = SignatureVerifier(secrets: [secret])
        for _ in benchmark.scaledIterations {
            blackHole(try? verifier.verify(headers: headers, body: body, now: now))
        }
    }

    Benchmark("verify signature (3 secrets, rotation, match last)") { benchmark in
        let verifier = SignatureVerifier(secrets: rotated)
        for _ in benchmark.scaledIterations {
            blackHole(try? verifier.verify(headers: headers, body: body, now: now))
        }
    }

    Benchmark("reject bad signature") { benchmark in
        let verifier = SignatureVerifier(secrets: rotated)
        let forged = SignedHeaders(id: "msg_2kP9", timestamp: String(now), signature: "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        for _ in benchmark.scaledIterations {
            blackHole(try? verifier.verify(headers: forged, body: body, now: now))
        }
    }

    Benchmark("decode Pipevideo webhook body") { benchmark in
        let format = PipevideoFormat()
        for _ in benchmark.scaledIterations {
            blackHole(try? format.decode(body))
        }
    }

    let apiDocument = Array(#"""
        {"id":"gen_01HZX3Q9","object":"response","status":"completed","output_video_url":null,
         "output":[{"type":"message","content":[{"type":"output_video","video_url":{"url":"https://cdn/v.mp4","expires_at":1999999999}}]}],
         "error":null,"completed_at":1760000000,"artifact_url":null,"usage":{"seconds":8}}
        """#.utf8)
    Benchmark("decode Pipevideo API snapshot") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try? PipevideoAPIFormat.snapshot(apiDocument))
        }
    }

    Benchmark("state machine: fold 6 shuffled events") { benchmark in
        let events: [GenerationStatus] = [.inProgress, .queued, .completed, .failed, .inProgress, .completed]
        for _ in benchmark.scaledIterations {
            blackHole(Lifecycle.fold(events))
        }
    }

    Benchmark("token bucket reserve") { benchmark in
        var bucket = TokenBucket(requestsPerMinute: 100)
        var time: Int64 = 0
        for _ in benchmark.scaledIterations {
            time += 700
            blackHole(bucket.reserve(now: time))
        }
    }

    Benchmark("event document JSON for a step") { benchmark in
        let document = EventDocument(
            eventID: "msg_2kP9", source: "pipevideo", type: PipevideoFormat.completedEventType, generationID: "gen_01HZX3Q9",
            status: .completed, previousStatus: .inProgress, outputURL: "https://cdn.pipevideo.co/v/gen_01HZX3Q9.mp4",
            errorMessage: nil, receivedAt: 1_760_000_000_123, raw: body
        )
        for _ in benchmark.scaledIterations {
            blackHole(document.json())
        }
    }

    // The ceiling of exec steps (issue 9, SPEC §10): attempts of `/bin/true` through ExecRunner
    // (swift-subprocess, its own session, the document on stdin, output captured), 8 at a time, 1,000
    // per iteration, with no store and no dispatcher. Its CPU per attempt is what every exec step
    // costs the daemon before any bookkeeping; Benchmarks/handlers/run.sh puts the whole path beside
    // the machine's own spawn rate.
    let spawnDocument = EventDocument(
        eventID: "msg_2kP9", source: "pipevideo", type: PipevideoFormat.completedEventType, generationID: "gen_01HZX3Q9",
        status: .completed, previousStatus: .inProgress, outputURL: "https://cdn.pipevideo.co/v/gen_01HZX3Q9.mp4",
        errorMessage: nil, receivedAt: 1_760_000_000_123, raw: body
    )
    let spawnConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .cpuTotal, .throughput], scalingFactor: .kilo, maxDuration: .seconds(4), maxIterations: 5
    )
    Benchmark("exec /bin/true through ExecRunner, 8 at a time", configuration: spawnConfiguration) { benchmark in
        let runner = ExecRunner(logger: Logger(label: "micro") { _ in SwiftLogNoOpLogHandler() })
        let step = ExecStep(command: ["/bin/true"], timeoutMilliseconds: 30_000)
        let context = StepContext(jobID: "job_1", attempt: 1, document: spawnDocument)
        let total = benchmark.scaledIterations.count
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<total {
                if index >= 8 { await group.next() }
                group.addTask { blackHole(await runner.run(step, context: context).result == .succeeded) }
            }
        }
    }
    // What every accepted delivery writes at the default level (issue 13: the log path was 15%
    // of ingest CPU), to /dev/null so the figure is the line's making, not the terminal's.
    let devNull = open("/dev/null", O_WRONLY)
    Benchmark("JSON log line (accepted delivery)") { benchmark in
        let handler = JSONLogHandler(label: "pipehook", level: .info, fileDescriptor: devNull)
        let logger = Logger(label: "pipehook") { _ in handler }
        for _ in benchmark.scaledIterations {
            logger.info("accepted delivery", metadata: [
                "source": "pipevideo", "event_id": "msg_2kP9", "generation_id": "gen_01HZX3Q9", "status": "completed",
                "transition": "applied",
            ])
        }
    }

    // The whole intake handler in process (router, no socket), on the memory store: signature,
    // strict JSON, the ingest rules, the answer and the log line; each iteration a new delivery.
    Benchmark("intake handler, in process (memory store)") { benchmark in
        let yaml = """
            listen: "127.0.0.1:0"
            data_dir: "/tmp/pipehook-micro"
            log_level: info
            sources:
              pipevideo:
                secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            routes:
              - {name: archive, on: [completed], steps: [{exec: {command: ["/bin/true"]}}]}
            """
        let settings = try! SettingsParser.parse(yaml: yaml, environment: [:])
        let handler = JSONLogHandler(label: "pipehook", level: .info, fileDescriptor: devNull)
        let app = Daemon.application(settings: settings, store: MemoryStore(), logger: Logger(label: "pipehook") { _ in handler })
        let requests = (0..<benchmark.scaledIterations.count).map { index -> (HTTPFields, ByteBuffer) in
            let body = #"{"eventType":"video.generation.completed","generationId":"gen_\#(index)","status":"completed","outputUrl":"https://cdn.pipevideo.co/v/\#(index).mp4","errorMessage":null}"#
            let stamp = Int64(Date().timeIntervalSince1970)
            let id = "msg_\(index)"
            var fields = HTTPFields()
            fields[HTTPField.Name("svix-id")!] = id
            fields[HTTPField.Name("svix-timestamp")!] = String(stamp)
            fields[HTTPField.Name("svix-signature")!] = Signer.signature(secret: secret, id: id, timestamp: stamp, body: Array(body.utf8))
            return (fields, ByteBuffer(string: body))
        }
        // The router's start and stop are inside the measurement (a closure that may not capture
        // `benchmark`), spread over the 1,000 deliveries of a run.
        benchmark.startMeasurement()
        try? await app.test(.router) { client in
            for (fields, body) in requests {
                blackHole(try await client.execute(uri: "/webhooks/pipevideo", method: .post, headers: fields, body: body).status)
            }
        }
        benchmark.stopMeasurement()
    }
}
