import Synchronization

/// A value behind a lock that tasks can wait on: ``wait(until:)`` returns once the value
/// satisfies a condition (or the waiting task is cancelled), and every ``update(_:)`` resumes
/// the waiters it satisfied. What `READY=1` waits for in both roles: the gateway's startup
/// conditions and the worker's registrations.
public final class WatchedState<Value: Sendable>: Sendable {
    private struct State {
        var value: Value
        var waiters: [UInt64: (condition: @Sendable (Value) -> Bool, continuation: CheckedContinuation<Void, Never>)] = [:]
        var next: UInt64 = 0
    }

    private let state: Mutex<State>

    public init(_ value: Value) {
        state = Mutex(State(value: value))
    }

    /// The current value.
    public var value: Value { state.withLock { $0.value } }

    /// Changes the value, then resumes every waiter whose condition now holds.
    public func update(_ change: (inout Value) -> Void) {
        let satisfied = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            change(&state.value)
            let value = state.value
            let done = state.waiters.filter { $0.value.condition(value) }
            for id in done.keys { state.waiters[id] = nil }
            return done.values.map(\.continuation)
        }
        for waiter in satisfied { waiter.resume() }
    }

    /// Returns once `condition` holds for the value, or when the waiting task is cancelled.
    public func wait(until condition: @escaping @Sendable (Value) -> Bool) async {
        let id = state.withLock { state in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if condition(state.value) || Task.isCancelled { return true }
                    state.waiters[id] = (condition, continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }
}
