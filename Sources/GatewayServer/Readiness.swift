import Synchronization

/// Conditions that together make a role ready, and the callers waiting for them.
final class Readiness: Sendable {
    enum Condition: Hashable, Sendable { case listening, recovered }

    private let state = Mutex<(met: Set<Condition>, waiters: [(Set<Condition>, CheckedContinuation<Void, Never>)])>(([], []))

    func mark(_ condition: Condition) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.met.insert(condition)
            let met = state.met
            let (done, waiting) = (state.waiters.filter { $0.0.isSubset(of: met) }, state.waiters.filter { !$0.0.isSubset(of: met) })
            state.waiters = waiting
            return done.map(\.1)
        }
        for waiter in ready { waiter.resume() }
    }

    func wait(for conditions: Set<Condition>) async {
        await withCheckedContinuation { continuation in
            let already = state.withLock { state in
                if conditions.isSubset(of: state.met) { return true }
                state.waiters.append((conditions, continuation))
                return false
            }
            if already { continuation.resume() }
        }
    }
}
