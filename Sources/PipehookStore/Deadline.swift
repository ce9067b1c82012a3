import Synchronization

/// The one way pipehook bounds a wait: for a commit queued behind others, a query on a connection
/// that may never answer, a lock another process holds. The work runs in a task of its own and
/// the caller waits for it at most `limit`; when the limit passes first the work is cancelled and
/// left to end by itself (cancellation does not reach every wait: a query sent on a connection the
/// server has just closed, a write GRDB has already started), and the caller gets nil at once.
///
/// Limits are watched by one `DeadlineTicker` for the whole process rather than a timer per call:
/// ingest bounds every delivery's wait, and a dispatch timer armed and cancelled per request cost
/// a quarter of the CPU of a delivery (two extra thread wake-ups each). A limit is therefore kept
/// to within the ticker's resolution (50 ms).
public enum Deadline {
    static let ticker = DeadlineTicker(resolution: .milliseconds(50))

    public static func within<T: Sendable>(
        _ limit: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async -> Result<T, any Error>? {
        await ticker.within(limit, operation)
    }

    /// Like `within`, for work that cannot fail.
    public static func within<T: Sendable>(_ limit: Duration, _ operation: @escaping @Sendable () async -> T) async -> T? {
        let answer: Result<T, any Error>? = await within(limit) { () async throws -> T in await operation() }
        return try? answer?.get()
    }
}

/// Fires registered expiries once their instant has passed, checking every `resolution` while
/// any are registered (and not at all otherwise). One per process (`Deadline.ticker`); tests make
/// their own.
public final class DeadlineTicker: Sendable {
    private struct Entry {
        var at: ContinuousClock.Instant
        var expire: @Sendable () -> Void
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var lastID: UInt64 = 0
        var ticking = false
    }

    private let state = Mutex(State())
    private let resolution: Duration

    public init(resolution: Duration) { self.resolution = resolution }

    /// Registered expiries not yet fired or cancelled.
    public var pending: Int { state.withLock { $0.entries.count } }

    /// Calls `expire` (once, from the ticker's task) after `at` unless `cancel` came first.
    func register(at: ContinuousClock.Instant, expire: @escaping @Sendable () -> Void) -> UInt64 {
        let (id, start) = state.withLock { state -> (UInt64, Bool) in
            state.lastID += 1
            state.entries[state.lastID] = Entry(at: at, expire: expire)
            let start = !state.ticking
            state.ticking = true
            return (state.lastID, start)
        }
        if start { Task { await self.tick() } }
        return id
    }

    func cancel(_ id: UInt64) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
    }

    /// Runs while anything is registered; the next `register` starts it again.
    private func tick() async {
        while true {
            try? await Task.sleep(for: resolution)
            let now = ContinuousClock.now
            let (due, done) = state.withLock { state -> ([@Sendable () -> Void], Bool) in
                let expired = state.entries.filter { $0.value.at <= now }
                for id in expired.keys { state.entries.removeValue(forKey: id) }
                if state.entries.isEmpty { state.ticking = false }
                return (expired.values.map(\.expire), state.entries.isEmpty)
            }
            for expire in due { expire() }
            if done { return }
        }
    }

    public func within<T: Sendable>(
        _ limit: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async -> Result<T, any Error>? {
        let race = Race<T>()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>?, Never>) in
                race.start(continuation)
                let id = register(at: .now + limit) { race.settle(nil) }
                race.run(Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await operation()) } catch { result = .failure(error) }
                    self.cancel(id)
                    race.settle(result)
                })
            }
        } onCancel: {
            // The caller gave up: it stops waiting now.
            race.settle(nil)
        }
    }
}

/// One wait's outcome: the first to settle resumes the caller; a timeout or a cancelled caller
/// also cancels the work (set when it exists, cancelled at once if settled before).
private final class Race<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Result<T, any Error>?, Never>?
        var settled = false
        var work: Task<Void, Never>?
        /// Settled before the continuation existed (a caller cancelled at once).
        var early: Result<T, any Error>??
    }

    private let state = Mutex(State())

    func start(_ continuation: CheckedContinuation<Result<T, any Error>?, Never>) {
        let early = state.withLock { state -> Result<T, any Error>?? in
            guard let early = state.early else {
                state.continuation = continuation
                return nil
            }
            return early
        }
        if let early { continuation.resume(returning: early) }
    }

    func run(_ task: Task<Void, Never>) {
        let cancel = state.withLock { state -> Bool in
            state.work = task
            return state.settled
        }
        if cancel { task.cancel() }
    }

    /// `nil`: timed out or the caller was cancelled.
    func settle(_ result: Result<T, any Error>?) {
        let (continuation, work) = state.withLock { state -> (CheckedContinuation<Result<T, any Error>?, Never>?, Task<Void, Never>?) in
            guard !state.settled else { return (nil, nil) }
            state.settled = true
            guard let continuation = state.continuation else {
                state.early = .some(result)
                return (nil, nil)
            }
            state.continuation = nil
            return (continuation, result == nil ? state.work : nil)
        }
        work?.cancel()
        continuation?.resume(returning: result)
    }
}

extension Duration {
    /// Whole milliseconds (truncated): what stores and leases are counted in.
    public var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
