import Synchronization

/// The one way pipehook bounds a wait: for a commit queued behind others, a query on a connection
/// that may never answer, a lock another process holds. The work runs in a task of its own and
/// the caller waits for it at most `limit`; when the limit passes first the work is cancelled and
/// left to end by itself (cancellation does not reach every wait: a query sent on a connection the
/// server has just closed, a write GRDB has already started), and the caller gets nil at once.
public enum Deadline {
    public static func within<T: Sendable>(
        _ limit: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async -> Result<T, any Error>? {
        let once = Once(), work = TaskSlot()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, any Error>?, Never>) in
                let timer = Task {
                    try? await Task.sleep(for: limit)
                    // Cancelled only by the work finishing first; a cancelled caller ends the wait too.
                    guard once.claim() else { return }
                    work.cancel()
                    continuation.resume(returning: nil)
                }
                let task = Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await operation()) } catch { result = .failure(error) }
                    if once.claim() {
                        timer.cancel()
                        continuation.resume(returning: result)
                    }
                }
                work.set(task, timer: timer)
            }
        } onCancel: {
            work.cancelTimer()
        }
    }

    /// Like `within`, for work that cannot fail.
    public static func within<T: Sendable>(_ limit: Duration, _ operation: @escaping @Sendable () async -> T) async -> T? {
        let answer: Result<T, any Error>? = await within(limit) { () async throws -> T in await operation() }
        return try? answer?.get()
    }
}

/// The work task and its timer, either of which may be set after someone asked to cancel.
private final class TaskSlot: Sendable {
    private struct Slot {
        var task: Task<Void, Never>?
        var timer: Task<Void, Never>?
        var cancelled = false
        var timerCancelled = false
    }

    private let slot = Mutex(Slot())

    func set(_ task: Task<Void, Never>, timer: Task<Void, Never>) {
        let (cancelled, timerCancelled) = slot.withLock { slot in
            slot.task = task
            slot.timer = timer
            return (slot.cancelled, slot.timerCancelled)
        }
        if cancelled { task.cancel() }
        if timerCancelled { timer.cancel() }
    }

    func cancel() {
        slot.withLock { slot in
            slot.cancelled = true
            return slot.task
        }?.cancel()
    }

    /// The caller was cancelled: stop waiting now (the timer ends the wait with nil).
    func cancelTimer() {
        slot.withLock { slot in
            slot.timerCancelled = true
            return slot.timer
        }?.cancel()
    }
}

/// True for the first caller only.
private final class Once: Sendable {
    private let done = Atomic<Bool>(false)
    func claim() -> Bool { !done.exchange(true, ordering: .acquiringAndReleasing) }
}
