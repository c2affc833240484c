/// Which streams are registered, keyed by instance id and grouped by environment.
///
/// A pure state machine: it holds no locks and does no I/O. ``ConnectedClients`` wraps it
/// in a mutex and performs the actions it returns.
package struct StreamRegistry {
    /// The registered connection of each instance id.
    private var byInstance: [String: ClientConnection] = [:]
    /// Instance ids per environment, so a call to one environment does not scan them all.
    private var byEnvironment: [String: Set<String>] = [:]
    /// Incremented on every registration; callers waiting for a receiver compare it.
    package private(set) var generation: UInt64 = 0

    package init() {}

    /// Registers `connection`. A connection already registered under the same instance id is
    /// returned: the caller closes it, and its later ``remove(_:)`` does nothing.
    @discardableResult
    package mutating func register(_ connection: ClientConnection) -> ClientConnection? {
        let instance = connection.identity.instanceID
        let replaced = byInstance.updateValue(connection, forKey: instance)
        if let replaced, replaced.identity.environment != connection.identity.environment {
            removeFromEnvironment(instance, replaced.identity.environment)
        }
        byEnvironment[connection.identity.environment, default: []].insert(instance)
        generation &+= 1
        return replaced
    }

    package func isRegistered(_ instance: String) -> Bool { byInstance[instance] != nil }

    /// Removes `connection` if it is still the one registered for its instance id.
    /// Returns false when a newer stream took its place (or it was never registered).
    @discardableResult
    package mutating func remove(_ connection: ClientConnection) -> Bool {
        let instance = connection.identity.instanceID
        guard byInstance[instance]?.id == connection.id else { return false }
        byInstance[instance] = nil
        removeFromEnvironment(instance, connection.identity.environment)
        return true
    }

    private mutating func removeFromEnvironment(_ instance: String, _ environment: String) {
        byEnvironment[environment]?.remove(instance)
        if byEnvironment[environment]?.isEmpty == true { byEnvironment[environment] = nil }
    }

    /// The connections a call to `target` for `method` goes to: those not draining and
    /// matching the target's environment and instance, narrowed to the ones that list the
    /// method. When none lists it, all of them are asked, so each says `unimplemented` at
    /// once (or an instance with an outdated list answers after all) instead of the call
    /// waiting for a receiver until its deadline.
    package func eligible(for target: CallTarget, method: String) -> [ClientConnection] {
        let live = candidates(target).filter { !$0.isDraining }
        let answering = live.filter { $0.identity.answers(method) }
        return answering.isEmpty ? live : answering
    }

    /// Every registered connection, optionally of one environment, ordered by environment
    /// then instance id.
    package func connections(environment: String? = nil) -> [ClientConnection] {
        let all: [ClientConnection]
        if let environment {
            all = (byEnvironment[environment] ?? []).compactMap { byInstance[$0] }
        } else {
            all = Array(byInstance.values)
        }
        return all.sorted {
            ($0.identity.environment, $0.identity.instanceID) < ($1.identity.environment, $1.identity.instanceID)
        }
    }

    package var count: Int { byInstance.count }

    private func candidates(_ target: CallTarget) -> [ClientConnection] {
        if let instance = target.instanceID {
            guard let connection = byInstance[instance] else { return [] }
            if let environment = target.environment, connection.identity.environment != environment { return [] }
            return [connection]
        }
        if let environment = target.environment {
            return (byEnvironment[environment] ?? []).compactMap { byInstance[$0] }
        }
        return Array(byInstance.values)
    }
}

/// Which streams a call goes to. Nil fields mean "any".
public struct CallTarget: Sendable, Hashable, CustomStringConvertible {
    public var environment: String?
    public var instanceID: String?

    public init(environment: String? = nil, instanceID: String? = nil) {
        self.environment = environment
        self.instanceID = instanceID
    }

    public static let all = CallTarget()

    public var description: String {
        switch (environment, instanceID) {
        case (nil, nil): "all environments"
        case (let environment?, nil): "environment '\(environment)'"
        case (nil, let instance?): "instance '\(instance)'"
        case (let environment?, let instance?): "instance '\(instance)' of environment '\(environment)'"
        }
    }
}
