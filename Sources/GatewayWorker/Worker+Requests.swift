import AsyncPrimitives
import Foundation
import GatewayProtocol
import Logging
import SwiftProtobuf
import Telemetry
import TextFormats

extension Worker {
    /// Runs the handler under the request's deadline, in the run's own task. The first of
    /// the handler's answer, the deadline (answered from the timer, the handler then
    /// cancelled) and the gateway's `cancel` decides the run's one ending; returns once the
    /// handler has unwound.
    func execute(_ request: GatewayRequest, _ run: RequestRun) async {
        let started = ContinuousClock.now
        guard let handler = handlers.handler(for: request.method) else {
            let failure = GatewayResponse.failure(requestID: request.requestID, code: .unimplemented, error: "method '\(request.method.prefix(128))' is not implemented by this worker")
            conclude(request, run.end(.answered(failure)).standing, started: started)
            return
        }
        let context = handlerContext(request)
        logger.debug("handler started", metadata: [
            "request_id": "\(request.requestID)", "method": "\(request.method)", "attempt": "\(request.attempt)",
        ])
        // A timer, not a task: the answer goes out when the deadline passes, whatever the
        // handler is doing, and the handler is cancelled.
        let deadline = DeadlineTimers.shared.schedule(at: self.deadline(of: request)) {
            let failure = GatewayResponse.failure(requestID: request.requestID, code: .deadlineExceeded, error: "the handler did not finish before the request's deadline")
            let decided = run.end(.answered(failure), cancellingHandler: true)
            guard decided.won else { return }
            self.conclude(request, decided.standing, started: started)
        }
        let ending = await Self.run(handler, request, context)
        deadline.cancel()
        let decided = run.end(ending)
        // A deadline concluded from its timer; a `cancel` (or a shutdown) is concluded here,
        // once the handler it cancelled has unwound.
        switch (decided.won, decided.standing) {
        case (true, _), (false, .cancelled): conclude(request, decided.standing, started: started)
        case (false, .answered): break
        }
    }

    /// Answers `request` at once, on the calling thread (the stream's event loop), when its
    /// handler can (``InstantMethodHandler``) and its deadline has not passed: true when it
    /// did, and the run is ended and concluded. False leaves the run to ``execute(_:_:)``.
    func answerAtOnce(_ request: GatewayRequest, _ run: RequestRun) -> Bool {
        guard let runAtOnce = handlers.handler(for: request.method)?.runAtOnce else { return false }
        // A deadline that has passed is answered by the ordinary path's timer.
        if request.hasDeadline && request.deadline.date.timeIntervalSinceNow <= 0 { return false }
        let started = ContinuousClock.now
        let ending: RequestExecutions.Ending
        do {
            guard let payload = try runAtOnce(request.payload, handlerContext(request)) else { return false }
            ending = .answered(.success(requestID: request.requestID, payload: payload))
        } catch {
            ending = .answered(Self.failure(request, error))
        }
        // Logged once it answered: a handler that would have waited runs again in a task,
        // which logs its own start (one line per run of the handler that counts).
        logger.debug("handler started", metadata: [
            "request_id": "\(request.requestID)", "method": "\(request.method)", "attempt": "\(request.attempt)", "at_once": "true",
        ])
        let decided = run.end(ending)
        // Lost only to a `cancel` from another stream, which nothing concluded yet.
        conclude(request, decided.standing, started: started)
        return true
    }

    private func handlerContext(_ request: GatewayRequest) -> HandlerContext {
        HandlerContext(requestID: request.requestID, method: request.method, attempt: max(request.attempt, 1), environment: configuration.environment)
    }

    /// Counts and logs a run's ending, once: by the one that decided it.
    private func conclude(_ request: GatewayRequest, _ ending: RequestExecutions.Ending, started: ContinuousClock.Instant) {
        let outcome: String
        switch ending {
        case .answered(let response):
            outcome = response.code
            requestMetrics?.record(request.method, outcome: response.code.isEmpty ? "ok" : response.code, duration: ContinuousClock.now - started)
        case .cancelled:
            outcome = "cancelled"
        }
        logger.info("request handled", metadata: [
            "message_id": .string(LogEventID.requestHandled),
            "request_id": .string(request.requestID), "method": .string(request.method),
            "environment": .string(configuration.environment), "instance": .string(configuration.instanceID),
            "attempt": "\(request.attempt)", "outcome": .string(outcome), "code": .string(outcome),
            "duration_us": "\((ContinuousClock.now - started).wholeMicroseconds)",
        ])
    }

    /// The handler's end: its answer, or `cancelled` when it stopped for a cancellation.
    private static func run(_ handler: RegisteredHandler, _ request: GatewayRequest, _ context: HandlerContext) async -> RequestExecutions.Ending {
        do {
            let payload = try await handler.run(request.payload, context)
            return .answered(.success(requestID: request.requestID, payload: payload))
        } catch is CancellationError {
            return .cancelled
        } catch {
            return .answered(failure(request, error))
        }
    }

    /// A handler's error as its answer: a ``HandlerError``'s code, `internal` for any other.
    private static func failure(_ request: GatewayRequest, _ error: any Error) -> GatewayResponse {
        guard let error = error as? HandlerError else {
            return .failure(requestID: request.requestID, code: .internal, error: "\(error)")
        }
        return .failure(requestID: request.requestID, code: error.code, error: error.message)
    }

    private func deadline(of request: GatewayRequest) -> ContinuousClock.Instant {
        guard request.hasDeadline else { return .now + configuration.defaultRequestTimeout }
        let remaining = request.deadline.date.timeIntervalSinceNow
        // A deadline far in the future (or a skewed clock) is capped at the default.
        let seconds = min(max(remaining, 0), configuration.defaultRequestTimeout.secondsValue)
        return .now + .milliseconds(Int64(seconds * 1000))
    }

}
