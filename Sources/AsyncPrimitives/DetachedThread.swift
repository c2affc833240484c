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
public func startDetachedThread(name: String, purpose: String, _ body: @escaping @Sendable () -> Void) {
    precondition(name.utf8.count <= 15, "thread name '\(name)' is over 15 bytes")
    final class Body: Sendable {
        let name: String
        let run: @Sendable () -> Void
        init(_ name: String, _ run: @escaping @Sendable () -> Void) { self.name = name; self.run = run }
    }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Body(name, body)).toOpaque()
    let result = pthread_create(&thread, nil, { context in
        let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
        nameThisThread(body.name)
        body.run()
        return nil
    }, context)
    precondition(result == 0, "cannot start \(purpose): pthread_create returned \(result)")
    pthread_detach(thread)
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
