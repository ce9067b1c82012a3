import Foundation
import Logging
import PipehookHandlers
import PipehookLifecycle
import PipehookSettings

enum Fixtures {
    static let logger = Logger(label: "pipehook.handler-tests")

    static func document(
        generationID: String = "gen_123", source: String = "pipevideo", outputURL: String? = nil,
        errorMessage: String? = nil, raw: [UInt8] = Array(#"{"id":"gen_123"}"#.utf8), artifact: Artifact? = nil
    ) -> EventDocument {
        EventDocument(
            eventID: "evt_1", source: source, type: "video.generation.completed", generationID: generationID,
            status: .completed, previousStatus: .inProgress, outputURL: outputURL, errorMessage: errorMessage,
            receivedAt: 1_700_000_000_123, artifact: artifact, raw: raw
        )
    }

    static func context(_ document: EventDocument, attempt: Int = 1) -> StepContext {
        StepContext(jobID: "job_42", attempt: attempt, document: document)
    }

    static func exec(
        _ command: [String], timeoutMilliseconds: Int64 = 20_000, environment: [String: String] = [:],
        permanentExitCodes: Set<Int32> = []
    ) -> ExecStep {
        ExecStep(
            command: command, timeoutMilliseconds: timeoutMilliseconds, environment: environment,
            permanentExitCodes: permanentExitCodes, concurrency: nil
        )
    }

    static func download(
        directory: String, template: String = "{yyyy}/{mm}/{generation_id}.{ext}", maxBytes: Int64 = 10_000_000,
        allowHTTP: Bool = true, timeoutMilliseconds: Int64 = 5_000
    ) throws -> DownloadStep {
        DownloadStep(
            directory: directory, pathTemplate: try PathTemplate(template), maxBytes: maxBytes, allowHTTP: allowHTTP,
            timeoutMilliseconds: timeoutMilliseconds
        )
    }

    /// A fresh empty directory, removed by the caller with `FileManager.default.removeItem`.
    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("pipehook-handlers-\(UUID().uuidString)", isDirectory: true).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Every regular file under `directory`, relative paths, sorted.
    static func files(under directory: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [] }
        var result: [String] = []
        while let next = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: directory + "/" + next, isDirectory: &isDirectory), !isDirectory.boolValue {
                result.append(next)
            }
        }
        return result.sorted()
    }
}
