package import Foundation

/// The calls in flight and what each receiver said so far.
///
/// A pure state machine: every transition returns the ``CallTable/Effects`` to perform (resume
/// the caller, send `cancel`, release a receiver's in-flight slot); ``CallRouter`` performs
/// them outside the lock.
///
/// A `cancel` is held back for ``defaultCancelGrace`` after its call ends and dropped if the
/// receiver answers meanwhile: the receivers of a lookup answer within microseconds of
/// each other, so nearly every `cancel` reached a worker that had already answered, and cost
/// the gateway a write and the worker a wake-up and a decode for nothing (3–4 % of the
/// calls/s at 3 workers, c=64). A handler still running gets its `cancel` at most
/// that much later, which is nothing beside the work it saves.
package struct CallTable {
    /// How long a `cancel` waits for the receiver's own answer to make it unnecessary.
    package static let defaultCancelGrace = Duration.milliseconds(10)

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
        /// When to call ``CallTable/takeDueCancels(now:)``: cancels are held back.
        package var sweepAt: ContinuousClock.Instant?

        package init() {}

        package mutating func merge(_ other: Effects) {
            released += other.released
            cancel += other.cancel
            completions += other.completions
            if let other = other.sweepAt { sweepAt = min(sweepAt ?? other, other) }
        }
    }

    private var calls: [String: Pending] = [:]
    private let cancelGrace: Duration

    /// Cancels held back, by request id: who still holds the request, and when they are due.
    private var heldCancels: [String: (due: ContinuousClock.Instant, receivers: [ConnectionID: ClientConnection])] = [:]
    /// Whether a sweep is scheduled (it re-arms itself while cancels are held).
    private var sweepArmed = false

    package init(cancelGrace: Duration = CallTable.defaultCancelGrace) {
        self.cancelGrace = cancelGrace
    }

    /// Cancels held back right now (for the tests).
    package var heldCancelCount: Int { heldCancels.values.reduce(0) { $0 + $1.receivers.count } }

    package var count: Int { calls.count }

    /// The request ids of the calls in flight.
    package var requestIDs: [String] { Array(calls.keys) }

    /// The method of the call in flight under `requestID`.
    package func method(of requestID: String) -> String? { calls[requestID]?.method }

    /// Adds a call; false when a call with the same request id is already in flight.
    package mutating func start(_ requestID: String, _ pending: Pending) -> Bool {
        guard calls[requestID] == nil else { return false }
        // The request is wanted again (a retry, a replay): a cancel held from its last run
        // would stop this one at the receivers.
        heldCancels[requestID] = nil
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
            // Its call has ended, and this answer makes the receiver's cancel unnecessary.
            dropHeldCancel(requestID, for: connection.id)
            return (Effects(), false)
        }
        var effects = Effects()
        effects.released.append(connection)
        switch answer {
        case .found:
            calls[requestID] = nil
            effects.released += call.outstanding.values
            holdCancels(requestID, call.outstanding, &effects)
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
        for requestID in heldCancels.keys { dropHeldCancel(requestID, for: connection.id) }
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
        holdCancels(requestID, call.outstanding, &effects)
        let waitingOn = call.outstanding.values.map(\.name).sorted().joined(separator: ", ")
        var error = "\(reason); no answer from \(waitingOn)"
        if !call.notFound.isEmpty { error += "; not found by \(call.notFound.sorted().joined(separator: ", "))" }
        if !call.failures.isEmpty { error += "; failed: \(call.failures.joined(separator: "; "))" }
        effects.completions.append((call.continuation, CallResult(outcome: outcome, error: error, receivers: call.receivers)))
        return effects
    }

    /// Holds back `cancel` for `receivers` until ``cancelGrace`` from now.
    private mutating func holdCancels(_ requestID: String, _ receivers: [ConnectionID: ClientConnection], _ effects: inout Effects) {
        guard !receivers.isEmpty else { return }
        let due = ContinuousClock.now + cancelGrace
        heldCancels[requestID] = (due, receivers)
        if !sweepArmed {
            sweepArmed = true
            effects.sweepAt = due
        }
    }

    private mutating func dropHeldCancel(_ requestID: String, for connection: ConnectionID) {
        guard var held = heldCancels[requestID], held.receivers.removeValue(forKey: connection) != nil else { return }
        heldCancels[requestID] = held.receivers.isEmpty ? nil : held
    }

    /// The held cancels that are due (all of them with `all`), and when to look again.
    package mutating func takeDueCancels(now: ContinuousClock.Instant, all: Bool = false) -> Effects {
        var effects = Effects()
        var next: ContinuousClock.Instant?
        for (requestID, held) in heldCancels {
            if all || held.due <= now {
                effects.cancel += held.receivers.values.map { (requestID, $0) }
                heldCancels[requestID] = nil
            } else {
                next = min(next ?? held.due, held.due)
            }
        }
        sweepArmed = next != nil
        effects.sweepAt = next
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
