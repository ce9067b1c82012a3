import PipehookLifecycle
import Testing

@Suite struct LifecycleTests {
    typealias S = GenerationStatus

    /// Every (current, incoming) pair, written out by hand from SPEC §3.4.
    static let table: [(S?, S, Transition)] = {
        var rows: [(S?, S, Transition)] = S.allCases.map { (nil, $0, .applied) }
        let expected: [S: [S: Transition]] = [
            .queued: [.queued: .same, .inProgress: .applied, .completed: .applied, .failed: .applied, .cancelled: .applied, .incomplete: .applied],
            .inProgress: [.queued: .stale, .inProgress: .same, .completed: .applied, .failed: .applied, .cancelled: .applied, .incomplete: .applied],
            .completed: [.queued: .stale, .inProgress: .stale, .completed: .same, .failed: .conflict, .cancelled: .conflict, .incomplete: .conflict],
            .failed: [.queued: .stale, .inProgress: .stale, .completed: .conflict, .failed: .same, .cancelled: .conflict, .incomplete: .conflict],
            .cancelled: [.queued: .stale, .inProgress: .stale, .completed: .conflict, .failed: .conflict, .cancelled: .same, .incomplete: .conflict],
            .incomplete: [.queued: .stale, .inProgress: .stale, .completed: .conflict, .failed: .conflict, .cancelled: .conflict, .incomplete: .same],
        ]
        for current in S.allCases {
            for incoming in S.allCases { rows.append((current, incoming, expected[current]![incoming]!)) }
        }
        return rows
    }()

    @Test func tableCoversEveryPair() {
        #expect(Self.table.count == 6 + 36)
    }

    @Test(arguments: table)
    func transition(current: S?, incoming: S, expected: Transition) {
        #expect(Lifecycle.transition(from: current, to: incoming) == expected)
    }

    @Test func ranksAndAliases() {
        #expect(S.queued.rank == 0 && S.inProgress.rank == 1)
        #expect(S.terminal == [.completed, .failed, .cancelled, .incomplete])
        #expect(S(providerValue: "pending") == .queued)
        #expect(S(providerValue: "processing") == .inProgress)
        #expect(S(providerValue: "in_progress") == .inProgress)
        #expect(S(providerValue: "COMPLETED") == nil)
        #expect(S(providerValue: "done") == nil)
    }

    /// Any order of the same events ends in the same state as long as at most one terminal
    /// status is among them (with two, first terminal wins by design).
    @Test(arguments: [S.completed, .failed, .cancelled, .incomplete])
    func shuffledOrdersConverge(terminal: S) {
        var generator = SplitMix(seed: UInt64(terminal.hashValue & 0xffff))
        let events: [S] = [.queued, .queued, .inProgress, .inProgress, terminal, terminal]
        for _ in 0..<500 {
            #expect(Lifecycle.fold(events.shuffled(using: &generator)) == terminal)
        }
        let nonTerminal: [S] = [.queued, .inProgress, .queued]
        for _ in 0..<50 {
            #expect(Lifecycle.fold(nonTerminal.shuffled(using: &generator)) == .inProgress)
        }
    }

    @Test func firstTerminalWins() {
        #expect(Lifecycle.fold([.queued, .failed, .completed, .inProgress]) == .failed)
        #expect(Lifecycle.fold([.completed, .failed]) == .completed)
    }
}

/// Deterministic generator so a failing shuffle can be reproduced.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
