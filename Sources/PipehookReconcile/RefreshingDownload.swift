import Logging
import PipehookHandlers
import PipehookSettings

/// A download step that, when the output URL answers 403/404/410 (Pipevideo's signed URLs
/// expire), asks the API for a fresh URL and tries again at once, in the same attempt (SPEC §5, §7).
public struct RefreshingDownload: Sendable {
    let download: @Sendable (DownloadStep, StepContext) async -> StepOutcome
    let api: PipevideoAPI?
    /// Sources whose generations the API knows.
    let sources: @Sendable () -> Set<String>
    let logger: Logger
    /// How long a refresh may wait for an API request slot before the attempt gives up on it.
    let maxWait: Duration

    public init(
        download: @escaping @Sendable (DownloadStep, StepContext) async -> StepOutcome, api: PipevideoAPI?,
        sources: @escaping @Sendable () -> Set<String>, logger: Logger, maxWait: Duration = .seconds(30)
    ) {
        self.download = download
        self.api = api
        self.sources = sources
        self.logger = logger
        self.maxWait = maxWait
    }

    static let expiredStatuses: Set<Int> = [403, 404, 410]

    public func run(_ step: DownloadStep, context: StepContext) async -> StepOutcome {
        let first = await download(step, context)
        guard let api, let status = first.httpStatus, Self.expiredStatuses.contains(status),
            sources().contains(context.document.source)
        else { return first }
        let metadata: Logger.Metadata = [
            "job_id": .string(context.jobID), "event_id": .string(context.document.eventID),
            "generation_id": .string(context.document.generationID),
        ]
        var outcome = first
        switch await api.fetch(context.document.generationID, maxWait: maxWait) {
        case .snapshot(let snapshot, _):
            guard let fresh = snapshot.outputURL, fresh != context.document.outputURL else {
                outcome.summary += "; the API has no newer output URL"
                return outcome
            }
            logger.info("output URL expired; retrying with a fresh one from the API", metadata: metadata)
            var refreshed = context
            refreshed.document.outputURL = fresh
            outcome = await download(step, refreshed)
            outcome.summary = "output URL refreshed after HTTP \(status); " + outcome.summary
            return outcome
        case .notFound:
            outcome.summary += "; the API does not know the generation"
        case .throttled, .rateLimited, .unauthorized, .unavailable, .rejected:
            outcome.summary += "; could not ask the API for a fresh URL now"
        }
        return outcome
    }
}
