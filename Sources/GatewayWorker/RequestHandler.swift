// Public: handlers receive and return Foundation `Data` payloads.
public import Foundation
public import GatewayProtocol

/// Answers one method. Adding a method to the worker is one type conforming to this
/// protocol plus one ``HandlerRegistry/register(_:_:)`` line.
///
/// ```swift
/// struct Echo: RequestHandler {
///     func handle(_ request: HandlerRequest) async throws -> Data { request.payload }
/// }
/// registry.register("Echo", Echo())
/// ```
public protocol RequestHandler: Sendable {
    /// Returns the response payload (the binary protobuf of the method's response), or
    /// throws a ``HandlerError`` to answer with a code such as `not_found`. Any other error
    /// is answered as `internal`. The task is cancelled at the request's deadline and when
    /// the gateway sends `cancel`.
    func handle(_ request: HandlerRequest) async throws -> Data
}

/// A request as a handler sees it.
public struct HandlerRequest: Sendable {
    public var requestID: String
    public var method: String
    public var payload: Data
    /// 1 for the first send of this request id.
    public var attempt: UInt32
    /// The environment of the worker handling it.
    public var environment: String

    public init(requestID: String, method: String, payload: Data, attempt: UInt32, environment: String) {
        self.requestID = requestID
        self.method = method
        self.payload = payload
        self.attempt = attempt
        self.environment = environment
    }
}

/// A handler's deliberate answer other than success.
public struct HandlerError: Error, Sendable, CustomStringConvertible {
    public var code: ResponseCode
    public var message: String

    public init(_ code: ResponseCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func notFound(_ message: String) -> Self { Self(.notFound, message) }
    public static func invalidArgument(_ message: String) -> Self { Self(.invalidArgument, message) }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// The handlers of a worker, by method name.
public struct HandlerRegistry: Sendable {
    private var handlers: [String: any RequestHandler] = [:]

    public init() {}

    public mutating func register(_ method: String, _ handler: any RequestHandler) {
        handlers[method] = handler
    }

    public func handler(for method: String) -> (any RequestHandler)? { handlers[method] }

    /// The method names, sorted; sent in `register` so the gateway routes only these here.
    public var methods: [String] { handlers.keys.sorted() }
}
