import AsyncPrimitives
import Foundation
import GatewayProtocol
import Logging
import SwiftProtobuf
import Telemetry
import TextFormats

extension Worker {
    /// Runs the handler under the request's deadline and hands the answer to `answer` as
    /// soon as the handler, the deadline or a `cancel` decides (a cancelled request gets
    /// none); returns once the handler has unwound. Final answers go into the response cache
    /// first, so a repeat of the request id is answered from there.
    func execute(_ request: GatewayRequest, ending: FirstOutcome<RequestEnding>, answer: @escaping @Sendable (GatewayResponse) -> Void) async {
        guard let handler = handlers.handler(for: request.method) else {
            answer(.failure(requestID: request.requestID, code: .unimplemented, error: "method '\(request.method.prefix(128))' is not implemented by this worker"))
            return
        }
        let context = HandlerContext(
            requestID: request.requestID, method: request.method,
            attempt: max(request.attempt, 1), environment: configuration.environment
        )
        let started = ContinuousClock.now
        logger.debug("handler started", metadata: [
            "request_id": "\(request.requestID)", "method": "\(request.method)", "attempt": "\(request.attempt)",
        ])
        // The handler runs in a child task; the deadline is a timer and `cancel` a callback,
        // both deciding the same one-shot end, so a request costs one task and no task group.
        // Leaving the scope with the handler still running cancels it and waits for it.
        let deadline = DeadlineTimers.shared.schedule(at: self.deadline(of: request)) { ending.decide(.deadline) }
        async let handled = ending.decide(await Self.run(handler, request, context))
        let response: GatewayResponse?
        var handlerEnded = false
        switch await ending.wait() {
        case .answered(let answer):
            response = answer
            handlerEnded = true
        case .deadline:
            response = .failure(requestID: request.requestID, code: .deadlineExceeded, error: "the handler did not finish before the request's deadline")
        case .cancelled: response = nil
        }
        deadline.cancel()
        if let response {
            responses.store(response)
            answer(response)
            if let metrics {
                metrics.increment(Metric.workerRequests, request.method, response.code.isEmpty ? "ok" : response.code)
                metrics.record(Metric.workerRequestDuration, request.method, duration: ContinuousClock.now - started)
            }
        }
        let outcome = response.map { $0.code } ?? "cancelled"
        logger.info("request handled", metadata: [
            "message_id": "\(LogEventID.requestHandled)",
            "request_id": .string(request.requestID), "method": .string(request.method),
            "environment": .string(configuration.environment), "instance": .string(configuration.instanceID),
            "attempt": "\(request.attempt)", "outcome": .string(outcome), "code": .string(outcome),
            "duration_us": "\((ContinuousClock.now - started).wholeMicroseconds)",
        ])
        // A handler that answered has returned; any other is cancelled by the scope's end.
        if handlerEnded { _ = await handled }
    }

    /// The handler's end: its answer, or `cancelled` when it stopped for a cancellation.
    private static func run(_ handler: RegisteredHandler, _ request: GatewayRequest, _ context: HandlerContext) async -> RequestEnding {
        do {
            let payload = try await handler.run(request.payload, context)
            return .answered(.success(requestID: request.requestID, payload: payload))
        } catch let error as HandlerError {
            return .answered(.failure(requestID: request.requestID, code: error.code, error: error.message))
        } catch is CancellationError {
            return .cancelled
        } catch {
            return .answered(.failure(requestID: request.requestID, code: .internal, error: "\(error)"))
        }
    }

    private func deadline(of request: GatewayRequest) -> ContinuousClock.Instant {
        guard request.hasDeadline else { return .now + configuration.defaultRequestTimeout }
        let remaining = request.deadline.date.timeIntervalSinceNow
        // A deadline far in the future (or a skewed clock) is capped at the default.
        let seconds = min(max(remaining, 0), configuration.defaultRequestTimeout.secondsValue)
        return .now + .milliseconds(Int64(seconds * 1000))
    }

}
