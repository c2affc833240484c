package import Foundation

/// The calls in flight and what each receiver said so far.
///
/// A pure state machine: every transition returns the ``CallTable/Effects`` to perform (resume
/// the caller, send `cancel`, release a receiver's in-flight slot); ``CallRouter`` performs
/// them outside the lock.
package struct CallTable {
    package struct Pending {
        let method: String
        var outstanding: [ConnectionID: ClientConnection]
        let receivers: Int
        var notFound: [String] = []
        var unimplemented: [String] = []
        /// Receivers whose own deadline passed before they had an answer.
        var timedOut: [String] = []
        var failures: [String] = []
        /// Failures that a retry would repeat (the request itself was refused).
        var permanentFailures = 0
        /// Environments expected to answer that had no instance connected when the call went
        /// out: without them a "not found" is not final.
        let missingEnvironments: Set<String>
        let continuation: CheckedContinuation<CallResult, Never>

        package init(method: String, receivers: [ClientConnection], missingEnvironments: Set<String> = [], continuation: CheckedContinuation<CallResult, Never>) {
            self.method = method
            self.outstanding = Dictionary(uniqueKeysWithValues: receivers.map { ($0.id, $0) })
            self.receivers = receivers.count
            self.missingEnvironments = missingEnvironments
            self.continuation = continuation
        }
    }

    /// What a transition asks the caller to do.
    package struct Effects {
        /// Receivers that no longer hold the request.
        package var released: [ClientConnection] = []
        /// Receivers to send `cancel` for `requestID`.
        package var cancel: [(requestID: String, connection: ClientConnection)] = []
        /// The caller to resume, and with what.
        package var completions: [(continuation: CheckedContinuation<CallResult, Never>, result: CallResult)] = []

        package init() {}

        package mutating func merge(_ other: Effects) {
            released += other.released
            cancel += other.cancel
            completions += other.completions
        }
    }

    private var calls: [String: Pending] = [:]

    package init() {}

    package var count: Int { calls.count }

    /// The request ids of the calls in flight.
    package var requestIDs: [String] { Array(calls.keys) }

    /// The method of the call in flight under `requestID`.
    package func method(of requestID: String) -> String? { calls[requestID]?.method }

    /// Adds a call; false when a call with the same request id is already in flight.
    package mutating func start(_ requestID: String, _ pending: Pending) -> Bool {
        guard calls[requestID] == nil else { return false }
        calls[requestID] = pending
        return true
    }

    /// A receiver answered. Unknown request ids and receivers that were not asked (or were
    /// already released) are ignored; the return value says whether the answer was used.
    package mutating func answer(
        _ requestID: String,
        from connection: ClientConnection,
        _ answer: Answer,
        payload: Data
    ) -> (effects: Effects, accepted: Bool) {
        guard var call = calls[requestID], call.outstanding.removeValue(forKey: connection.id) != nil else {
            return (Effects(), false)
        }
        var effects = Effects()
        effects.released.append(connection)
        switch answer {
        case .found:
            calls[requestID] = nil
            effects.released += call.outstanding.values
            effects.cancel = call.outstanding.values.map { (requestID, $0) }
            let result = CallResult(outcome: .ok, payload: payload, responder: connection.identity, receivers: call.receivers)
            effects.completions.append((call.continuation, result))
            return (effects, true)
        case .notFound:
            call.notFound.append(connection.name)
        case .unimplemented:
            call.unimplemented.append(connection.name)
        case .deadlineExceeded:
            call.timedOut.append(connection.name)
        case .failed(let reason, let permanent):
            call.failures.append("\(connection.name): \(reason)")
            if permanent { call.permanentFailures += 1 }
        case .refused(let reason):
            call.failures.append("\(connection.name): refused answer: \(reason)")
        }
        effects.merge(settleIfAnswered(requestID, call))
        return (effects, true)
    }

    /// The request could not be delivered to `connection` or its stream ended.
    package mutating func receiverFailed(_ requestID: String, _ connection: ClientConnection, reason: String) -> Effects {
        guard var call = calls[requestID], call.outstanding.removeValue(forKey: connection.id) != nil else {
            return Effects()
        }
        call.failures.append("\(connection.name): \(reason)")
        var effects = Effects()
        effects.released.append(connection)
        effects.merge(settleIfAnswered(requestID, call))
        return effects
    }

    /// A stream ended: every call waiting on it fails for that receiver at once.
    package mutating func connectionClosed(_ connection: ClientConnection, reason: String) -> Effects {
        let affected = calls.compactMap { $0.value.outstanding[connection.id] == nil ? nil : $0.key }
        var effects = Effects()
        for requestID in affected {
            effects.merge(receiverFailed(requestID, connection, reason: reason))
        }
        return effects
    }

    /// The caller stops waiting (deadline or cancellation): the call ends with `outcome`
    /// and the receivers still holding it get `cancel`.
    package mutating func abandon(_ requestID: String, outcome: CallResult.Outcome, reason: String) -> Effects {
        guard let call = calls.removeValue(forKey: requestID) else { return Effects() }
        var effects = Effects()
        effects.released += call.outstanding.values
        effects.cancel = call.outstanding.values.map { (requestID, $0) }
        let waitingOn = call.outstanding.values.map(\.name).sorted().joined(separator: ", ")
        var error = "\(reason); no answer from \(waitingOn)"
        if !call.notFound.isEmpty { error += "; not found by \(call.notFound.sorted().joined(separator: ", "))" }
        if !call.failures.isEmpty { error += "; failed: \(call.failures.joined(separator: "; "))" }
        effects.completions.append((call.continuation, CallResult(outcome: outcome, error: error, receivers: call.receivers)))
        return effects
    }

    /// Stores `call` back, or completes it when every receiver has answered.
    private mutating func settleIfAnswered(_ requestID: String, _ call: Pending) -> Effects {
        guard call.outstanding.isEmpty else {
            calls[requestID] = call
            return Effects()
        }
        calls[requestID] = nil
        let result: CallResult
        let timedOut = call.timedOut.isEmpty ? "" : "deadline exceeded at \(call.timedOut.sorted().joined(separator: ", "))"
        if !call.failures.isEmpty {
            var error = call.failures.joined(separator: "; ")
            if !timedOut.isEmpty { error += "; " + timedOut }
            if !call.notFound.isEmpty { error += "; not found by \(call.notFound.sorted().joined(separator: ", "))" }
            result = CallResult(
                outcome: .failed, error: error, receivers: call.receivers,
                retryable: call.permanentFailures < call.failures.count
            )
        } else if !timedOut.isEmpty {
            // A receiver ran out of time: the one that might have had the answer did not
            // give it, so this is the deadline's outcome, not "not found" and not a failure.
            var error = timedOut
            if !call.notFound.isEmpty { error += "; not found by \(call.notFound.sorted().joined(separator: ", "))" }
            result = CallResult(outcome: .deadlineExceeded, error: error, receivers: call.receivers)
        } else if !call.notFound.isEmpty && !call.missingEnvironments.isEmpty {
            // Everyone asked said no, but an environment that should answer was not asked.
            result = CallResult(
                outcome: .failed,
                error: "not found by \(call.notFound.sorted().joined(separator: ", ")), but environment(s) \(call.missingEnvironments.sorted().joined(separator: ", ")) had no instance connected; retried until they answer",
                receivers: call.receivers
            )
        } else if !call.notFound.isEmpty {
            result = CallResult(
                outcome: .notFound,
                error: "not found by \(call.notFound.sorted().joined(separator: ", "))",
                receivers: call.receivers
            )
        } else {
            result = CallResult(
                outcome: .failed,
                error: "unimplemented: no receiver implements '\(call.method)' (asked \(call.unimplemented.sorted().joined(separator: ", ")))",
                receivers: call.receivers,
                retryable: false
            )
        }
        var effects = Effects()
        effects.completions.append((call.continuation, result))
        return effects
    }
}
