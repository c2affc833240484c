import AsyncPrimitives
import Foundation
import GatewayProtocol
@testable import GatewayServer
import Logging
import SwiftProtobuf
import Testing

@Suite("Call fan-out")
struct CallRouterTests {
    let clients = ConnectedClients()
    let router: CallRouter

    init() {
        router = CallRouter(clients: clients, logger: Logger(label: "test"))
    }

    func call(_ id: String, timeout: Duration = .seconds(30), target: CallTarget = .all) -> OutgoingCall {
        OutgoingCall(
            requestID: id, method: RequestMethods.findVPSByLease.name,
            payload: try! FindVPSByLeaseRequest.with { $0.mac = "52:54:00:00:00:01" }.serializedBytes(),
            target: target, deadline: .now + timeout
        )
    }

    func found(_ id: String, vps: String) -> GatewayResponse {
        .success(requestID: id, payload: try! FindVPSByLeaseResponse.with { $0.vpsID = vps }.serializedBytes())
    }

    /// A router that holds cancels for an hour, with `a` (production) and `b` (beta)
    /// registered, after a call `requestID` that `a` answered: b's cancel is held.
    func callAnsweredByA(_ requestID: String) async -> (router: CallRouter, a: FakeClient, b: FakeClient) {
        let router = CallRouter(clients: clients, cancelGrace: .seconds(3600), logger: Logger(label: "test"))
        let a = FakeClient("a"), b = FakeClient("b", environment: "beta")
        for client in [a, b] { _ = clients.register(client.connection) }
        async let result = router.call(call(requestID))
        for client in [a, b] { #expect(await client.next()?.messageType == .request) }
        router.deliver(found(requestID, vps: "vps-a"), from: a.connection)
        #expect(await result.outcome == .ok)
        #expect(router.heldCancelCount == 1, "b's cancel is held")
        return (router, a, b)
    }

    @Test("the first valid answer wins and every other receiver gets cancel")
    func firstValidAnswerWins() async throws {
        let a = FakeClient("a"), b = FakeClient("b", environment: "beta"), c = FakeClient("c", environment: "dev")
        for client in [a, b, c] { _ = clients.register(client.connection) }
        async let result = router.call(call("r1"))
        for client in [a, b, c] { #expect(await client.next()?.messageType == .request) }
        router.deliver(.failure(requestID: "r1", code: .notFound, error: "no"), from: a.connection)
        router.deliver(found("r1", vps: "vps-b"), from: b.connection)
        let outcome = await result
        #expect(outcome.outcome == .ok)
        #expect(outcome.responder?.instanceID == "b")
        let cancel = await c.next()
        #expect(cancel?.messageType == .cancel)
        #expect(cancel?.request.requestID == "r1")
        #expect(router.pendingCount == 0)
        #expect([a, b, c].allSatisfy { $0.connection.inFlightCount == 0 })
    }

    @Test("a receiver that answers after the call ended, within the cancel grace, gets no cancel; one still silent gets its cancel")
    func answerWithinGraceNeedsNoCancel() async {
        // A grace no test run reaches: only interruptAll sends the held cancels.
        let router = CallRouter(clients: clients, cancelGrace: .seconds(3600), logger: Logger(label: "test"))
        let a = FakeClient("a"), b = FakeClient("b", environment: "beta"), c = FakeClient("c", environment: "dev")
        for client in [a, b, c] { _ = clients.register(client.connection) }
        async let result = router.call(call("r20"))
        for client in [a, b, c] { #expect(await client.next()?.messageType == .request) }
        router.deliver(found("r20", vps: "vps-a"), from: a.connection)
        #expect(await result.outcome == .ok)
        #expect(router.heldCancelCount == 2, "b and c still hold the request")
        router.deliver(.failure(requestID: "r20", code: .notFound, error: "no"), from: b.connection)
        #expect(router.heldCancelCount == 1, "b answered: its cancel is dropped")
        #expect(router.interruptAll() == 0)
        let cancel = await c.next()
        #expect(cancel?.messageType == .cancel && cancel?.request.requestID == "r20")
        #expect(b.sent.takeBatch() == nil, "b answered and still got a cancel")
        #expect(router.heldCancelCount == 0)
        #expect([a, b, c].allSatisfy { $0.connection.inFlightCount == 0 })
    }

    @Test("a held cancel is dropped when the same request id goes out again, so the new attempt is not cancelled")
    func heldCancelDroppedByARetry() async {
        let (router, a, b) = await callAnsweredByA("r22")
        async let second = router.call(call("r22"))
        for client in [a, b] { #expect(await client.next()?.messageType == .request) }
        #expect(router.heldCancelCount == 0, "the retry dropped the held cancel")
        router.deliver(found("r22", vps: "vps-b"), from: b.connection)
        #expect(await second.outcome == .ok)
        #expect(router.interruptAll() == 0)
        let cancel = await a.next()
        #expect(cancel?.messageType == .cancel, "a, still holding the second attempt, gets its cancel")
        #expect(b.sent.takeBatch() == nil, "b got a cancel for the attempt it answered")
    }

    @Test("a held cancel for a stream that closes is dropped, not sent")
    func heldCancelOfClosedStreamIsDropped() async {
        let (router, _, b) = await callAnsweredByA("r21")
        router.connectionClosed(b.connection, reason: "stream closed")
        #expect(router.heldCancelCount == 0)
    }

    @Test("when everyone answers not found the outcome is not_found, naming them")
    func everyoneNotFound() async {
        let a = FakeClient("a"), b = FakeClient("b")
        for client in [a, b] { _ = clients.register(client.connection) }
        async let result = router.call(call("r2"))
        _ = await a.next(); _ = await b.next()
        router.deliver(.failure(requestID: "r2", code: .notFound, error: ""), from: a.connection)
        // An old peer's miss: success with an empty vps_id.
        router.deliver(.with { $0.requestID = "r2"; $0.success = true }, from: b.connection)
        let outcome = await result
        #expect(outcome.outcome == .notFound)
        #expect(outcome.error.contains("production/a") && outcome.error.contains("production/b"))
    }

    @Test("a failure next to not-found answers makes the call failed, since the failing one might have had it")
    func failureBeatsNotFound() async {
        let a = FakeClient("a"), b = FakeClient("b")
        for client in [a, b] { _ = clients.register(client.connection) }
        async let result = router.call(call("r3"))
        _ = await a.next(); _ = await b.next()
        router.deliver(.failure(requestID: "r3", code: .notFound, error: ""), from: a.connection)
        router.deliver(.failure(requestID: "r3", code: .internal, error: "database locked"), from: b.connection)
        let outcome = await result
        #expect(outcome.outcome == .failed)
        #expect(outcome.error.contains("database locked"))
    }

    @Test("a stream that closes fails its requests for that receiver at once")
    func closedStreamFailsAtOnce() async {
        let a = FakeClient("a")
        _ = clients.register(a.connection)
        let started = ContinuousClock.now
        async let result = router.call(call("r4", timeout: .seconds(60)))
        _ = await a.next()
        router.connectionClosed(a.connection, reason: "unavailable: stream closed")
        let outcome = await result
        #expect(outcome.outcome == .failed)
        #expect(outcome.error.contains("stream closed"))
        #expect(ContinuousClock.now - started < .seconds(30))
    }

    @Test("no answer by the deadline is deadline_exceeded, and the silent receiver gets cancel")
    func deadline() async {
        let a = FakeClient("a")
        _ = clients.register(a.connection)
        let outcome = await router.call(call("r5", timeout: .milliseconds(100)))
        #expect(outcome.outcome == .deadlineExceeded)
        #expect(await a.next()?.messageType == .request)
        #expect(await a.next()?.messageType == .cancel)
        #expect(a.connection.inFlightCount == 0)
    }

    @Test("with no receiver the call waits until one registers")
    func waitsForReceiver() async {
        let a = FakeClient("late")
        async let result = router.call(call("r6"))
        try? await Task.sleep(for: .milliseconds(50))
        _ = clients.register(a.connection)
        _ = await a.next()
        router.deliver(found("r6", vps: "vps-late"), from: a.connection)
        #expect(await result.outcome == .ok)
    }

    @Test("with no receiver until the deadline the outcome is no_receivers")
    func noReceivers() async {
        let outcome = await router.call(call("r7", timeout: .milliseconds(100)))
        #expect(outcome.outcome == .noReceivers)
    }

    @Test("a full send queue fails that receiver at once instead of blocking")
    func fullQueue() async {
        let stuck = FakeClient("stuck", queue: 1)
        _ = clients.register(stuck.connection)
        #expect(stuck.connection.send(.heartbeat()))  // fills the queue of one
        let outcome = await router.call(call("r8", timeout: .seconds(5)))
        #expect(outcome.outcome == .failed)
        #expect(outcome.error.contains("send queue is full"))
    }

    @Test("a second call with a request id that is in flight is refused")
    func duplicateRequestID() async {
        let a = FakeClient("a")
        _ = clients.register(a.connection)
        async let first = router.call(call("same", timeout: .seconds(5)))
        _ = await a.next()
        let second = await router.call(call("same", timeout: .seconds(5)))
        #expect(second.outcome == .failed)
        #expect(second.error.contains("already in flight"))
        router.deliver(found("same", vps: "v"), from: a.connection)
        #expect(await first.outcome == .ok)
    }

    @Test("a response from a receiver that was not asked is ignored")
    func foreignResponse() async {
        let a = FakeClient("a"), outsider = FakeClient("outsider", environment: "beta")
        _ = clients.register(a.connection)
        async let result = router.call(call("r9", timeout: .milliseconds(300), target: CallTarget(environment: "production")))
        _ = await a.next()
        router.deliver(found("r9", vps: "forged"), from: outsider.connection)
        #expect(await result.outcome == .deadlineExceeded)
    }

    @Test("a receiver that answers deadline_exceeded makes the call deadline_exceeded, not failed")
    func receiverDeadline() async {
        let a = FakeClient("a"), b = FakeClient("b")
        for client in [a, b] { _ = clients.register(client.connection) }
        async let result = router.call(call("r10"))
        _ = await a.next(); _ = await b.next()
        router.deliver(.failure(requestID: "r10", code: .notFound, error: ""), from: a.connection)
        router.deliver(.failure(requestID: "r10", code: .deadlineExceeded, error: "handler ran past the deadline"), from: b.connection)
        let outcome = await result
        #expect(outcome.outcome == .deadlineExceeded)
        #expect(outcome.error.contains("deadline exceeded at production/b"))
        #expect(outcome.error.contains("not found by production/a"))
    }

    @Test("closing the registry hands a call waiting for a receiver back as interrupted and refuses new registrations")
    func closeInterruptsWaitingCalls() async {
        let started = ContinuousClock.now
        async let result = router.call(call("r11", timeout: .seconds(60)))
        // The call may start waiting before or after the close; both end the same way.
        clients.close()
        let outcome = await result
        #expect(outcome.outcome == .interrupted)
        #expect(outcome.receivers == 0)
        #expect(ContinuousClock.now - started < .seconds(30))
        let late = FakeClient("late")
        guard case .refused = clients.register(late.connection) else {
            Issue.record("a registration after close must be refused")
            return
        }
        #expect(clients.count == 0)
        #expect(await router.call(call("r12", timeout: .seconds(60))).outcome == .interrupted)
    }

    @Test("interruptAll ends the calls in flight as interrupted and sends their receivers cancel")
    func interruptAll() async {
        let a = FakeClient("a")
        _ = clients.register(a.connection)
        async let result = router.call(call("r13", timeout: .seconds(60)))
        #expect(await a.next()?.messageType == .request)
        #expect(router.interruptAll() == 1)
        let outcome = await result
        #expect(outcome.outcome == .interrupted)
        #expect(await a.next()?.messageType == .cancel)
        #expect(router.pendingCount == 0)
        #expect(a.connection.inFlightCount == 0)
    }
}
