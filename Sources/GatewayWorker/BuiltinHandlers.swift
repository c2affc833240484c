public import Foundation
import GatewayProtocol

/// `Ping` (``RequestMethods/ping``): answers with the bytes it got. For health checks, and
/// for measuring the transport without a database behind it.
public struct PingHandler: MethodHandler {
    public init() {}

    public func handle(_ request: Data, context: HandlerContext) async throws -> Data { request }
}

/// Delays another handler's answer: simulates a slow database in tests and benchmarks
/// (`vps-gateway worker --simulate-latency`). Cancellation ends the wait early.
public struct DelayedHandler<Wrapped: MethodHandler>: MethodHandler {
    private let wrapped: Wrapped
    private let delay: Duration

    public init(_ wrapped: Wrapped, delay: Duration) {
        self.wrapped = wrapped
        self.delay = delay
    }

    public func handle(_ request: Wrapped.Request, context: HandlerContext) async throws -> Wrapped.Response {
        try await Task.sleep(for: delay)
        return try await wrapped.handle(request, context: context)
    }
}
