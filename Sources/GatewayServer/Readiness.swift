import Synchronization

/// Conditions that together make a role ready, and the callers waiting for them.
final class Readiness: Sendable {
    enum Condition: Hashable, Sendable { case listening, recovered }

    private struct State {
        var met: Set<Condition> = []
        var waiters: [UInt64: (conditions: Set<Condition>, continuation: CheckedContinuation<Void, Never>)] = [:]
        var next: UInt64 = 0
    }

    private let state = Mutex(State())

    func mark(_ condition: Condition) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.met.insert(condition)
            let met = state.met
            let done = state.waiters.filter { $0.value.conditions.isSubset(of: met) }
            for id in done.keys { state.waiters[id] = nil }
            return done.values.map(\.continuation)
        }
        for waiter in ready { waiter.resume() }
    }

    func isMet(_ condition: Condition) -> Bool { state.withLock { $0.met.contains(condition) } }

    /// Returns once every condition is met, or when the waiting task is cancelled.
    func wait(for conditions: Set<Condition>) async {
        let id = state.withLock { state in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if conditions.isSubset(of: state.met) || Task.isCancelled { return true }
                    state.waiters[id] = (conditions, continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }
}
