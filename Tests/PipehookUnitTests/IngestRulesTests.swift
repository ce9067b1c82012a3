import PipehookFormats
import PipehookLifecycle
import PipehookStore
import Testing

/// SPEC §3.2–3.6 as `IngestRules.plan` decides them, for every store: tables of facts and
/// deliveries in, rows and answers out.
@Suite struct IngestRulesTests {
    static func delivery(
        _ id: String, _ generation: String, _ status: GenerationStatus, origin: EventOrigin = .webhook,
        routes: [RoutePin] = [], at: Int64 = 100, source: String = "pv"
    ) -> IncomingDelivery {
        IncomingDelivery(
            source: source, deliveryID: id, origin: origin, receivedAt: at, signedAt: at / 1000, body: Array(id.utf8),
            content: .event(GenerationEvent(eventType: "video.generation.completed", generationID: generation, status: status)),
            routes: routes
        )
    }

    static func ids() -> () -> String {
        var next = 0
        return {
            next += 1
            return "job_\(next)"
        }
    }

    static let pin = RoutePin(name: "archive", version: String(repeating: "a", count: 64), definition: "{}")
    static let key = GenerationKey(source: "pv", generationID: "g")

    @Test func aNewEventAppliesRecordsAndCreatesItsPinnedJobs() {
        let plan = IngestRules.plan([Self.delivery("m1", "g", .completed, routes: [Self.pin, "notify"])], facts: IngestFacts(now: 5), makeJobID: Self.ids())
        #expect(plan.outcomes == [.accepted(generationID: "g", status: .completed, transition: .applied, previous: nil)])
        #expect(plan.deliveries.map { "\($0.source)/\($0.deliveryID)@\($0.receivedAt)" } == ["pv/m1@100"])
        #expect(plan.events.map(\.transition) == [.applied] && plan.events[0].previousStatus == nil && plan.events[0].raw == Array("m1".utf8))
        #expect(plan.generations.map(\.status) == [.completed] && plan.generations[0].lastEventID == "m1" && plan.generations[0].createdAt == 100)
        #expect(plan.finishedPolling.map(\.key) == [Self.key] && plan.finishedPolling.map(\.at) == [100])
        #expect(plan.routeVersions == [Self.pin], "an unpinned route records no version")
        #expect(plan.jobs.map(\.id) == ["job_1", "job_2"] && plan.jobs.map(\.route.name) == ["archive", "notify"])
        #expect(plan.jobs.allSatisfy { $0.runAt == 5 && $0.createdAt == 100 && $0.eventID == "m1" }, "due by the store's clock")
    }

    /// Every (current, incoming) pair: what changes and what is only recorded.
    @Test(arguments: GenerationStatus.allCases.map(Optional.some) + [nil], GenerationStatus.allCases)
    func theTransitionDecidesTheRows(current: GenerationStatus?, incoming: GenerationStatus) {
        var facts = IngestFacts(now: 0)
        facts.statuses[Self.key] = current
        let plan = IngestRules.plan([Self.delivery("m", "g", incoming, routes: ["r"])], facts: facts, makeJobID: Self.ids())
        let transition = Lifecycle.transition(from: current, to: incoming)
        #expect(plan.outcomes == [.accepted(generationID: "g", status: incoming, transition: transition, previous: current)])
        #expect(plan.events.count == 1 && plan.events[0].transition == transition, "every event is kept in the timeline")
        #expect(plan.generations.count == (transition == .applied ? 1 : 0))
        #expect(plan.jobs.count == (transition == .applied ? 1 : 0))
        #expect(plan.finishedPolling.count == (transition == .applied && incoming.isTerminal ? 1 : 0))
    }

    @Test func duplicatesDoNothingElse() {
        var facts = IngestFacts(now: 0)
        facts.seenDeliveries = [MessageKey(source: "pv", id: "seen")]
        facts.storedEvents = [MessageKey(source: "pv", id: "pruned-id")]
        let batch = [
            Self.delivery("seen", "g", .completed, routes: ["r"]),
            Self.delivery("pruned-id", "g", .completed, routes: ["r"]),
            Self.delivery("twice", "g", .queued), Self.delivery("twice", "g", .queued),
        ]
        let plan = IngestRules.plan(batch, facts: facts, makeJobID: Self.ids())
        #expect(plan.outcomes == [.duplicate, .duplicate, .accepted(generationID: "g", status: .queued, transition: .applied, previous: nil), .duplicate])
        // The replayed event's delivery id is recorded again (its dedup row was pruned); nothing else.
        #expect(plan.deliveries.map(\.deliveryID) == ["pruned-id", "twice"])
        #expect(plan.events.map(\.eventID) == ["twice"] && plan.jobs.isEmpty)
    }

    /// Several events of one generation in one batch act as if they came one after another.
    @Test func aBatchIsSequential() {
        let batch = [
            Self.delivery("m1", "g", .queued, routes: ["on-queued"], at: 1),
            Self.delivery("m2", "g", .inProgress, at: 2),
            Self.delivery("m3", "g", .queued, at: 3),
            Self.delivery("m4", "g", .completed, routes: ["on-completed", "on-queued"], at: 4),
            Self.delivery("m5", "g", .failed, routes: ["on-failed"], at: 5),
            Self.delivery("m6", "h", .completed, routes: ["on-completed"], at: 6),
        ]
        let plan = IngestRules.plan(batch, facts: IngestFacts(now: 9), makeJobID: Self.ids())
        #expect(plan.events.map(\.transition) == [.applied, .applied, .stale, .applied, .conflict, .applied])
        #expect(plan.events.map(\.previousStatus) == [nil, .queued, .inProgress, .inProgress, .completed, nil])
        #expect(plan.generations.map(\.generationID) == ["g", "h"], "one row per generation, in first-touched order")
        #expect(plan.generations[0].status == .completed && plan.generations[0].createdAt == 1 && plan.generations[0].updatedAt == 4)
        #expect(plan.generations[0].lastEventID == "m4")
        // One job per (generation, route): on-queued fired on m1 and is not created again by m4.
        #expect(plan.jobs.map { "\($0.generationID)/\($0.route.name)/\($0.eventID)" } == ["g/on-queued/m1", "g/on-completed/m4", "h/on-completed/m6"])
    }

    @Test func aRouteThatAlreadyHasItsJobGetsNoOther() {
        var facts = IngestFacts(now: 0)
        facts.statuses[Self.key] = .inProgress
        facts.jobRoutes[Self.key] = ["archive"]
        let other = RoutePin(name: "other", version: Self.pin.version, definition: "{}")
        let plan = IngestRules.plan([Self.delivery("m", "g", .completed, routes: [Self.pin, other])], facts: facts, makeJobID: Self.ids())
        #expect(plan.jobs.map(\.route.name) == ["other"])
        #expect(plan.routeVersions == [other], "a version is recorded once, for the jobs that use it")
    }

    @Test func pollsAndReprocessingSkipTheDedupTable() {
        var unrecognized = Self.delivery("u1", "g", .completed)
        unrecognized.content = .unrecognized(reason: "not JSON")
        var stillUnrecognized = unrecognized
        stillUnrecognized.reprocessing = 7
        var reprocessed = Self.delivery("u2", "g", .completed, routes: ["r"])
        reprocessed.reprocessing = 8
        let batch = [Self.delivery("poll:g:queued", "g", .queued, origin: .poll), unrecognized, stillUnrecognized, reprocessed]
        let needs = IngestRules.needs(batch)
        #expect(needs.deliveries.map(\.id) == ["u1"])
        #expect(needs.events.map(\.id) == ["poll:g:queued", "u2"] && needs.generations == [Self.key] && needs.jobRoutes == [Self.key])
        let plan = IngestRules.plan(batch, facts: IngestFacts(now: 0), makeJobID: Self.ids())
        #expect(plan.outcomes.map { if case .accepted = $0 { "accepted" } else { "\($0)" } } == ["accepted", "unrecognized", "unrecognized", "accepted"])
        #expect(plan.deliveries.map(\.deliveryID) == ["u1"])
        #expect(plan.unrecognized.map(\.reason) == ["not JSON"] && plan.unrecognized[0].raw == Array("u1".utf8))
        #expect(plan.reprocessed.map(\.seq) == [7, 8])
        #expect(plan.events.map(\.origin) == [.poll, .webhook] && plan.jobs.map(\.eventID) == ["u2"])
    }

    /// Keys compare as the databases compare them: byte for byte.
    @Test func keysAreComparedByBytes() {
        let composed = "gén", decomposed = "ge\u{301}n"
        #expect(composed == decomposed, "Swift equates them")
        #expect(GenerationKey(source: "pv", generationID: composed) != GenerationKey(source: "pv", generationID: decomposed))
        #expect(MessageKey(source: "a", id: "bc") != MessageKey(source: "ab", id: "c"))
        let plan = IngestRules.plan([Self.delivery("m1", composed, .queued), Self.delivery("m2", decomposed, .completed)], facts: IngestFacts(now: 0))
        #expect(plan.generations.count == 2 && plan.events.map(\.transition) == [.applied, .applied])
    }

    @Test(arguments: [
        ("", "", true), ("a", "a", true), ("gén", "ge\u{301}n", false), ("ab", "ac", false), ("ab", "abc", false),
        ("", "a", false), (String(repeating: "x", count: 300), String(repeating: "x", count: 300), true), ("a\u{0}b", "a\u{0}c", false),
    ])
    func sameBytes(a: String, b: String, same: Bool) {
        #expect(a.sameBytes(as: b) == same && b.sameBytes(as: a) == same)
        #expect(a.sameBytes(as: b) == Array(a.utf8).elementsEqual(Array(b.utf8)))
    }
}

/// The event stream's resume point (issue 11): never past a number that may still commit.
@Suite struct EventStreamCursorTests {
    static func rows(_ seqs: [Int64]) -> [StreamedEvent] {
        seqs.map { seq in
            StreamedEvent(seq: seq, source: "pipevideo", generationID: "g\(seq)", entry: TimelineEntry(
                eventID: "m\(seq)", origin: .webhook, status: .completed, previousStatus: nil, transition: .applied,
                outputURL: nil, errorMessage: nil, receivedAt: 0, signedAt: 0
            ))
        }
    }

    @Test func contiguousRowsMoveTheFrontierAndAreSentOnce() {
        var cursor = EventStreamCursor(frontier: 10)
        #expect(cursor.take(Self.rows([11, 12, 13]), now: 0).map(\.seq) == [11, 12, 13])
        #expect(cursor.frontier == 13)
        #expect(cursor.take(Self.rows([]), now: 1).isEmpty && cursor.frontier == 13)
    }

    @Test func aGapHoldsTheFrontierUntilItFillsOrSettles() {
        var cursor = EventStreamCursor(frontier: 0, settleMilliseconds: 1_000)
        // 2 is not committed yet: 1 and 3 are sent, the frontier stays at 1.
        #expect(cursor.take(Self.rows([1, 3]), now: 0).map(\.seq) == [1, 3])
        #expect(cursor.frontier == 1)
        // Read again from the frontier: 3 is not sent twice; 2 arrives and closes the gap.
        #expect(cursor.take(Self.rows([2, 3, 4]), now: 100).map(\.seq) == [2, 4])
        #expect(cursor.frontier == 4)
        // 5 never comes (a rolled-back insert): after the settle time the frontier passes it.
        #expect(cursor.take(Self.rows([6]), now: 200).map(\.seq) == [6])
        #expect(cursor.frontier == 4)
        #expect(cursor.take(Self.rows([6]), now: 1_100).isEmpty && cursor.frontier == 4)
        #expect(cursor.take(Self.rows([6]), now: 1_200).isEmpty && cursor.frontier == 6)
    }

    @Test func aGapWiderThanAnyTransactionsInFlightIsJumped() {
        var cursor = EventStreamCursor(frontier: 5)
        let far = 5 + EventStreamCursor.maxOpenGap + 100
        #expect(cursor.take(Self.rows([far, far + 1]), now: 0).map(\.seq) == [far, far + 1])
        #expect(cursor.frontier == far + 1)
    }
}

/// The cursor of a generations page is URL-safe text that comes back exactly, and nothing else
/// decodes as one (a bad `after=` is refused, never read as the first page).
@Suite struct GenerationCursorTests {
    @Test(arguments: [
        GenerationCursor(updatedAt: 0, generationID: "", source: ""),
        GenerationCursor(updatedAt: 1_764_000_000_123, generationID: "gen_01HZX3Q9", source: "pipevideo"),
        GenerationCursor(updatedAt: -5, generationID: "a:b:c\n\u{0}é🎬", source: "s:1"),
    ])
    func tokensRoundTrip(_ cursor: GenerationCursor) throws {
        let token = cursor.token
        #expect(token.utf8.allSatisfy { ($0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || ($0 >= 48 && $0 <= 57) || ($0 | 32 >= 97 && $0 | 32 <= 122)) })
        #expect(GenerationCursor(token: token) == cursor)
    }

    @Test(arguments: ["", "!", "a", "MTIz", "MTIzOjk5Om", "MTIzOjk5OmFi", "eA==", String(repeating: "A", count: 5000)])
    func otherTextIsNoCursor(_ token: String) {
        #expect(GenerationCursor(token: token) == nil, "\(token.prefix(20))")
    }
}
