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
    func execute(_ request: GatewayRequest, cancel: CancelSignal, answer: @escaping @Sendable (GatewayResponse) -> Void) async {
        enum Ending: Sendable { case answered(GatewayResponse), deadline, cancelled }
        guard let handler = handlers.handler(for: request.method) else {
            answer(.failure(requestID: request.requestID, code: .unimplemented, error: "method '\(request.method.prefix(128))' is not implemented by this worker"))
            return
        }
        let deadline = self.deadline(of: request)
        let context = HandlerContext(
            requestID: request.requestID, method: request.method,
            attempt: max(request.attempt, 1), environment: configuration.environment
        )
        let started = ContinuousClock.now
        logger.debug("handler started", metadata: [
            "request_id": "\(request.requestID)", "method": "\(request.method)", "attempt": "\(request.attempt)",
        ])
        await withTaskGroup(of: Ending.self) { group in
            group.addTask {
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
            group.addTask {
                _ = await waitUntil(deadline)
                return .deadline
            }
            group.addTask {
                await cancel.wait()
                return .cancelled
            }
            let ending = await group.next()!
            group.cancelAll()
            let response: GatewayResponse?
            switch ending {
            case .answered(let answer): response = answer
            case .deadline:
                response = .failure(requestID: request.requestID, code: .deadlineExceeded, error: "the handler did not finish before the request's deadline")
            case .cancelled: response = nil
            }
            if let response {
                self.responses.store(response)
                answer(response)
                if let metrics = self.metrics {
                    metrics.increment(Metric.workerRequests, request.method, response.code.isEmpty ? "ok" : response.code)
                    metrics.record(Metric.workerRequestDuration, request.method, duration: ContinuousClock.now - started)
                }
            }
            self.logger.info("request handled", metadata: [
                "message_id": "\(LogEventID.requestHandled)",
                "request_id": "\(request.requestID)", "method": "\(request.method)",
                "environment": "\(self.configuration.environment)", "instance": "\(self.configuration.instanceID)",
                "attempt": "\(request.attempt)", "outcome": "\(response.map { $0.code } ?? "cancelled")",
                "code": "\(response.map { $0.code } ?? "cancelled")",
                "duration_us": "\((ContinuousClock.now - started).wholeMicroseconds)",
            ])
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
