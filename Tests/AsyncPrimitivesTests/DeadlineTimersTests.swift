@testable import AsyncPrimitives
import Synchronization
import Testing

@Suite("Deadline timers")
struct DeadlineTimersTests {
    /// Collects what fired, and lets a test wait for a count without a fixed sleep.
    private final class Fired: Sendable {
        private let state = Mutex<(names: [String], waiter: (count: Int, CheckedContinuation<Void, Never>)?)>(([], nil))

        func record(_ name: String) {
            let resume = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.names.append(name)
                guard let (count, waiter) = state.waiter, state.names.count >= count else { return nil }
                state.waiter = nil
                return waiter
            }
            resume?.resume()
        }

        func wait(for count: Int) async {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state in
                    if state.names.count >= count { return true }
                    state.waiter = (count, continuation)
                    return false
                }
                if done { continuation.resume() }
            }
        }

        var names: [String] { state.withLock { $0.names } }
    }

    @Test("callbacks run in deadline order, not in the order they were scheduled, and not before their deadline")
    func order() async {
        let fired = Fired()
        let start = ContinuousClock.now
        let timers = DeadlineTimers.shared
        let times = Mutex<[String: ContinuousClock.Instant]>([:])
        for (name, milliseconds) in [("c", 60), ("a", 20), ("b", 40)] {
            _ = timers.schedule(at: start + .milliseconds(milliseconds)) {
                times.withLock { $0[name] = .now }
                fired.record(name)
            }
        }
        await fired.wait(for: 3)
        #expect(fired.names == ["a", "b", "c"])
        for (name, milliseconds) in [("a", 20), ("b", 40), ("c", 60)] {
            let at = try! #require(times.withLock { $0[name] })
            #expect(at >= start + .milliseconds(milliseconds), "\(name) fired early")
        }
    }

    @Test("a cancelled timer never runs, and cancelling after it ran (or twice) says so")
    func cancel() async {
        let fired = Fired()
        let timers = DeadlineTimers.shared
        let cancelled = timers.schedule(at: .now + .milliseconds(10)) { fired.record("cancelled") }
        #expect(cancelled.cancel())
        #expect(!cancelled.cancel())
        let ran = timers.schedule(at: .now + .milliseconds(20)) { fired.record("ran") }
        await fired.wait(for: 1)
        #expect(!ran.cancel())
        #expect(fired.names == ["ran"])
    }

    @Test("a deadline in the past runs at once, and an earlier deadline scheduled behind a far one wakes the thread")
    func earlierDeadlineWakes() async {
        let fired = Fired()
        let timers = DeadlineTimers.shared
        let far = timers.schedule(at: .now + .seconds(3600)) { fired.record("far") }
        _ = timers.schedule(at: .now - .seconds(1)) { fired.record("past") }
        _ = timers.schedule(at: .now + .milliseconds(5)) { fired.record("soon") }
        await fired.wait(for: 2)
        #expect(fired.names == ["past", "soon"])
        far.cancel()
    }

    @Test("cancelled timers do not pile up: 100,000 far deadlines, all cancelled, leave the heap compacted")
    func compaction() {
        let timers = DeadlineTimers.shared
        for _ in 0..<100_000 {
            timers.schedule(at: .now + .seconds(3600)) {}.cancel()
        }
        // Other suites may hold a few live timers; what matters is that 100,000 did not stay.
        #expect(timers.entryCount < 5_000)
    }

    @Test("waitUntil returns true at the deadline and false when its task is cancelled first")
    func waitUntilOutcomes() async {
        #expect(await waitUntil(.now + .milliseconds(5)))
        #expect(await waitUntil(.now - .seconds(1)))
        let task = Task { await waitUntil(.now + .seconds(3600)) }
        task.cancel()
        #expect(await task.value == false)
    }
}
