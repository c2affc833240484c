#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a new detached thread: for the few loops that must block outside the
/// concurrency pool (the deadline timers' `pthread_cond_timedwait`, the journal's
/// synchronous commits and fsyncs), where a task would hold a pool thread.
public func startDetachedThread(purpose: String, _ body: @escaping @Sendable () -> Void) {
    final class Body: Sendable {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Body(body)).toOpaque()
    let result = pthread_create(&thread, nil, { context in
        Unmanaged<Body>.fromOpaque(context!).takeRetainedValue().run()
        return nil
    }, context)
    precondition(result == 0, "cannot start \(purpose): pthread_create returned \(result)")
    pthread_detach(thread)
}
