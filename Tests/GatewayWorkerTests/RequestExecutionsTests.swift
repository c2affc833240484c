import AsyncPrimitives
import Foundation
import GatewayProtocol
@testable import GatewayWorker
import Logging
import SwiftProtobuf
import Synchronization
import Testing

/// A request's run in the worker, without a gateway: answered at once by an instant handler or
/// one task per run, and one ending decided by the first of the handler, the deadline and the
/// gateway's `cancel`.
@Suite("Request runs", .timeLimit(.minutes(5)))
struct RequestExecutionsTests {
    @Test("a repeat of a running request id joins its run: the handler runs once and both streams get its answer")
    func repeatJoins() async throws {
        let probe = HandlerProbe()
        let worker = Self.worker { _ in
            probe.began()
            await probe.gate.wait()
            return Data("ok".utf8)
        }
        let first = MessageQueue<GatewayMessage>(capacity: 16), second = MessageQueue<GatewayMessage>(capacity: 16)
        #expect(Self.start(worker, Self.request("r-1"), first))
        #expect(!Self.start(worker, Self.request("r-1"), second), "a second stream's copy joins the run")
        probe.gate.decide(())
        for queue in [first, second] {
            let answer = try #require(await Self.nextResponse(queue))
            #expect(answer.requestID == "r-1" && answer.responseCode == .ok && answer.payload == Data("ok".utf8), "\(answer)")
        }
        #expect(await eventually { worker.executions.count == 0 })
        #expect(probe.calls == 1, "the handler ran once for the id")
    }

    @Test("the deadline is answered from its timer while a handler deaf to cancellation still runs; the handler is cancelled and its late answer is not sent")
    func deadlineAnswersFromTheTimer() async throws {
        let probe = HandlerProbe()
        let worker = Self.worker { _ in
            probe.began()
            await probe.gate.wait()
            probe.sawCancellation.withLock { $0 = Task.isCancelled }
            return Data("late".utf8)
        }
        let queue = MessageQueue<GatewayMessage>(capacity: 16)
        #expect(Self.start(worker, Self.request("r-late", deadlineSeconds: 0.2), queue))
        let answer = try #require(await Self.nextResponse(queue))
        #expect(answer.responseCode == .deadlineExceeded, "\(answer)")
        #expect(worker.executions.count == 1, "the handler has not returned yet")
        probe.gate.decide(())
        #expect(await eventually { worker.executions.count == 0 })
        #expect(probe.sawCancellation.withLock { $0 }, "the handler was cancelled once its deadline was answered")
        queue.finish()
        #expect(await queue.nextBatch() == nil, "nothing after the deadline's answer")
    }

    @Test("a cancel from one of two streams waiting leaves the run going for the other; a cancel from the last ends it without an answer and cancels the handler")
    func cancelFromTheLastStreamEndsTheRun() async throws {
        let probe = HandlerProbe()
        let worker = Self.worker { payload in
            probe.began()
            if payload == Data("wait-for-gate".utf8) {
                await probe.gate.wait()
                return Data(Task.isCancelled ? "cancelled".utf8 : "ok".utf8)
            }
            try await Task.sleep(for: .seconds(60))
            return Data("slept".utf8)
        }
        let first = MessageQueue<GatewayMessage>(capacity: 16), second = MessageQueue<GatewayMessage>(capacity: 16)
        Self.start(worker, Self.request("r-shared", payload: "wait-for-gate"), first)
        Self.start(worker, Self.request("r-shared", payload: "wait-for-gate"), second)
        worker.executions.cancel("r-shared", replyTo: first)
        probe.gate.decide(())
        let answer = try #require(await Self.nextResponse(second))
        #expect(answer.payload == Data("ok".utf8), "the stream still waiting got the answer of a handler that was not cancelled")
        #expect(await eventually { worker.executions.count == 0 })
        first.finish()
        #expect(await first.nextBatch() == nil, "the stream that cancelled gets nothing")

        let only = MessageQueue<GatewayMessage>(capacity: 16)
        Self.start(worker, Self.request("r-alone"), only)
        #expect(await eventually { probe.calls == 2 })
        worker.executions.cancel("r-alone", replyTo: only)
        #expect(await eventually { worker.executions.count == 0 }, "the handler's 60 s sleep was cancelled")
        only.finish()
        #expect(await only.nextBatch() == nil, "a cancelled run sends no answer")
    }

    @Test("the worker's shutdown cancels every run and returns once each has unwound; nothing starts after it")
    func shutdownCancelsAndWaits() async throws {
        let unwound = Mutex(0)
        let worker = Self.worker { _ in
            defer { unwound.withLock { $0 += 1 } }
            try await Task.sleep(for: .seconds(60))
            return Data()
        }
        let queue = MessageQueue<GatewayMessage>(capacity: 16)
        for index in 0..<3 { Self.start(worker, Self.request("r-\(index)"), queue) }
        let runner = Task { await worker.executions.run() }
        runner.cancel()
        await runner.value
        #expect(unwound.withLock { $0 } == 3, "run() returned before its runs unwound")
        #expect(worker.executions.count == 0)
        Self.start(worker, Self.request("r-after"), queue)
        #expect(worker.executions.count == 0, "a request after shutdown is not started")
        queue.finish()
        #expect(await queue.nextBatch() == nil, "cancelled runs send no answers")
    }

    @Test("an instant handler answers on the reader's thread: the answer is queued and cached before start returns, and no task runs the request")
    func instantHandlerAnswersAtOnce() async throws {
        let probe = HandlerProbe()
        let worker = Self.instantWorker(atOnce: { payload in
            probe.began()
            return payload == Data("miss".utf8) ? nil : Data("at once".utf8)
        }, handle: { _ in Data("in a task".utf8) })
        let queue = MessageQueue<GatewayMessage>(capacity: 16)
        #expect(Self.start(worker, Self.request("r-now"), queue))
        let answer = try #require(queue.takeBatch()?.first?.response, "queued before start returned")
        #expect(answer.requestID == "r-now" && answer.payload == Data("at once".utf8), "\(answer)")
        #expect(worker.executions.count == 0, "the run ended inside start")
        #expect(worker.responses.response(for: "r-now")?.payload == Data("at once".utf8), "a repeat is answered from the cache")
        #expect(probe.calls == 1)

        #expect(Self.start(worker, Self.request("r-later", payload: "miss"), queue))
        let later = try #require(await Self.nextResponse(queue))
        #expect(later.payload == Data("in a task".utf8), "a handler that would wait is run by handle(_:context:) in a task")
        #expect(await eventually { worker.executions.count == 0 })
    }

    @Test("an instant handler that says it never answers at once (a database across the network) is not asked: its request goes straight to a task")
    func handlerThatNeverAnswersAtOnceIsNotAsked() async throws {
        let probe = HandlerProbe()
        let worker = Self.instantWorker(atOnce: { _ in
            probe.began()
            return nil
        }, answersAtOnce: false, handle: { _ in Data("in a task".utf8) })
        let queue = MessageQueue<GatewayMessage>(capacity: 16)
        #expect(Self.start(worker, Self.request("r-remote"), queue))
        let answer = try #require(await Self.nextResponse(queue))
        #expect(answer.payload == Data("in a task".utf8))
        #expect(probe.calls == 0, "handleAtOnce was asked")
    }

    @Test("a repeat that arrives on another stream while the handler answers at once joins the run: the handler runs once and both streams get the answer")
    func repeatDuringAnAnswerAtOnceJoins() async throws {
        let second = MessageQueue<GatewayMessage>(capacity: 16)
        let joined = Mutex<Bool?>(nil)
        let calls = Mutex(0)
        let box = Mutex<Worker?>(nil)
        let worker = Self.instantWorker(atOnce: { _ in
            calls.withLock { $0 += 1 }
            // The other stream's copy, read while this one is being answered.
            let worker = box.withLock { $0 }!
            joined.withLock { $0 = !Self.start(worker, Self.request("r-twice"), second) }
            return Data("once".utf8)
        }, handle: { _ in Data("in a task".utf8) })
        box.withLock { $0 = worker }
        let first = MessageQueue<GatewayMessage>(capacity: 16)
        #expect(Self.start(worker, Self.request("r-twice"), first))
        #expect(joined.withLock { $0 } == true, "the copy joined the run instead of starting the handler")
        #expect(calls.withLock { $0 } == 1)
        for queue in [first, second] {
            #expect(queue.takeBatch()?.first?.response.payload == Data("once".utf8))
        }
    }

    @Test("an instant handler's error is the answer at once, with its code; a request whose deadline has passed is left to the deadline's timer")
    func instantHandlerErrorsAndLateRequests() async throws {
        let worker = Self.instantWorker(atOnce: { _ in throw HandlerError.notFound("no such lease") }, handle: { _ in
            try await Task.sleep(for: .seconds(60))
            return Data()
        })
        let queue = MessageQueue<GatewayMessage>(capacity: 16)
        Self.start(worker, Self.request("r-missing"), queue)
        let answer = try #require(queue.takeBatch()?.first?.response)
        #expect(answer.responseCode == .notFound && answer.error == "no such lease", "\(answer)")

        Self.start(worker, Self.request("r-expired", deadlineSeconds: -1), queue)
        let expired = try #require(await Self.nextResponse(queue))
        #expect(expired.responseCode == .deadlineExceeded, "\(expired)")
        #expect(await eventually { worker.executions.count == 0 }, "the handler's sleep was cancelled")
    }

    // MARK: - Helpers

    /// What a test's handler did, and a gate it waits on whatever cancellation says.
    final class HandlerProbe: Sendable {
        let gate = FirstOutcome<Void>()
        let sawCancellation = Mutex(false)
        private let count = Mutex(0)
        var calls: Int { count.withLock { $0 } }
        func began() { count.withLock { $0 += 1 } }
    }

    struct PingHandler: MethodHandler {
        let body: @Sendable (Data) async throws -> Data
        func handle(_ request: Data, context: HandlerContext) async throws -> Data { try await body(request) }
    }

    struct InstantPingHandler: InstantMethodHandler {
        let atOnce: @Sendable (Data) throws -> Data?
        let body: @Sendable (Data) async throws -> Data
        var answersAtOnce = true
        func handleAtOnce(_ request: Data, context: HandlerContext) throws -> Data? { try atOnce(request) }
        func handle(_ request: Data, context: HandlerContext) async throws -> Data { try await body(request) }
    }

    static func worker(_ body: @escaping @Sendable (Data) async throws -> Data) -> Worker {
        var handlers = HandlerRegistry()
        handlers.register(RequestMethods.ping, PingHandler(body: body))
        return worker(handlers)
    }

    static func instantWorker(atOnce: @escaping @Sendable (Data) throws -> Data?, answersAtOnce: Bool = true, handle: @escaping @Sendable (Data) async throws -> Data) -> Worker {
        var handlers = HandlerRegistry()
        handlers.register(RequestMethods.ping, InstantPingHandler(atOnce: atOnce, body: handle, answersAtOnce: answersAtOnce))
        return worker(handlers)
    }

    static func worker(_ handlers: HandlerRegistry) -> Worker {
        let configuration = Worker.Configuration(endpoints: [], apiSecret: "secret", instanceID: "worker-test", environment: "test")
        return Worker(configuration: configuration, handlers: handlers, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    static func request(_ id: String, payload: String = "", deadlineSeconds: Double? = nil) -> GatewayRequest {
        .with {
            $0.requestID = id
            $0.method = RequestMethods.ping.name
            $0.payload = Data(payload.utf8)
            if let deadlineSeconds { $0.deadline = Google_Protobuf_Timestamp(date: Date() + deadlineSeconds) }
        }
    }

    /// Starts `request` as the worker's stream reader does.
    @discardableResult
    static func start(_ worker: Worker, _ request: GatewayRequest, _ queue: MessageQueue<GatewayMessage>) -> Bool {
        worker.executions.start(request, replyTo: queue, answerAtOnce: { worker.answerAtOnce($0, $1) }) { request, run in
            await worker.execute(request, run)
        }
    }

    static func nextResponse(_ queue: MessageQueue<GatewayMessage>) async -> GatewayResponse? {
        await queue.nextBatch()?.first { $0.messageType == .response }?.response
    }

    func eventually(_ condition: @Sendable () -> Bool) async -> Bool {
        for _ in 0..<5_000 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return condition()
    }
}
