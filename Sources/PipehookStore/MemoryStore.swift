import Foundation
import PipehookLifecycle
import Synchronization

/// A store that keeps everything in memory, for tests of the dispatcher and the HTTP layer that
/// do not need a disk (as swift-jobs ships `MemoryQueue`). It obeys the same conformance suite as
/// the SQLite and PostgreSQL stores: it reads the facts the rules need and persists the plans of
/// `IngestRules` and `JobRules`, under one lock, so each call is one atomic "transaction". Nothing
/// survives the process: never use it where an acknowledgement must be durable.
public final class MemoryStore: Storage {
    /// The store's clock (Unix ms): leases and due times are set and compared by it.
    private let clock: @Sendable () -> Int64
    private let state = Mutex(State())

    public init(clock: @escaping @Sendable () -> Int64 = MemoryStore.systemClock) {
        self.clock = clock
    }

    public static let systemClock: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }

    struct EventRow {
        var seq: Int64
        var event: StoredEvent
        var transition: Transition
        var signedAt: Int64
    }

    struct JobRow {
        var job: JobRecord
        var replay: Bool
    }

    struct PollRow {
        var poll: PollRecord
        var updatedAt: Int64
    }

    struct UnrecognizedRow {
        var delivery: UnrecognizedDelivery
        var reprocessedAt: Int64?
    }

    struct State {
        var deliveries: [MessageKey: Int64] = [:]
        var unrecognized: [UnrecognizedRow] = []
        var unrecognizedKeys: Set<MessageKey> = []
        var events: [MessageKey: EventRow] = [:]
        var generations: [GenerationKey: GenerationRecord] = [:]
        var polls: [GenerationKey: PollRow] = [:]
        var routeVersions: [String: RoutePin] = [:]
        var jobs: [String: JobRow] = [:]
        var attempts: [Int64: AttemptRecord] = [:]
        var idempotency: [String: IdempotencyRecord] = [:]
        var lastSeq: Int64 = 0
        var lastAttemptID: Int64 = 0

        mutating func nextSeq() -> Int64 {
            lastSeq += 1
            return lastSeq
        }

        func facts(_ needs: IngestRules.Needs, now: Int64) -> IngestFacts {
            var facts = IngestFacts(now: now)
            for key in needs.deliveries where deliveries[key] != nil { facts.seenDeliveries.insert(key) }
            for key in needs.events where events[key] != nil { facts.storedEvents.insert(key) }
            for key in needs.generations { facts.statuses[key] = generations[key]?.status }
            for key in needs.jobRoutes where facts.statuses[key] != nil {
                let routes = jobs.values.filter { !$0.replay && $0.job.generationID == key.generationID && $0.job.source == key.source }
                if !routes.isEmpty { facts.jobRoutes[key] = Set(routes.map(\.job.route)) }
            }
            return facts
        }

        mutating func persist(_ plan: IngestPlan) {
            for row in plan.reprocessed {
                if let index = unrecognized.firstIndex(where: { $0.delivery.seq == row.seq }) { unrecognized[index].reprocessedAt = row.at }
            }
            for row in plan.deliveries { deliveries[MessageKey(source: row.source, id: row.deliveryID)] = row.receivedAt }
            for row in plan.unrecognized where unrecognizedKeys.insert(MessageKey(source: row.source, id: row.deliveryID)).inserted {
                unrecognized.append(UnrecognizedRow(delivery: UnrecognizedDelivery(
                    seq: nextSeq(), source: row.source, deliveryID: row.deliveryID, receivedAt: row.receivedAt,
                    signedAt: row.signedAt, reason: row.reason, raw: row.raw
                )))
            }
            for row in plan.events {
                events[MessageKey(source: row.source, id: row.eventID)] = EventRow(
                    seq: nextSeq(),
                    event: StoredEvent(
                        eventID: row.eventID, source: row.source, origin: row.origin, eventType: row.eventType,
                        generationID: row.generationID, status: row.status, previousStatus: row.previousStatus,
                        outputURL: row.outputURL, errorMessage: row.errorMessage, receivedAt: row.receivedAt, raw: row.raw
                    ),
                    transition: row.transition, signedAt: row.signedAt
                )
            }
            for row in plan.generations {
                let key = GenerationKey(source: row.source, generationID: row.generationID)
                generations[key] = GenerationRecord(
                    source: row.source, generationID: row.generationID, status: row.status, outputURL: row.outputURL,
                    errorMessage: row.errorMessage, createdAt: generations[key]?.createdAt ?? row.createdAt, updatedAt: row.updatedAt
                )
            }
            for row in plan.finishedPolling where polls[row.key]?.poll.state == .active {
                polls[row.key]?.poll.state = .done
                polls[row.key]?.updatedAt = row.at
            }
            for route in plan.routeVersions where routeVersions[route.version] == nil { routeVersions[route.version] = route }
            for job in plan.jobs {
                insertJob(route: job.route, source: job.source, generationID: job.generationID, eventID: job.eventID,
                          id: job.id, runAt: job.runAt, at: job.createdAt, replay: false)
            }
        }

        /// One pending job; an outbox job that exists for (generation, route) already is not added.
        @discardableResult
        mutating func insertJob(
            route: RoutePin, source: String, generationID: String, eventID: String, id: String, runAt: Int64, at: Int64, replay: Bool
        ) -> JobRecord? {
            if !replay, jobs.values.contains(where: {
                !$0.replay && $0.job.route == route.name && $0.job.generationID == generationID && $0.job.source == source
            }) { return nil }
            if route.isPinned, routeVersions[route.version] == nil { routeVersions[route.version] = route }
            let job = JobRecord(
                id: id, source: source, generationID: generationID, route: route.name,
                routeVersion: route.isPinned ? route.version : nil, eventID: eventID, state: .pending, nextStep: 0, attempts: 0,
                runAt: runAt, leaseOwner: nil, leaseUntil: nil, artifact: nil, lastError: nil, createdAt: at, updatedAt: at
            )
            jobs[id] = JobRow(job: job, replay: replay)
            return job
        }

        mutating func open(_ start: AttemptStart, jobID: String, at: Int64) -> Int64 {
            lastAttemptID += 1
            attempts[lastAttemptID] = AttemptRecord(
                id: lastAttemptID, jobID: jobID, step: start.step, stepKind: start.stepKind, attempt: start.attempt,
                startedAt: at, endedAt: nil, outcome: .running, summary: nil, exitCode: nil, httpStatus: nil, output: []
            )
            return lastAttemptID
        }

        mutating func interruptAttempts(where belongs: (AttemptRecord) -> Bool, at: Int64, summary: String) {
            for (id, attempt) in attempts where attempt.outcome == .running && belongs(attempt) {
                attempts[id]?.outcome = .interrupted
                attempts[id]?.endedAt = at
                attempts[id]?.summary = summary
            }
        }

        func held(_ lease: JobLease) -> JobRecord? {
            guard let job = jobs[lease.jobID]?.job, JobRules.holds(job, lease) else { return nil }
            return job
        }

        func route(of job: JobRecord) -> RoutePin {
            job.routeVersion.flatMap { routeVersions[$0] }.map { RoutePin(name: job.route, version: $0.version, definition: $0.definition) }
                ?? RoutePin(stringLiteral: job.route)
        }
    }

    // MARK: WebhookStore

    public func ingest(_ delivery: IncomingDelivery) async throws(StoreError) -> IntakeOutcome {
        let now = clock()
        return state.withLock { state in
            let plan = IngestRules.plan([delivery], facts: state.facts(IngestRules.needs([delivery]), now: now))
            state.persist(plan)
            return plan.outcomes[0]
        }
    }

    public func generations(withID id: String) async throws(StoreError) -> [GenerationDetail] {
        state.withLock { state in
            state.generations.values.filter { $0.generationID.sameBytes(as: id) }
                .sorted { $0.source.utf8.lexicographicallyPrecedes($1.source.utf8) }
                .map { generation in
                    let timeline = state.events.values
                        .filter { $0.event.source == generation.source && $0.event.generationID.sameBytes(as: id) }
                        .sorted { $0.seq < $1.seq }
                        .map { row in
                            TimelineEntry(
                                eventID: row.event.eventID, origin: row.event.origin, status: row.event.status,
                                previousStatus: row.event.previousStatus, transition: row.transition, outputURL: row.event.outputURL,
                                errorMessage: row.event.errorMessage, receivedAt: row.event.receivedAt, signedAt: row.signedAt
                            )
                        }
                    return GenerationDetail(generation: generation, timeline: timeline)
                }
        }
    }

    public func events(after seq: Int64, limit: Int) async throws(StoreError) -> [StreamedEvent] {
        state.withLock { state in
            state.events.values.filter { $0.seq > seq }.sorted { $0.seq < $1.seq }.prefix(limit).map { row in
                StreamedEvent(seq: row.seq, source: row.event.source, generationID: row.event.generationID, entry: TimelineEntry(
                    eventID: row.event.eventID, origin: row.event.origin, status: row.event.status,
                    previousStatus: row.event.previousStatus, transition: row.transition, outputURL: row.event.outputURL,
                    errorMessage: row.event.errorMessage, receivedAt: row.event.receivedAt, signedAt: row.signedAt
                ))
            }
        }
    }

    public func lastEventSeq() async throws(StoreError) -> Int64 {
        state.withLock { $0.events.values.map(\.seq).max() ?? 0 }
    }

    public func generations(_ query: GenerationQuery) async throws(StoreError) -> [GenerationRecord] {
        state.withLock { state in
            var matching = state.generations.values.filter(query.admits)
            if query.filtersJobs {
                let withJobs = Set(state.jobs.values.map(\.job).filter(query.admits).map { GenerationKey(source: $0.source, generationID: $0.generationID) })
                matching = matching.filter { withJobs.contains(GenerationKey(source: $0.source, generationID: $0.generationID)) }
            }
            return Array(matching.sorted(by: GenerationQuery.precedes).prefix(query.limit))
        }
    }

    public func prune(
        nowMilliseconds: Int64, dedupWindowSeconds: Int64, retentionSeconds: Int64, includingDead: Bool
    ) async throws(StoreError) -> PruneReport {
        let rules = RetentionRules(now: nowMilliseconds, dedupWindowSeconds: dedupWindowSeconds, retentionSeconds: retentionSeconds, includingDead: includingDead)
        return state.withLock { state in
            var report = PruneReport()
            let before = state.deliveries.count
            state.deliveries = state.deliveries.filter { !rules.deliveryExpired(receivedAt: $0.value) }
            report.deliveries = before - state.deliveries.count
            let finished = Set(state.jobs.values.filter { rules.jobExpired($0.job) }.map(\.job.id))
            state.attempts = state.attempts.filter { !finished.contains($0.value.jobID) }
            for id in finished { state.jobs[id] = nil }
            report.jobs = finished.count
            let withJobs = Set(state.jobs.values.map { GenerationKey(source: $0.job.source, generationID: $0.job.generationID) })
            let stale = Set(state.generations.filter { rules.generationExpired($0.value) && !withJobs.contains($0.key) }.keys)
            state.polls = state.polls.filter { key, row in
                !stale.contains(key) && !(rules.unknownPollExpired(state: row.poll.state, updatedAt: row.updatedAt) && state.generations[key] == nil)
            }
            let events = state.events.count
            state.events = state.events.filter { !stale.contains(GenerationKey(source: $0.value.event.source, generationID: $0.value.event.generationID)) }
            report.events = events - state.events.count
            for key in stale { state.generations[key] = nil }
            report.generations = stale.count
            let unrecognized = state.unrecognized.count
            state.unrecognized.removeAll { rules.unrecognizedExpired(receivedAt: $0.delivery.receivedAt) }
            state.unrecognizedKeys = Set(state.unrecognized.map { MessageKey(source: $0.delivery.source, id: $0.delivery.deliveryID) })
            report.unrecognized = unrecognized - state.unrecognized.count
            state.idempotency = state.idempotency.filter { !rules.idempotencyKeyExpired(createdAt: $0.value.createdAt) }
            return report
        }
    }

    public func histories(_ keys: [GenerationKey]) async throws(StoreError) -> [GenerationKey: GenerationHistory] {
        try await historiesOneByOne(keys)
    }

    public func activity(_ window: ActivityWindow, parts: Activity.Parts) async throws(StoreError) -> Activity {
        state.withLock { state in
            var activity = Activity(window: window)
            var events: [Activity.EventCount: Int] = [:]
            for row in state.events.values where parts.contains(.events) {
                guard let bucket = window.bucket(of: row.event.receivedAt) else { continue }
                events[Activity.EventCount(bucket: bucket, transition: row.transition, status: row.event.status, count: 0), default: 0] += 1
            }
            activity.events = events.map { key, count in var row = key; row.count = count; return row }
            for row in state.unrecognized where parts.contains(.events) {
                if let bucket = window.bucket(of: row.delivery.receivedAt) { activity.unrecognized[bucket] += 1 }
            }
            var attempts: [Activity.AttemptCount: Int] = [:]
            var finished: [AttemptRecord] = []
            for attempt in state.attempts.values where parts.contains(.attempts) && attempt.outcome != .running {
                guard let bucket = window.bucket(of: attempt.startedAt) else { continue }
                attempts[Activity.AttemptCount(bucket: bucket, outcome: attempt.outcome, count: 0), default: 0] += 1
                if attempt.endedAt != nil { finished.append(attempt) }
            }
            activity.attempts = attempts.map { key, count in var row = key; row.count = count; return row }
            activity.attemptDurations = finished.sorted { ($0.startedAt, $0.id) > ($1.startedAt, $1.id) }.prefix(Activity.durationLimit)
                .map { $0.endedAt! - $0.startedAt }
            return activity.normalized()
        }
    }

    public func counts() async throws(StoreError) -> StoreCounts {
        state.withLock { state in
            StoreCounts(
                deliveries: state.deliveries.count, events: state.events.count, generations: state.generations.count,
                unrecognized: state.unrecognized.count
            )
        }
    }

    public func isWritable() async -> Bool { true }

    public func unrecognized(after: Int64, limit: Int) async throws(StoreError) -> [UnrecognizedDelivery] {
        state.withLock { state in
            Array(state.unrecognized.lazy.filter { $0.reprocessedAt == nil && $0.delivery.seq > after }.prefix(limit).map(\.delivery))
        }
    }

    public func replay(eventID: String, source: String?, routes: (GenerationStatus) -> [RoutePin], at: Int64) async throws(StoreError) -> [JobRecord] {
        let events = state.withLock { state in
            state.events.values.filter { $0.event.eventID.sameBytes(as: eventID) && (source == nil || $0.event.source == source) }
                .sorted { $0.seq < $1.seq }.map(\.event)
        }
        let event = try ReplayRules.event(events, eventID: eventID)
        let pins = try ReplayRules.routes(for: event, routes)
        let now = clock()
        return state.withLock { state in
            pins.compactMap { route in
                state.insertJob(route: route, source: event.source, generationID: event.generationID, eventID: event.eventID,
                                id: JobID.make(), runAt: now, at: at, replay: true)
            }
        }
    }

    /// Removes every stored event (what retention does to a job's event in the worst case): for
    /// tests of a job whose event is gone.
    public func removeAllEvents() {
        state.withLock { $0.events.removeAll() }
    }

    // MARK: JobStore

    public func claimJobs(
        owner: String, leaseMilliseconds: Int64, limit: Int, nextStepKind: @escaping NextStepKind
    ) async throws(StoreError) -> [ClaimedJob] {
        let now = clock()
        return state.withLock { state in
            let due = state.jobs.values.map(\.job).filter { JobRules.isDue($0, now: now) }.sorted { $0.runAt < $1.runAt }.prefix(limit)
            var claimed: [ClaimedJob] = []
            for candidate in due {
                guard let job = JobRules.claim(candidate, owner: owner, now: now, leaseMilliseconds: leaseMilliseconds) else { continue }
                state.interruptAttempts(where: { $0.jobID == job.id }, at: now, summary: JobRules.interruptedByLostLease)
                guard let event = state.events[MessageKey(source: job.source, id: job.eventID)]?.event else {
                    state.jobs[job.id]?.job = JobRules.eventMissing(job, now: now)
                    continue
                }
                state.jobs[job.id]?.job = job
                let route = state.route(of: job)
                let attemptID = JobRules.attemptToOpen(job, stepKind: nextStepKind(job, route)).map { state.open($0, jobID: job.id, at: now) }
                claimed.append(ClaimedJob(
                    job: job, event: event, route: route, lease: JobLease(jobID: job.id, owner: owner, fence: job.fence), attemptID: attemptID
                ))
            }
            return claimed
        }
    }

    public func renewLease(_ lease: JobLease, leaseMilliseconds: Int64) async throws(StoreError) -> Bool {
        let now = clock()
        return state.withLock { state in
            guard let job = state.held(lease), let renewed = JobRules.renew(job, lease: lease, now: now, leaseMilliseconds: leaseMilliseconds) else {
                return false
            }
            state.jobs[job.id]?.job = renewed
            return true
        }
    }

    public func startAttempt(_ lease: JobLease, step: Int, stepKind: String, attempt: Int) async throws(StoreError) -> Int64 {
        let now = clock()
        return try state.withLock { state throws(StoreError) in
            guard state.held(lease) != nil else { throw JobRules.fenced(lease) }
            return state.open(AttemptStart(step: step, stepKind: stepKind, attempt: attempt), jobID: lease.jobID, at: now)
        }
    }

    public func finishAttempt(_ finish: AttemptFinish) async throws(StoreError) -> FinishedAttempt {
        let now = clock()
        return try state.withLock { state throws(StoreError) in
            // Checked first: a stale holder records neither the attempt nor the job's move.
            guard let job = state.held(finish.lease) else { throw JobRules.fenced(finish.lease) }
            let next = try JobRules.finish(job, lease: finish.lease, disposition: finish.disposition, now: now)
            if var attempt = state.attempts[finish.attemptID], attempt.jobID == job.id {
                attempt.endedAt = now
                attempt.outcome = finish.result.outcome
                attempt.summary = finish.result.summary
                attempt.exitCode = finish.result.exitCode
                attempt.httpStatus = finish.result.httpStatus
                attempt.output = finish.result.output
                state.attempts[finish.attemptID] = attempt
            }
            state.jobs[job.id]?.job = next
            let opened = JobRules.attemptToOpen(next, stepKind: finish.nextStepKind).map { state.open($0, jobID: next.id, at: now) }
            return FinishedAttempt(job: next, nextAttemptID: opened)
        }
    }

    public func releaseJob(_ lease: JobLease) async throws(StoreError) {
        let now = clock()
        state.withLock { state in
            guard let job = state.held(lease), let released = JobRules.release(job, lease: lease, now: now) else { return }
            state.interruptAttempts(where: { $0.jobID == lease.jobID }, at: now, summary: JobRules.interruptedByShutdown)
            state.jobs[job.id]?.job = released
        }
    }

    public func jobs(state wanted: JobState?, limit: Int) async throws(StoreError) -> [JobRecord] {
        state.withLock { state in
            Array(state.jobs.values.map(\.job).filter { wanted == nil || $0.state == wanted }.sorted { $0.updatedAt > $1.updatedAt }.prefix(limit))
        }
    }

    public func jobs(generationID: String, source: String) async throws(StoreError) -> [JobRecord] {
        state.withLock { state in
            state.jobs.values.map(\.job).filter { $0.generationID.sameBytes(as: generationID) && $0.source == source }
                .sorted { ($0.createdAt, $0.route) < ($1.createdAt, $1.route) }
        }
    }

    public func job(id: String) async throws(StoreError) -> JobRecord? {
        // A dictionary lookup, then the stores' byte equality (String's == is by canonical equivalence).
        state.withLock { state in state.jobs[id].flatMap { $0.job.id.sameBytes(as: id) ? $0.job : nil } }
    }

    public func events(source: String, generationID: String) async throws(StoreError) -> [StoredEvent] {
        state.withLock { state in
            state.events.values.filter { $0.event.source.sameBytes(as: source) && $0.event.generationID.sameBytes(as: generationID) }
                .sorted { $0.seq < $1.seq }.map(\.event)
        }
    }

    public func eventGenerations(eventID: String) async throws(StoreError) -> [GenerationKey] {
        state.withLock { state in
            state.events.values.filter { $0.event.eventID.sameBytes(as: eventID) }
                .map { GenerationKey(source: $0.event.source, generationID: $0.event.generationID) }
                .sorted { $0.source.utf8.lexicographicallyPrecedes($1.source.utf8) }
        }
    }

    public func attempts(jobID: String) async throws(StoreError) -> [AttemptRecord] {
        state.withLock { state in state.attempts.values.filter { $0.jobID == jobID }.sorted { $0.id < $1.id } }
    }

    public func retry(jobID: String, at: Int64) async throws(StoreError) -> JobRecord {
        let now = clock()
        return try state.withLock { state throws(StoreError) in
            guard let job = state.jobs[jobID]?.job else { throw StoreError(.notFound, "no job \(jobID)") }
            let retried = try JobRules.retry(job, now: now, at: at)
            state.jobs[jobID]?.job = retried
            return retried
        }
    }

    public func retryDead(route: String?, at: Int64) async throws(StoreError) -> Int {
        let now = clock()
        return state.withLock { state in
            let retried = state.jobs.values.compactMap { JobRules.retryDead($0.job, route: route, now: now, at: at) }
            for job in retried { state.jobs[job.id]?.job = job }
            return retried.count
        }
    }

    public func requeueRunning(at: Int64) async throws(StoreError) -> Int {
        state.withLock { state in
            state.interruptAttempts(where: { _ in true }, at: at, summary: JobRules.interruptedByRestart)
            let queued = state.jobs.values.compactMap { JobRules.requeue($0.job, now: at) }
            for job in queued { state.jobs[job.id]?.job = job }
            return queued.count
        }
    }

    public func jobCounts(in states: Set<JobState>) async throws(StoreError) -> [JobState: Int] {
        state.withLock { state in
            var counts = Dictionary(uniqueKeysWithValues: states.map { ($0, 0) })
            for row in state.jobs.values where states.contains(row.job.state) { counts[row.job.state, default: 0] += 1 }
            return counts
        }
    }

    public func waitingJobCounts() async throws(StoreError) -> WaitingJobs {
        state.withLock { state in
            WaitingJobs(pending: state.jobs.values.count { $0.job.state == .pending }, dead: state.jobs.values.count { $0.job.state == .dead })
        }
    }

    public func millisecondsUntilNextJob() async throws(StoreError) -> Int64? {
        let now = clock()
        return state.withLock { state in
            state.jobs.values.compactMap { row -> Int64? in
                switch row.job.state {
                case .pending: row.job.runAt
                case .running: row.job.leaseUntil
                case .succeeded, .dead: nil
                }
            }.min().map { max(0, $0 - now) }
        }
    }

    // MARK: PollStore

    public func track(source: String, generationID: String, at: Int64) async throws(StoreError) -> TrackOutcome {
        let key = GenerationKey(source: source, generationID: generationID)
        return state.withLock { state in
            let status = state.generations[key]?.status
            let existing = state.polls[key]?.poll
            let result = PollRules.track(status: status, trackedAndActive: existing.map { $0.tracked && $0.state == .active } ?? false)
            if result == .tracked {
                state.polls[key] = PollRow(poll: PollRecord(
                    source: source, generationID: generationID, tracked: true, state: .active, nextPollAt: at,
                    lastPolledAt: existing?.lastPolledAt, lastResult: existing?.lastResult, failures: 0, createdAt: existing?.createdAt ?? at
                ), updatedAt: at)
            }
            return TrackOutcome(result: result, source: source, status: status)
        }
    }

    public func pollCandidates(now: Int64, idleSince: Int64, limit: Int) async throws(StoreError) -> [PollCandidate] {
        state.withLock { state in
            var due: [(at: Int64, candidate: PollCandidate)] = []
            for (key, row) in state.polls where row.poll.state == .active && row.poll.nextPollAt <= now {
                if let status = state.generations[key]?.status, !PollRules.isOpen(status) { continue }
                due.append((row.poll.nextPollAt, PollCandidate(source: key.source, generationID: key.generationID, failures: row.poll.failures)))
            }
            for (key, generation) in state.generations
            where PollRules.isOpen(generation.status) && generation.updatedAt <= idleSince && state.polls[key] == nil {
                due.append((generation.updatedAt, PollCandidate(source: key.source, generationID: key.generationID)))
            }
            return due.sorted { $0.at < $1.at }.prefix(limit).map(\.candidate)
        }
    }

    public func recordPoll(_ candidate: PollCandidate, result: PollResult, at: Int64) async throws(StoreError) {
        let key = GenerationKey(source: candidate.source, generationID: candidate.generationID)
        state.withLock { state in
            let (pollState, next): (PollRecord.State, Int64) = switch result.next {
            case .pollAt(let time): (.active, time)
            case .stop: (.stopped, at)
            }
            let existing = state.polls[key]?.poll
            state.polls[key] = PollRow(poll: PollRecord(
                source: candidate.source, generationID: candidate.generationID, tracked: existing?.tracked ?? false,
                state: existing?.state == .done ? .done : pollState, nextPollAt: next, lastPolledAt: at,
                lastResult: result.summary, failures: result.failed ? (existing?.failures ?? 0) + 1 : 0, createdAt: existing?.createdAt ?? at
            ), updatedAt: at)
        }
    }

    public func polling(generationID: String) async throws(StoreError) -> [PollRecord] {
        state.withLock { state in
            state.polls.values.map(\.poll).filter { $0.generationID.sameBytes(as: generationID) }
                .sorted { $0.source.utf8.lexicographicallyPrecedes($1.source.utf8) }
        }
    }
}

// MARK: CreationStore

extension MemoryStore {
    public func claimIdempotencyKey(_ key: String, digest: String, at: Int64) async throws(StoreError) -> IdempotencyClaim {
        try IdempotencyRules.validate(key: key)
        return state.withLock { state in
            if let claim = IdempotencyRules.claim(existing: state.idempotency[key], digest: digest) { return claim }
            state.idempotency[key] = IdempotencyRecord(key: key, state: .pending, digest: digest, generationID: nil, answer: nil, createdAt: at)
            return .fresh
        }
    }

    public func completeIdempotencyKey(_ key: String, generationID: String, answer: [UInt8], at: Int64) async throws(StoreError) {
        try state.withLock { state throws(StoreError) in
            guard var record = state.idempotency[key] else { throw StoreError(.notFound, "no idempotency key \(key)") }
            record.state = .created
            record.generationID = generationID
            record.answer = answer
            state.idempotency[key] = record
        }
    }

    public func releaseIdempotencyKey(_ key: String) async throws(StoreError) {
        state.withLock { state in
            if state.idempotency[key]?.state == .pending { state.idempotency[key] = nil }
        }
    }

    public func idempotencyKey(_ key: String) async throws(StoreError) -> IdempotencyRecord? {
        state.withLock { $0.idempotency[key] }
    }
}
