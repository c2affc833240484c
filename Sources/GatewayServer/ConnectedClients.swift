import Synchronization

/// The live registry: ``StreamRegistry`` behind a mutex, plus the callers waiting for a
/// receiver to register.
package final class ConnectedClients: Sendable {
    private let state = Mutex(State())

    private struct State {
        var registry = StreamRegistry()
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    package init() {}

    /// Registers `connection` and wakes every caller waiting for a receiver. Returns the
    /// connection it replaced, which the caller must close.
    package func register(_ connection: ClientConnection) -> ClientConnection? {
        let (replaced, waiters) = state.withLock { state in
            let replaced = state.registry.register(connection)
            let waiters = state.waiters.values
            state.waiters.removeAll()
            return (replaced, Array(waiters))
        }
        for waiter in waiters { waiter.resume() }
        return replaced
    }

    @discardableResult
    package func remove(_ connection: ClientConnection) -> Bool {
        state.withLock { $0.registry.remove(connection) }
    }

    /// The eligible connections and the registry generation they were read at.
    package func eligible(for target: CallTarget, method: String) -> (connections: [ClientConnection], generation: UInt64) {
        state.withLock { ($0.registry.eligible(for: target, method: method), $0.registry.generation) }
    }

    package func connections(environment: String? = nil) -> [ClientConnection] {
        state.withLock { $0.registry.connections(environment: environment) }
    }

    package var count: Int { state.withLock { $0.registry.count } }

    /// Returns once a registration happened after `generation`, or when the task is cancelled.
    package func waitForRegistration(after generation: UInt64) async {
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if Task.isCancelled || state.registry.generation != generation { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
