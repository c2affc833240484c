import Synchronization

/// The live registry: ``StreamRegistry`` behind a mutex, plus the callers waiting for a
/// receiver to register.
package final class ConnectedClients: Sendable {
    private let state = Mutex(State())

    private struct State {
        var registry = StreamRegistry()
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// Set once the gateway shuts down: no registration is taken after it.
        var closed = false

        mutating func takeWaiters() -> [CheckedContinuation<Void, Never>] {
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
    }

    /// Registered instances at most; a stream that replaces its own instance's is still taken.
    package let limit: Int

    package init(limit: Int = .max) {
        self.limit = limit
    }

    /// What ``register(_:)`` did.
    package enum Registration {
        /// Registered; the caller closes the connection it replaced, if any. `newEnvironment`:
        /// no instance of its environment was registered before.
        case registered(replaced: ClientConnection?, newEnvironment: Bool)
        /// The gateway is shutting down and takes no new registrations.
        case refused
        /// ``limit`` instances are registered already, and this one is not among them.
        case full
    }

    /// Registers `connection` and wakes every caller waiting for a receiver.
    package func register(_ connection: ClientConnection) -> Registration {
        let (registration, waiters) = state.withLock { state -> (Registration, [CheckedContinuation<Void, Never>]) in
            guard !state.closed else { return (.refused, []) }
            guard state.registry.count < limit || state.registry.isRegistered(connection.identity.instanceID) else { return (.full, []) }
            let newEnvironment = state.registry.connections(environment: connection.identity.environment).isEmpty
            let replaced = state.registry.register(connection)
            return (.registered(replaced: replaced, newEnvironment: newEnvironment), state.takeWaiters())
        }
        for waiter in waiters { waiter.resume() }
        return registration
    }

    /// Refuses every later registration and wakes the callers waiting for a receiver, who
    /// then see ``isClosed`` and give their calls back. Streams already registered stay until
    /// the gateway ends them.
    package func close() {
        let waiters = state.withLock { state in
            state.closed = true
            return state.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    package var isClosed: Bool { state.withLock { $0.closed } }

    /// Whether ``register(_:)`` would refuse `instance` as over ``limit`` right now.
    package func isFull(for instance: String) -> Bool {
        state.withLock { $0.registry.count >= limit && !$0.registry.isRegistered(instance) }
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

    /// The environments with at least one registered instance.
    package var environments: Set<String> {
        state.withLock { Set($0.registry.connections().map(\.identity.environment)) }
    }

    /// Returns once a registration happened after `generation`, the registry closed, or the
    /// task is cancelled.
    package func waitForRegistration(after generation: UInt64) async {
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if Task.isCancelled || state.closed || state.registry.generation != generation { return true }
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
