import AsyncPrimitives
import GatewayProtocol
import Synchronization

/// The requests a worker is running, across all its streams.
///
/// A run belongs to the worker, not to the stream it came on: when a stream drops, its
/// requests finish anyway and their answers land in the response cache, so the gateway's
/// retry (on a new stream) is answered without running the handler a second time. A repeat
/// of a request id that is still running joins the run instead of starting another.
final class RequestExecutions: Sendable {
    private struct Running {
        let ending = FirstOutcome<RequestEnding>(onCancel: .cancelled)
        /// The send queues of the streams waiting for this answer.
        var replyTo: [ObjectIdentifier: MessageQueue<GatewayMessage>]
        /// Set once answered; the handler may still be unwinding.
        var answer: GatewayResponse?
    }

    private struct State {
        var running: [String: Running] = [:]
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let started = MessageQueue<(GatewayRequest, FirstOutcome<RequestEnding>)>(capacity: Int.max)

    var count: Int { state.withLock { $0.running.count } }

    /// Starts `request`, or joins its run when one is going; the answer goes to `replyTo`.
    /// Returns false when it joined.
    @discardableResult
    func start(_ request: GatewayRequest, replyTo: MessageQueue<GatewayMessage>) -> Bool {
        let ending = state.withLock { state -> FirstOutcome<RequestEnding>? in
            if let running = state.running[request.requestID] {
                if let answer = running.answer {
                    replyTo.enqueue(.response(answer))
                } else {
                    state.running[request.requestID]!.replyTo[ObjectIdentifier(replyTo)] = replyTo
                }
                return nil
            }
            let running = Running(replyTo: [ObjectIdentifier(replyTo): replyTo])
            state.running[request.requestID] = running
            return running.ending
        }
        guard let ending else { return false }
        started.enqueue((request, ending))
        return true
    }

    /// The gateway on `replyTo`'s stream no longer needs the answer; the run is cancelled
    /// once no stream waits for it.
    func cancel(_ requestID: String, replyTo: MessageQueue<GatewayMessage>) {
        let ending = state.withLock { state -> FirstOutcome<RequestEnding>? in
            guard var running = state.running[requestID] else { return nil }
            running.replyTo[ObjectIdentifier(replyTo)] = nil
            state.running[requestID] = running
            return running.replyTo.isEmpty ? running.ending : nil
        }
        ending?.decide(.cancelled)
    }

    /// Runs started requests with `execute` until cancelled. `execute` hands its answer to
    /// the closure it gets as soon as it has one (a cancelled request has none), which sends
    /// it to every stream waiting for it; the run ends when `execute` returns.
    func run(_ execute: @escaping @Sendable (GatewayRequest, FirstOutcome<RequestEnding>, @escaping @Sendable (GatewayResponse) -> Void) async -> Void) async {
        await withDiscardingTaskGroup { group in
            while let batch = await started.nextBatch() {
                for (request, ending) in batch {
                    group.addTask {
                        await execute(request, ending) { response in self.answer(request.requestID, response) }
                        self.finish(request.requestID)
                    }
                }
            }
        }
    }

    private func answer(_ requestID: String, _ response: GatewayResponse) {
        let replyTo = state.withLock { state -> [MessageQueue<GatewayMessage>] in
            guard state.running[requestID] != nil else { return [] }
            state.running[requestID]!.answer = response
            defer { state.running[requestID]!.replyTo = [:] }
            return Array(state.running[requestID]!.replyTo.values)
        }
        for queue in replyTo { queue.enqueue(.response(response)) }
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

/// How a request ends: the first of the handler's answer, the request's deadline and the
/// gateway's `cancel` decides.
enum RequestEnding: Sendable {
    case answered(GatewayResponse)
    case deadline
    case cancelled
}
