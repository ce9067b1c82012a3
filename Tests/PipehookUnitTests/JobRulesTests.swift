import PipehookStore
import Testing

/// The job life cycle every store applies (`JobRules`): every starting state × every operation.
struct JobRulesTests {
    static let now: Int64 = 1_000_000
    static let lease = JobLease(jobID: "job_00000000000000a1", owner: "a", fence: 3)

    /// Where a job can stand when an operation reaches it (from the point of view of `lease`).
    enum Start: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case pendingDue, pendingLater, runningHeld, runningHeldExpired, runningStaleFence, runningOtherOwner, succeeded, dead
        var testDescription: String { rawValue }

        var job: JobRecord {
            var job = JobRecord(
                id: JobRulesTests.lease.jobID, source: "pipevideo", generationID: "gen_1", route: "r", routeVersion: "v1", fence: 3,
                eventID: "evt_1", state: .pending, nextStep: 1, attempts: 2, runAt: JobRulesTests.now - 1, leaseOwner: nil, leaseUntil: nil,
                artifact: JobArtifact(file: "/v/a.mp4", sha256: "ab", bytes: 7), lastError: "boom", createdAt: 10, updatedAt: 20
            )
            func leased(owner: String = "a", until: Int64 = JobRulesTests.now + 5_000, fence: Int64 = 3) {
                job.state = .running
                job.leaseOwner = owner
                job.leaseUntil = until
                job.fence = fence
            }
            switch self {
            case .pendingDue: break
            case .pendingLater: job.runAt = JobRulesTests.now + 1
            case .runningHeld: leased()
            case .runningHeldExpired: leased(until: JobRulesTests.now - 1)
            case .runningStaleFence: leased(fence: 4)
            case .runningOtherOwner: leased(owner: "b")
            case .succeeded: job.state = .succeeded
            case .dead: job.state = .dead
            }
            return job
        }
    }

    enum Operation: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case claim, renew, advance, advanceLast, retryLater, deadLetter, release, retry, retryDead, requeue
        var testDescription: String { rawValue }

        /// nil: nothing to write.
        func apply(_ job: JobRecord) throws(StoreError) -> JobRecord? {
            let now = JobRulesTests.now, lease = JobRulesTests.lease
            switch self {
            case .claim: return JobRules.claim(job, owner: "c", now: now, leaseMilliseconds: 60_000)
            case .renew: return JobRules.renew(job, lease: lease, now: now, leaseMilliseconds: 60_000)
            case .advance: return try JobRules.finish(job, lease: lease, disposition: .advance(artifact: nil, done: false), now: now)
            case .advanceLast: return try JobRules.finish(job, lease: lease, disposition: .advance(artifact: nil, done: true), now: now)
            case .retryLater: return try JobRules.finish(job, lease: lease, disposition: .retry(delayMilliseconds: 2_000, error: "e"), now: now)
            case .deadLetter: return try JobRules.finish(job, lease: lease, disposition: .dead(error: "gone"), now: now)
            case .release: return JobRules.release(job, lease: lease, now: now)
            case .retry: return try JobRules.retry(job, now: now, at: now - 7)
            case .retryDead: return JobRules.retryDead(job, now: now, at: now - 7)
            case .requeue: return JobRules.requeue(job, now: now)
            }
        }
    }

    enum Expected: Equatable, CustomStringConvertible {
        case nothing
        case refused(StoreError.Kind)
        case becomes(JobState)
        var description: String {
            switch self {
            case .nothing: "nothing"
            case .refused(let kind): "refused(\(kind))"
            case .becomes(let state): "becomes \(state)"
            }
        }
    }

    /// The whole table. Finishing is refused (`fenced`) for anything but the exact claim; a holder
    /// whose lease passed may still finish until another claim takes the job (then its fence is stale).
    static let table: [Start: [Operation: Expected]] = {
        let fenced = Expected.refused(.fenced), invalid = Expected.refused(.invalid)
        let notHeld: [Operation: Expected] = [
            .renew: .nothing, .advance: fenced, .advanceLast: fenced, .retryLater: fenced, .deadLetter: fenced, .release: .nothing,
        ]
        let held: [Operation: Expected] = [
            .renew: .becomes(.running), .advance: .becomes(.running), .advanceLast: .becomes(.succeeded),
            .retryLater: .becomes(.pending), .deadLetter: .becomes(.dead), .release: .becomes(.pending),
            .retry: invalid, .retryDead: .nothing, .requeue: .becomes(.pending),
        ]
        func with(_ base: [Operation: Expected], _ extra: [Operation: Expected]) -> [Operation: Expected] {
            base.merging(extra) { _, new in new }
        }
        let pending = with(notHeld, [.retry: .becomes(.pending), .retryDead: .nothing, .requeue: .nothing])
        let runningNotHeld = with(notHeld, [.claim: .nothing, .retry: invalid, .retryDead: .nothing, .requeue: .becomes(.pending)])
        return [
            .pendingDue: with(pending, [.claim: .becomes(.running)]),
            .pendingLater: with(pending, [.claim: .nothing]),
            .runningHeld: with(held, [.claim: .nothing]),
            .runningHeldExpired: with(held, [.claim: .becomes(.running)]),
            .runningStaleFence: runningNotHeld,
            .runningOtherOwner: runningNotHeld,
            .succeeded: with(notHeld, [.claim: .nothing, .retry: invalid, .retryDead: .nothing, .requeue: .nothing]),
            .dead: with(notHeld, [.claim: .nothing, .retry: .becomes(.pending), .retryDead: .becomes(.pending), .requeue: .nothing]),
        ]
    }()

    @Test("every operation on every state", arguments: Start.allCases, Operation.allCases)
    func transition(start: Start, operation: Operation) throws {
        let expected = try #require(Self.table[start]?[operation], "the table has no entry")
        let actual: Expected
        do {
            actual = try operation.apply(start.job).map { .becomes($0.state) } ?? .nothing
        } catch {
            actual = .refused(error.kind)
        }
        #expect(actual == expected)
    }

    @Test func tableCoversEveryPair() {
        for start in Start.allCases {
            #expect(Set(Self.table[start]?.keys.map { $0 } ?? []) == Set(Operation.allCases), "\(start)")
        }
    }

    @Test func claimLeasesByTheStoreClockAndIncrementsTheFence() throws {
        for start in [Start.pendingDue, .runningHeldExpired] {
            let claimed = try #require(JobRules.claim(start.job, owner: "c", now: Self.now, leaseMilliseconds: 60_000))
            #expect(claimed.state == .running)
            #expect(claimed.leaseOwner == "c")
            #expect(claimed.leaseUntil == Self.now + 60_000)
            #expect(claimed.fence == start.job.fence + 1)
            #expect(claimed.updatedAt == Self.now)
            // The step and its attempt count carry over: a retried or interrupted step runs again.
            #expect(claimed.nextStep == 1 && claimed.attempts == 2)
            #expect(!JobRules.holds(claimed, Self.lease), "the old claim's lease is stale now")
        }
    }

    @Test func advanceMovesToTheNextStepAndKeepsTheLease() throws {
        let job = Start.runningHeld.job
        let next = try JobRules.finish(job, lease: Self.lease, disposition: .advance(artifact: nil, done: false), now: Self.now)
        #expect(next.nextStep == 2 && next.attempts == 0 && next.lastError == nil)
        #expect(next.leaseOwner == "a" && next.leaseUntil == job.leaseUntil && next.fence == 3)
        #expect(next.artifact == job.artifact, "no new artifact keeps the old one")
        #expect(next.updatedAt == Self.now)
        let saved = JobArtifact(file: "/v/b.mp4", sha256: "cd", bytes: 9)
        let last = try JobRules.finish(job, lease: Self.lease, disposition: .advance(artifact: saved, done: true), now: Self.now)
        #expect(last.state == .succeeded && last.leaseOwner == nil && last.leaseUntil == nil)
        #expect(last.artifact == saved)
    }

    @Test func retryWaitsByTheStoreClockAndCountsTheAttempt() throws {
        let job = Start.runningHeld.job
        let later = try JobRules.finish(job, lease: Self.lease, disposition: .retry(delayMilliseconds: 2_000, error: "e"), now: Self.now)
        #expect(later.runAt == Self.now + 2_000 && later.attempts == 3 && later.lastError == "e")
        #expect(later.leaseOwner == nil && later.leaseUntil == nil && later.nextStep == 1)
        let negative = try JobRules.finish(job, lease: Self.lease, disposition: .retry(delayMilliseconds: -5, error: "e"), now: Self.now)
        #expect(negative.runAt == Self.now)
        let dead = try JobRules.finish(job, lease: Self.lease, disposition: .dead(error: "gone"), now: Self.now)
        #expect(dead.attempts == 3 && dead.lastError == "gone" && dead.leaseOwner == nil && dead.nextStep == 1)
    }

    @Test func operatorRetryIsDueNowWithAFreshCount() throws {
        let retried = try JobRules.retry(Start.dead.job, now: Self.now, at: Self.now - 7)
        #expect(retried.state == .pending && retried.runAt == Self.now && retried.attempts == 0 && retried.updatedAt == Self.now - 7)
        #expect(retried.nextStep == 1, "steps that succeeded are not run again")
        #expect(throws: StoreError.self) { try JobRules.retry(Start.succeeded.job, now: Self.now, at: Self.now) }
    }

    @Test func releaseAndRequeueAreDueNow() throws {
        for job in [JobRules.release(Start.runningHeld.job, lease: Self.lease, now: Self.now), JobRules.requeue(Start.runningOtherOwner.job, now: Self.now)] {
            let job = try #require(job)
            #expect(job.state == .pending && job.runAt == Self.now && job.leaseOwner == nil && job.leaseUntil == nil)
            #expect(job.attempts == 2 && job.fence == 3, "neither counts an attempt nor takes a claim")
        }
    }

    @Test func renewExtendsOnlyTheHoldersLease() throws {
        let renewed = try #require(JobRules.renew(Start.runningHeld.job, lease: Self.lease, now: Self.now, leaseMilliseconds: 30_000))
        #expect(renewed.leaseUntil == Self.now + 30_000 && renewed.fence == 3)
        #expect(JobRules.renew(Start.runningStaleFence.job, lease: Self.lease, now: Self.now, leaseMilliseconds: 30_000) == nil)
    }

    @Test func anAttemptOpensOnlyForARunningJobWithAKnownStep() throws {
        let running = Start.runningHeld.job
        #expect(JobRules.attemptToOpen(running, stepKind: "exec") == AttemptStart(step: 1, stepKind: "exec", attempt: 3))
        #expect(JobRules.attemptToOpen(running, stepKind: nil) == nil)
        for start in [Start.pendingDue, .succeeded, .dead] {
            #expect(JobRules.attemptToOpen(start.job, stepKind: "exec") == nil)
        }
        let advanced = try JobRules.finish(running, lease: Self.lease, disposition: .advance(artifact: nil, done: false), now: Self.now)
        #expect(JobRules.attemptToOpen(advanced, stepKind: "post") == AttemptStart(step: 2, stepKind: "post", attempt: 1))
    }

    @Test func aJobWhoseEventIsGoneIsDead() {
        let claimed = JobRules.claim(Start.pendingDue.job, owner: "c", now: Self.now, leaseMilliseconds: 1_000)!
        let dead = JobRules.eventMissing(claimed, now: Self.now)
        #expect(dead.state == .dead && dead.lastError == JobRules.eventGone && dead.leaseOwner == nil && dead.leaseUntil == nil)
    }
}
