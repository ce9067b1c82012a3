import Synchronization

/// Group commit: concurrent submitters share one durable transaction.
///
/// One durable commit (an fsync) per request caps ingest near 2,000/s on one disk. Here the
/// first submitter becomes the leader and commits everything queued so far in one batch while
/// later arrivals queue up; when it is done it hands leadership to the oldest waiter, whose batch
/// is everything that queued meanwhile. No background task is needed, so the store works the same
/// inside the daemon, in the CLI and in tests.
public final class GroupCommit<Item: Sendable, Outcome: Sendable>: Sendable {
    /// Commits a batch in one transaction; returns one result per item, in order.
    public typealias Commit = @Sendable ([Item]) async -> [Result<Outcome, StoreError>]

    private enum Signal {
        case done(Result<Outcome, StoreError>)
        case lead
    }

    private struct Waiter {
        var item: Item
        var continuation: CheckedContinuation<Signal, Never>
    }

    private struct State {
        var pending: [Waiter] = []
        /// Invariant: `pending` is non-empty only while someone leads.
        var leading = false
    }

    private let state = Mutex(State())
    private let commit: Commit
    private let maxBatch: Int

    public init(maxBatch: Int = 512, commit: @escaping Commit) {
        precondition(maxBatch >= 1)
        self.maxBatch = maxBatch
        self.commit = commit
    }

    public func submit(_ item: Item) async -> Result<Outcome, StoreError> {
        let leadsNow = state.withLock { state in
            if state.leading { return false }
            state.leading = true
            return true
        }
        if leadsNow { return await lead(with: item) }
        let signal = await withCheckedContinuation { (continuation: CheckedContinuation<Signal, Never>) in
            let leadsAfterAll = state.withLock { state in
                if !state.leading {
                    state.leading = true
                    return true
                }
                state.pending.append(Waiter(item: item, continuation: continuation))
                return false
            }
            if leadsAfterAll { continuation.resume(returning: .lead) }
        }
        switch signal {
        case .done(let result): return result
        case .lead: return await lead(with: item)
        }
    }

    private func lead(with own: Item) async -> Result<Outcome, StoreError> {
        let followers = state.withLock { state -> [Waiter] in
            let count = min(state.pending.count, maxBatch - 1)
            let taken = Array(state.pending.prefix(count))
            state.pending.removeFirst(count)
            return taken
        }
        var items = [own]
        items.reserveCapacity(followers.count + 1)
        items.append(contentsOf: followers.lazy.map(\.item))
        var results = await commit(items)
        if results.count != items.count {
            results = Array(repeating: .failure(StoreError(.unavailable, "internal: commit returned \(results.count) results for \(items.count) items")), count: items.count)
        }
        for (waiter, result) in zip(followers, results.dropFirst()) {
            waiter.continuation.resume(returning: .done(result))
        }
        let next = state.withLock { state -> Waiter? in
            if state.pending.isEmpty {
                state.leading = false
                return nil
            }
            return state.pending.removeFirst()
        }
        next?.continuation.resume(returning: .lead)
        return results[0]
    }
}
