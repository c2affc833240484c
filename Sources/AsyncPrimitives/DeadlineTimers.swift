#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Runs callbacks at deadlines, on one thread of its own.
///
/// Every call and every request has a deadline that almost never fires: it is cancelled
/// when the answer comes. A NIO scheduled task per deadline cost two event-loop wake-ups
/// (an `eventfd` write to schedule from outside the loop, another to cancel) and showed as
/// 8 % of a loaded worker's CPU; here scheduling a deadline later than the earliest one
/// wakes nobody, and cancelling is an atomic exchange plus a counter under the lock.
/// Cancelled entries stay in the heap until they are popped or the heap is compacted (once
/// more than 1,024 of them outnumber the live ones), so the heap stays within twice the live
/// deadlines plus 1,024.
public final class DeadlineTimers: @unchecked Sendable {
    // @unchecked: `heap`, `cancelledInHeap`, `sleepingUntil` and `started` are guarded by
    // `mutex`, which `condition` waits on; pthread primitives because `Mutex` cannot be waited
    // on with a timeout.

    /// The process's timer thread, started on first use.
    public static let shared = DeadlineTimers()

    /// One scheduled callback; ``cancel()`` keeps it from running.
    public final class Timer: Sendable {
        fileprivate enum State: UInt8 { case pending, fired, cancelled }
        fileprivate let state = Atomic<UInt8>(State.pending.rawValue)
        fileprivate let action: @Sendable () -> Void
        private unowned let timers: DeadlineTimers

        fileprivate init(timers: DeadlineTimers, action: @escaping @Sendable () -> Void) {
            self.timers = timers
            self.action = action
        }

        /// True when this kept the callback from running (it had not run and was not
        /// cancelled before).
        @discardableResult
        public func cancel() -> Bool {
            guard claim(.cancelled) else { return false }
            timers.noteCancelled()
            return true
        }

        fileprivate func claim(_ end: State) -> Bool {
            state.compareExchange(expected: State.pending.rawValue, desired: end.rawValue, ordering: .acquiringAndReleasing).exchanged
        }

        fileprivate var isCancelled: Bool { state.load(ordering: .relaxed) == State.cancelled.rawValue }
    }

    private struct Entry {
        let deadline: ContinuousClock.Instant
        let timer: Timer
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var heap: [Entry] = []
    private var cancelledInHeap = 0
    /// The deadline the thread sleeps until; nil while it is awake or waits with no deadline
    /// (then every new deadline wakes it).
    private var sleepingUntil: ContinuousClock.Instant?
    private var started = false

    private init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    /// Runs `action` on the timer thread at `deadline` (at once if it has passed), unless
    /// the returned timer is cancelled first. `action` must be short: it delays the others.
    public func schedule(at deadline: ContinuousClock.Instant, _ action: @escaping @Sendable () -> Void) -> Timer {
        let timer = Timer(timers: self, action: action)
        pthread_mutex_lock(mutex)
        if !started {
            started = true
            startThread()
        }
        push(Entry(deadline: deadline, timer: timer))
        // Only a deadline earlier than the one slept for needs the thread awake.
        let wake = sleepingUntil.map { deadline < $0 } ?? true
        pthread_mutex_unlock(mutex)
        if wake { pthread_cond_signal(condition) }
        return timer
    }

    /// Deadlines in the heap, cancelled ones included (for tests).
    var entryCount: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return heap.count
    }

    fileprivate func noteCancelled() {
        pthread_mutex_lock(mutex)
        cancelledInHeap += 1
        if cancelledInHeap > 1024 && cancelledInHeap * 2 > heap.count { compact() }
        pthread_mutex_unlock(mutex)
    }

    private func startThread() {
        startDetachedThread(name: "vpsgw-timers", purpose: "the deadline timer thread") { self.loop() }
    }

    private func loop() -> Never {
        pthread_mutex_lock(mutex)
        while true {
            let now = ContinuousClock.now
            var due: [Timer] = []
            while let first = heap.first, first.deadline <= now {
                let entry = pop()
                if entry.timer.isCancelled { cancelledInHeap -= 1 } else { due.append(entry.timer) }
            }
            if !due.isEmpty {
                pthread_mutex_unlock(mutex)
                for timer in due where timer.claim(.fired) { timer.action() }
                pthread_mutex_lock(mutex)
                continue
            }
            sleepingUntil = heap.first?.deadline
            if let deadline = sleepingUntil {
                var wakeAt = Self.monotonicNow(plus: deadline - now)
                pthread_cond_timedwait(condition, mutex, &wakeAt)
            } else {
                pthread_cond_wait(condition, mutex)
            }
            sleepingUntil = nil
        }
    }

    /// CLOCK_MONOTONIC now plus `duration` (rounded up to the microsecond, so the thread does
    /// not wake just before the deadline and sleep again for nothing).
    private static func monotonicNow(plus duration: Duration) -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let (seconds, attoseconds) = duration.components
        var nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000) + 1000
        var wholeSeconds = Int(now.tv_sec) + Int(seconds)
        wholeSeconds += nanoseconds / 1_000_000_000
        nanoseconds %= 1_000_000_000
        return timespec(tv_sec: wholeSeconds, tv_nsec: nanoseconds)
    }

    // A binary min-heap on the deadline.

    private func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private func pop() -> Entry {
        let first = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            siftDown(from: 0)
        }
        return first
    }

    private func siftDown(from start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count, heap[left].deadline < heap[smallest].deadline { smallest = left }
            if right < heap.count, heap[right].deadline < heap[smallest].deadline { smallest = right }
            if smallest == parent { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }

    private func compact() {
        heap.removeAll { $0.timer.isCancelled }
        cancelledInHeap = 0
        for index in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(from: index) }
    }
}
