import PipehookStore
import Synchronization
import Testing

/// The batcher every store's writes go through: each item committed once, its own result back,
/// batches shared, and one batch at a time (SQLite has one writer; PostgreSQL measured no better
/// with three batches side by side: smaller batches cost more CPU per delivery).
@Suite struct GroupCommitTests {
    final class Recorder: Sendable {
        let running = Atomic<Int>(0)
        let highest = Atomic<Int>(0)
        let batches = Mutex<[[Int]]>([])
    }

    @Test func everyItemIsCommittedOnceOneBatchAtATime() async {
        let recorder = Recorder()
        let group = GroupCommit<Int, Int>(maxBatch: 16) { items in
            let now = recorder.running.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
            _ = recorder.highest.max(now, ordering: .acquiringAndReleasing)
            try? await Task.sleep(for: .milliseconds(2))
            recorder.batches.withLock { $0.append(items) }
            recorder.running.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            return items.map { .success($0 * 10) }
        }
        let results = await withTaskGroup(of: (Int, Int?).self) { tasks in
            for item in 0..<400 {
                tasks.addTask { (item, try? await group.submit(item).get()) }
            }
            return await tasks.reduce(into: [Int: Int?]()) { $0[$1.0] = $1.1 }
        }
        #expect(results.count == 400 && results.allSatisfy { $0.value == $0.key * 10 })
        let batches = recorder.batches.withLock { $0 }
        #expect(batches.flatMap { $0 }.sorted() == Array(0..<400), "each item in exactly one batch")
        #expect(batches.allSatisfy { $0.count <= 16 })
        #expect(batches.count < 400, "batches are shared")
        let highest = recorder.highest.load(ordering: .acquiring)
        #expect(highest == 1, "\(highest) batches ran at once")
    }
}
