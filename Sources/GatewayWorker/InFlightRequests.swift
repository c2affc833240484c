import Synchronization

/// The requests a stream is handling, so `cancel` can reach one and a drain can wait for all.
final class InFlightRequests: Sendable {
    private let state = Mutex(State())

    private struct State {
        var signals: [String: CancelSignal] = [:]
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    var count: Int { state.withLock { $0.signals.count } }

    /// Starts tracking `requestID`; nil when it is already in flight (a repeat of the same id:
    /// the running one will answer).
    func begin(_ requestID: String) -> CancelSignal? {
        state.withLock { state in
            guard state.signals[requestID] == nil else { return nil }
            let signal = CancelSignal()
            state.signals[requestID] = signal
            return signal
        }
    }

    func end(_ requestID: String) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.signals[requestID] = nil
            guard state.signals.isEmpty else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Cancels one request; false when it is not in flight.
    @discardableResult
    func cancel(_ requestID: String) -> Bool {
        guard let signal = state.withLock({ $0.signals[requestID] }) else { return false }
        signal.fire()
        return true
    }

    /// Returns when nothing is in flight. Not cancellable on its own: race it with a timer.
    func waitUntilEmpty() async {
        await withCheckedContinuation { continuation in
            let empty = state.withLock { state in
                if state.signals.isEmpty { return true }
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

/// Fired once when the gateway cancels a request; ``wait()`` returns then, or when the
/// waiting task is cancelled.
final class CancelSignal: Sendable {
    private let state = Mutex<(fired: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func fire() {
        let waiter = state.withLock { state in
            state.fired = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if state.fired || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            fire()
        }
    }
}
