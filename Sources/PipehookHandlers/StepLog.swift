import Logging
import PipehookFormats

/// What every step's log lines carry besides `job_id` and `attempt` (SPEC §9: every line about an
/// event names the event and the generation).
enum StepLog {
    static func addEvent(_ context: StepContext, to logger: inout Logger) {
        // The event id is the sender's delivery id: clipped, like the intake's lines.
        logger[metadataKey: "event_id"] = .string(LogText.clip(context.document.eventID))
        logger[metadataKey: "generation_id"] = .string(LogText.clip(context.document.generationID, maxBytes: 256))
    }
}
