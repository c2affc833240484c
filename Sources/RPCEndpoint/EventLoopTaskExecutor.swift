import NIOCore

/// Runs a task's jobs on an event loop. A connection's task and its unary calls' tasks
/// prefer the connection's loop: a call read there starts in the same loop turn, is resumed
/// there by an answer that arrives on the same loop (the worker's stream, when it shares the
/// loop) without a wake-up, and writes its response without another hop; the global pool
/// made each of those a hand-off between threads. What it runs must not block: it shares the
/// loop with the connection's I/O.
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
