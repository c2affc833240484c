import AsyncPrimitives
import GatewayProtocol
import Synchronization

/// The requests a worker is running, across all its streams.
///
/// A run belongs to the worker, not to the stream it came on: when a stream drops, its
/// requests finish anyway and their answers land in the response cache, so the gateway's
/// retry (on a new stream) is answered without running the handler a second time. A repeat
/// of a request id that is still running joins the run instead of starting another.
///
/// A run is first offered to its handler to answer at once, on the reader's thread (an
/// ``InstantMethodHandler``'s microsecond lookup); otherwise it is one task, started by the
/// stream's reader. Its end is decided once, by the first of the handler's answer, the
/// deadline's (sent from the timer, while the handler is cancelled) and the gateway's
/// `cancel`: the decision lives here, under the same lock as the streams waiting for it, so
/// a request costs at most one task and no hop through a queue, a run loop or a second task
/// racing the first.
final class RequestExecutions: Sendable {
    /// How a run ended: answered (with what), or cancelled without an answer.
    enum Ending: Sendable {
        case answered(GatewayResponse)
        case cancelled
    }

    private struct Running {
        /// The send queues of the streams waiting for this answer.
        var replyTo: [ObjectIdentifier: MessageQueue<GatewayMessage>]
        /// Set once decided; the handler may still be unwinding.
        var ending: Ending?
        /// Nil while the handler is asked to answer at once (no task runs it then).
        var task: Task<Void, Never>?
    }

    private struct State {
        var running: [String: Running] = [:]
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// Set by shutdown: nothing new starts.
        var stopped = false
    }

    private let state = Mutex(State())
    private let responses: ResponseCache

    init(responses: ResponseCache) {
        self.responses = responses
    }

    var count: Int { state.withLock { $0.running.count } }

    /// Starts `request`, or joins its run when one is going; the answer goes to `replyTo`.
    /// `answerAtOnce` is tried first, on the calling thread, outside the lock (true: it
    /// answered and ended the run); otherwise the run gets a task of its own that runs
    /// `execute`. Returns false when it joined.
    @discardableResult
    func start(
        _ request: GatewayRequest, replyTo: MessageQueue<GatewayMessage>,
        answerAtOnce: (GatewayRequest, RequestRun) -> Bool,
        execute: @escaping @Sendable (GatewayRequest, RequestRun) async -> Void
    ) -> Bool {
        let requestID = request.requestID
        enum Start { case joined, refused, claimed }
        let start = state.withLock { state -> Start in
            if let running = state.running[requestID] {
                if case .answered(let answer) = running.ending {
                    replyTo.enqueue(.response(answer))
                } else {
                    state.running[requestID]!.replyTo[ObjectIdentifier(replyTo)] = replyTo
                }
                return .joined
            }
            // After shutdown no stream is read, so nothing should arrive; what does is
            // abandoned like the runs that were cut, and the gateway retries it.
            guard !state.stopped else { return .refused }
            // Claimed before the handler is asked, so a repeat on another stream joins
            // this run instead of running the handler a second time.
            state.running[requestID] = Running(replyTo: [ObjectIdentifier(replyTo): replyTo], ending: nil, task: nil)
            return .claimed
        }
        guard case .claimed = start else { return start == .refused }
        let run = RequestRun(requestID: requestID, executions: self)
        if answerAtOnce(request, run) {
            finish(requestID)
            return true
        }
        state.withLock { state in
            // Made under the lock, so `cancel` and shutdown always find the task; a task that
            // ends at once waits for the lock in `finish` and so finds its entry.
            let task = Task {
                await execute(request, run)
                self.finish(requestID)
            }
            state.running[requestID]?.task = task
            // A `cancel` (or the shutdown) that came while the handler was asked found no
            // task to cancel.
            if state.running[requestID]?.ending != nil || state.stopped { task.cancel() }
        }
        return true
    }

    /// The gateway on `replyTo`'s stream no longer needs the answer; the run is cancelled
    /// once no stream waits for it.
    func cancel(_ requestID: String, replyTo: MessageQueue<GatewayMessage>) {
        let task = state.withLock { state -> Task<Void, Never>? in
            guard var running = state.running[requestID] else { return nil }
            running.replyTo[ObjectIdentifier(replyTo)] = nil
            guard running.replyTo.isEmpty, running.ending == nil else {
                state.running[requestID] = running
                return nil
            }
            running.ending = .cancelled
            state.running[requestID] = running
            return running.task
        }
        // Nil while the handler is asked to answer at once: the task made after it sees the
        // ending and is cancelled then.
        task?.cancel()
    }

    /// Decides how `requestID`'s run ends unless it was decided already. An answer that wins
    /// goes into the response cache, then to every stream waiting for it; with
    /// `cancellingHandler`, the run's task is cancelled first (a deadline answered while the
    /// handler still runs: it sees the cancellation before anyone sees the answer). Returns the
    /// ending that stands and whether it was this one.
    fileprivate func end(_ requestID: String, _ ending: Ending, cancellingHandler: Bool) -> (won: Bool, standing: Ending) {
        let (won, standing, replyTo, task) = state.withLock { state -> (Bool, Ending, [MessageQueue<GatewayMessage>], Task<Void, Never>?) in
            // Gone: the run finished, and a deadline timer that fired as it did lost.
            guard var running = state.running[requestID] else { return (false, ending, [], nil) }
            if let standing = running.ending { return (false, standing, [], nil) }
            running.ending = ending
            let replyTo = Array(running.replyTo.values)
            running.replyTo = [:]
            state.running[requestID] = running
            // Stored before the lock is let go: once `finish` removes the run, a repeat of
            // the id must find the answer here rather than start the handler again.
            if case .answered(let response) = ending { responses.store(response) }
            return (true, ending, replyTo, cancellingHandler ? running.task : nil)
        }
        task?.cancel()
        if won, case .answered(let response) = ending {
            for queue in replyTo { queue.enqueue(.response(response)) }
        }
        return (won, standing)
    }

    private func finish(_ requestID: String) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.running[requestID] = nil
            guard state.running.isEmpty else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Waits until cancelled (the worker's shutdown), then cancels every run still going and
    /// returns once they have all unwound.
    func run() async {
        await FirstOutcome<Void>(onCancel: ()).wait()
        let tasks = state.withLock { state in
            state.stopped = true
            return state.running.values.compactMap(\.task)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    /// Returns when nothing is running. Not cancellable on its own: race it with a timer.
    func waitUntilEmpty() async {
        await withCheckedContinuation { continuation in
            let empty = state.withLock { state in
                if state.running.isEmpty { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if empty { continuation.resume() }
        }
    }

    /// Releases every ``waitUntilEmpty()`` caller (used when the wait times out).
    func releaseWaiters() {
        let waiters = state.withLock { state in
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// One request's run as its executor sees it: where its one ending is decided.
struct RequestRun: Sendable {
    let requestID: String
    fileprivate let executions: RequestExecutions

    /// Decides the run's ending unless the handler, the deadline or a `cancel` came first;
    /// returns the ending that stands and whether it was this one. `cancellingHandler`: when
    /// it wins, the run's task is cancelled before the answer goes out, so a handler still
    /// going after its deadline was answered stops and unwinds.
    func end(_ ending: RequestExecutions.Ending, cancellingHandler: Bool = false) -> (won: Bool, standing: RequestExecutions.Ending) {
        executions.end(requestID, ending, cancellingHandler: cancellingHandler)
    }
}
