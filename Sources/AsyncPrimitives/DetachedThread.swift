#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a new detached thread: for the few loops that must block outside the
/// concurrency pool (the deadline timers' `pthread_cond_timedwait`, the journal's
/// synchronous commits and fsyncs), where a task would hold a pool thread.
///
/// The thread is called `name` (at most 15 bytes, the kernel's limit), for `top -H`, `ps -L`
/// and perf: a new thread otherwise takes its creator's name, which made the journal's
/// writer look like a Dispatch worker or an event loop.
public func startDetachedThread(name: String, purpose: String, scheduling: ThreadScheduling = .normal, _ body: @escaping @Sendable () -> Void) {
    precondition(name.utf8.count <= 15, "thread name '\(name)' is over 15 bytes")
    final class Body: Sendable {
        let name: String
        let scheduling: ThreadScheduling
        let run: @Sendable () -> Void
        init(_ name: String, _ scheduling: ThreadScheduling, _ run: @escaping @Sendable () -> Void) {
            self.name = name
            self.scheduling = scheduling
            self.run = run
        }
    }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Body(name, scheduling, body)).toOpaque()
    let result = pthread_create(&thread, nil, { context in
        let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
        nameThisThread(body.name)
        if body.scheduling == .batch { scheduleThisThreadAsBatch() }
        body.run()
        return nil
    }, context)
    precondition(result == 0, "cannot start \(purpose): pthread_create returned \(result)")
    pthread_detach(thread)
}

/// How the kernel schedules a thread of ``startDetachedThread(name:purpose:scheduling:_:)``.
public enum ThreadScheduling: Sendable {
    /// The policy of the thread that starts it, inherited (`SCHED_OTHER` in this product).
    case normal
    /// `SCHED_BATCH`: woken, the thread does not preempt the one running on its core; it
    /// runs at once on an idle core, and otherwise at the next scheduling point. For a
    /// thread that serves a queue in batches: when the machine is out of CPU its work waits
    /// a little and gathers, and when a core is free nothing changes.
    case batch
}

/// `sched_setscheduler` with pid 0 sets the calling thread on Linux. Best effort: without the
/// policy the thread works the same, in smaller batches under load.
private func scheduleThisThreadAsBatch() {
    // SCHED_BATCH is 3 in <linux/sched.h>; Glibc's module leaves the GNU constant out.
    let schedBatch: Int32 = 3
    var parameters = sched_param()  // priority 0, the only one SCHED_BATCH takes
    _ = sched_setscheduler(0, schedBatch, &parameters)
}

/// What `pthread_setname_np` does, which Glibc's Swift module leaves out (it is a GNU
/// extension): the kernel takes a thread's name written to its `comm` file. Best effort: a
/// thread keeps its inherited name if /proc is not mounted.
private func nameThisThread(_ name: String) {
    let descriptor = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return }
    _ = name.withCString { write(descriptor, $0, strlen($0)) }
    close(descriptor)
}
