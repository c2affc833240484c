public import Foundation

/// `Ping`: answers with the payload it got. For health checks, and for measuring the
/// transport without a database behind it.
public struct PingHandler: RequestHandler {
    public static let method = "Ping"

    public init() {}

    public func handle(_ request: HandlerRequest) async throws -> Data { request.payload }
}

/// Delays another handler's answer: simulates a slow database in tests and benchmarks
/// (`vps-gateway worker --simulate-latency`). Cancellation ends the wait early.
public struct DelayedHandler: RequestHandler {
    private let wrapped: any RequestHandler
    private let delay: Duration

    public init(_ wrapped: any RequestHandler, delay: Duration) {
        self.wrapped = wrapped
        self.delay = delay
    }

    public func handle(_ request: HandlerRequest) async throws -> Data {
        try await Task.sleep(for: delay)
        return try await wrapped.handle(request)
    }
}
