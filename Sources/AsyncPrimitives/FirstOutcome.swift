import Synchronization

/// The first of several contenders (a result, a timer, a cancel message) decides a value,
/// once; ``wait()`` returns it. Racing them this way costs one continuation instead of a
/// task group with a task per contender.
public final class FirstOutcome<Value: Sendable>: Sendable {
    private enum State {
        case open
        case waiting(CheckedContinuation<Value, Never>)
        case decided(Value)
    }

    private let state = Mutex(State.open)
    private let onCancel: Value?

    /// - Parameter onCancel: decided when the task in ``wait()`` is cancelled; nil: the
    ///   cancellation is left to the contenders (a child task that is cancelled with it).
    public init(onCancel: Value? = nil) {
        self.onCancel = onCancel
    }

    /// Decides `value` unless something came first; true when it was the first.
    @discardableResult
    public func decide(_ value: Value) -> Bool {
        let (won, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Value, Never>?) in
            switch state {
            case .open:
                state = .decided(value)
                return (true, nil)
            case .waiting(let continuation):
                state = .decided(value)
                return (true, continuation)
            case .decided:
                return (false, nil)
            }
        }
        waiter?.resume(returning: value)
        return won
    }

    /// The value, once decided. Called once.
    public func wait() async -> Value {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let decided = state.withLock { state -> Value? in
                    switch state {
                    case .open:
                        state = .waiting(continuation)
                        return nil
                    case .decided(let value):
                        return value
                    case .waiting:
                        preconditionFailure("FirstOutcome.wait() called twice")
                    }
                }
                if let decided { continuation.resume(returning: decided) }
            }
        } onCancel: {
            if let onCancel { decide(onCancel) }
        }
    }
}

/// The result of `body`, or `timedOut` when `deadline` passes first: then `body` is
/// cancelled, and this returns once it has unwound (as a task group racing a sleep would,
/// at the cost of a timer instead of a second task).
public func withDeadlineTimer<T: Sendable>(_ deadline: ContinuousClock.Instant, orElse timedOut: T, _ body: @escaping @Sendable () async -> T) async -> T {
    let first = FirstOutcome<T>()
    let timer = DeadlineTimers.shared.schedule(at: deadline) { first.decide(timedOut) }
    async let bodyWon = first.decide(await body())
    let result = await first.wait()
    if timer.cancel() {
        // The timer did not decide, so `body` did: it has returned already.
        _ = await bodyWon
    }
    // Otherwise leaving the scope cancels `body` and waits for it.
    return result
}
