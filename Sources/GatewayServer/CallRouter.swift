import AsyncPrimitives
public import Foundation
package import GatewayProtocol
package import Logging
import RPCEndpoint
import SwiftProtobuf
import Synchronization
import TextFormats

/// One request to send through the gateway.
public struct OutgoingCall: Sendable {
    public var requestID: String
    public var method: String
    public var payload: Data
    public var target: CallTarget
    /// When the caller stops waiting.
    public var deadline: ContinuousClock.Instant
    /// 1 for the first send of this request id.
    public var attempt: UInt32

    public init(requestID: String, method: String, payload: Data, target: CallTarget, deadline: ContinuousClock.Instant, attempt: UInt32 = 1) {
        self.requestID = requestID
        self.method = method
        self.payload = payload
        self.target = target
        self.deadline = deadline
        self.attempt = attempt
    }
}

/// The fan-out: sends a call to every eligible stream, takes the first valid answer, cancels
/// the rest, and fails a receiver at once when its stream ends.
package final class CallRouter: Sendable {
    private let clients: ConnectedClients
    private let rules: AnswerRules
    private let table: Mutex<CallTable>
    private let idleWaiters = Mutex<[CheckedContinuation<Void, Never>]>([])
    private let logger: Logger
    /// Answers a method's rule refused, one warning per instance and minute.
    private let refusedAnswers: RefusalLog

    /// The environments that answer calls addressed to all (`--environments`); empty: any.
    /// Changes when the gateway re-reads its environments file (SIGHUP).
    private let answering: Mutex<Set<String>>

    /// - Parameter answeringEnvironments: when not empty, a call without an environment goes
    ///   to these environments only, and "not found" needs an answer from each of them.
    /// - Parameter cancelGrace: how long a `cancel` is held back for the receiver's own answer
    ///   (``CallTable/defaultCancelGrace``; the tests hold them longer).
    package init(
        clients: ConnectedClients, rules: AnswerRules = .builtIn, answeringEnvironments: Set<String> = [],
        cancelGrace: Duration = CallTable.defaultCancelGrace, logger: Logger
    ) {
        self.table = Mutex(CallTable(cancelGrace: cancelGrace))
        self.answering = Mutex(answeringEnvironments)
        self.clients = clients
        self.rules = rules
        self.logger = logger
        self.refusedAnswers = RefusalLog(logger: logger, message: "refused an answer from a client: it breaks the method's rule")
    }

    /// Calls in flight right now.
    package var pendingCount: Int { table.withLock { $0.count } }

    /// Cancels held back for their receivers' own answers right now.
    package var heldCancelCount: Int { table.withLock { $0.heldCancelCount } }

    /// True once the gateway shuts down: calls without a receiver end ``CallResult/Outcome/interrupted``.
    package var isStopping: Bool { clients.isClosed }

    /// Sends `call` and waits for its outcome, at most until its deadline. Waits for a
    /// receiver to connect when none is eligible yet.
    package func call(_ call: OutgoingCall) async -> CallResult {
        let (receivers, _) = receivers(of: call)
        // With receivers connected (the usual case) the deadline is a timer that abandons
        // the call: no task beside the caller's. Waiting for a receiver needs the deadline
        // to interrupt that wait, so it runs in a child task the deadline cancels.
        guard receivers.isEmpty else { return await send(call, to: receivers) }
        return await withTaskGroup(of: CallResult?.self) { group in
            group.addTask { await self.execute(call) }
            group.addTask {
                _ = await waitUntil(call.deadline)
                return nil
            }
            var result: CallResult?
            for await finished in group {
                if let finished { result = finished }
                group.cancelAll()
            }
            // `execute` always returns a result, also when cancelled.
            return result!
        }
    }

    /// The receivers of `call` now: the eligible streams, narrowed to the answering
    /// environments when the call names none.
    private func receivers(of call: OutgoingCall) -> (connections: [ClientConnection], generation: UInt64) {
        let (eligible, generation) = clients.eligible(for: call.target, method: call.method)
        let answering = answeringEnvironments
        guard call.target.environment == nil, !answering.isEmpty else { return (eligible, generation) }
        return (eligible.filter { answering.contains($0.identity.environment) }, generation)
    }

    /// The environments that answer calls addressed to all; empty: any.
    package var answeringEnvironments: Set<String> {
        get { answering.withLock { $0 } }
    }

    package func setAnsweringEnvironments(_ environments: Set<String>) {
        answering.withLock { $0 = environments }
    }

    private func execute(_ call: OutgoingCall) async -> CallResult {
        var (receivers, generation) = receivers(of: call)
        while receivers.isEmpty {
            // Shutting down: nobody new will register, and the request is the journal's
            // again (left unfinished for the next start), not a "no receivers" answer.
            if clients.isClosed { return Self.interrupted }
            await clients.waitForRegistration(after: generation)
            if clients.isClosed { return Self.interrupted }
            if Task.isCancelled {
                return stoppedWaiting(call) == .deadlineExceeded
                    ? CallResult(outcome: .noReceivers, error: "no receiver for '\(call.method)' in \(call.target) connected before the deadline")
                    : CallResult(outcome: .failed, error: "cancelled by the caller while waiting for a receiver")
            }
            (receivers, generation) = self.receivers(of: call)
        }
        return await send(call, to: receivers)
    }

    /// Sends `call` to `receivers` and waits for its outcome; at its deadline a timer
    /// abandons it (and the receivers still holding it get `cancel`).
    private func send(_ call: OutgoingCall, to receivers: [ClientConnection]) async -> CallResult {
        // Environments that should answer and have nobody connected: a "not found" without
        // them is not an answer.
        let missing = call.target.environment == nil ? self.answeringEnvironments.subtracting(receivers.map(\.identity.environment)) : []
        let message = GatewayMessage.request(.with {
            $0.requestID = call.requestID
            $0.method = call.method
            $0.payload = call.payload
            $0.attempt = call.attempt
            $0.deadline = .init(date: Date() + (call.deadline - ContinuousClock.now).secondsValue)
        })
        let deadline = Mutex<DeadlineTimers.Timer?>(nil)
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let pending = CallTable.Pending(method: call.method, receivers: receivers, missingEnvironments: missing, continuation: continuation)
                guard table.withLock({ $0.start(call.requestID, pending) }) else {
                    continuation.resume(returning: CallResult(
                        outcome: .failed,
                        error: "request id '\(call.requestID)' is already in flight; use a new id or wait for it to finish",
                        retryable: false
                    ))
                    return
                }
                // Armed once the call is in the table, so a deadline that has passed already
                // finds it there.
                deadline.withLock { $0 = DeadlineTimers.shared.schedule(at: call.deadline) { self.abandon(call) } }
                for receiver in receivers { receiver.requestStarted() }
                for receiver in receivers where !receiver.send(message) {
                    perform(table.withLock {
                        $0.receiverFailed(call.requestID, receiver, reason: "unavailable: its send queue is full or its stream ended")
                    })
                }
                // Cancelled before the call was in the table: the handler found nothing to abandon.
                if Task.isCancelled { abandon(call) }
            }
        } onCancel: {
            abandon(call)
        }
        _ = deadline.withLock { $0?.cancel() }
        return result
    }

    private static let interrupted = CallResult(
        outcome: .interrupted, error: "the gateway is shutting down before the call ended"
    )

    /// Ends every call still in flight as ``CallResult/Outcome/interrupted`` (their receivers
    /// get `cancel`); returns how many there were. For the end of a shutdown's grace period.
    @discardableResult
    package func interruptAll() -> Int {
        let effects = table.withLock { table in
            var effects = CallTable.Effects()
            for requestID in table.requestIDs {
                effects.merge(table.abandon(requestID, outcome: .interrupted, reason: "the gateway is shutting down"))
            }
            // Shutting down: the receivers hear now, not after the grace.
            let held = table.takeDueCancels(now: .now, all: true)
            effects.cancel += held.cancel
            effects.sweepAt = nil
            return effects
        }
        perform(effects)
        return effects.completions.count
    }

    private func stoppedWaiting(_ call: OutgoingCall) -> CallResult.Outcome {
        ContinuousClock.now >= call.deadline ? .deadlineExceeded : .failed
    }

    private func abandon(_ call: OutgoingCall) {
        let outcome = stoppedWaiting(call)
        let reason = outcome == .deadlineExceeded
            ? "deadline exceeded" : "cancelled by the caller"
        perform(table.withLock { $0.abandon(call.requestID, outcome: outcome, reason: reason) })
    }

    /// Routes a receiver's response to its call.
    package func deliver(_ response: GatewayResponse, from connection: ClientConnection) {
        let answer = classify(response)
        if case .refused(let reason) = answer {
            refusedAnswers.record(peer: connection.name, what: "request \(Printable.escaped(response.requestID, limit: 64))", why: reason)
        }
        let (effects, accepted) = table.withLock {
            $0.answer(response.requestID, from: connection, answer, payload: response.payload)
        }
        if !accepted {
            logger.debug(
                "ignored a response for a request id that is not in flight on this stream",
                metadata: ["request_id": "\(response.requestID)", "instance": "\(connection.identity.instanceID)"]
            )
        }
        perform(effects)
    }

    private func classify(_ response: GatewayResponse) -> Answer {
        let method = table.withLock { $0.method(of: response.requestID) }
        guard let method else { return .notFound }
        return rules.classify(response, method: method)
    }

    /// A stream ended: its outstanding requests fail for it now, not at their deadline.
    package func connectionClosed(_ connection: ClientConnection, reason: String) {
        perform(table.withLock { $0.connectionClosed(connection, reason: reason) })
    }

    private func perform(_ effects: CallTable.Effects) {
        for connection in effects.released { connection.requestEnded() }
        for (requestID, connection) in effects.cancel { _ = connection.send(.cancel(requestID: requestID)) }
        if let sweepAt = effects.sweepAt {
            _ = DeadlineTimers.shared.schedule(at: sweepAt) { [weak self] in
                guard let self else { return }
                perform(table.withLock { $0.takeDueCancels(now: .now) })
            }
        }
        for (continuation, result) in effects.completions { continuation.resume(returning: result) }
        if !effects.completions.isEmpty, pendingCount == 0 {
            for waiter in idleWaiters.withLock({ waiters in defer { waiters = [] }; return waiters }) { waiter.resume() }
        }
    }

    /// Returns when no call is in flight, or after `timeout`.
    package func waitUntilIdle(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let idle = self.table.withLock { table in
                        // Checked and queued under the table's lock, so a completion in between cannot be missed.
                        if table.count == 0 { return true }
                        self.idleWaiters.withLock { $0.append(continuation) }
                        return false
                    }
                    if idle { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
            // The idle waiter is not cancellable; release it so the group can finish.
            for waiter in self.idleWaiters.withLock({ waiters in defer { waiters = [] }; return waiters }) { waiter.resume() }
        }
    }
}
