import NIOCore

/// Runs a task's jobs on an event loop. A unary call's handler preferring its connection's
/// loop starts there without a thread hop, is resumed there by the answer that arrives on
/// the same loop (the worker's stream, when it shares the loop) without a wake-up, and
/// writes its response without another hop; the global pool made each of those a hand-off
/// between threads. The handlers it runs must not block: they share the loop with the
/// connection's I/O.
final class EventLoopTaskExecutor: TaskExecutor {
    private let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }
}
