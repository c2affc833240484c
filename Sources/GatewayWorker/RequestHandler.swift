package import Foundation
public import GatewayProtocol

/// Answers one request method, in the method's own message types. Adding a method to the
/// worker is one type conforming to this protocol and one ``HandlerRegistry/register(_:_:)``
/// line naming the method's ``RequestMethod``: the compiler checks that the handler takes and
/// gives that method's messages.
///
/// ```swift
/// struct Greeter: MethodHandler {
///     func handle(_ request: GreetRequest, context: HandlerContext) async throws -> GreetResponse {
///         .with { $0.text = "hello \(request.name) from \(context.environment)" }
///     }
/// }
/// registry.register(Greetings.greet, Greeter())
/// ```
public protocol MethodHandler<Request, Response>: Sendable {
    associatedtype Request: Sendable
    associatedtype Response: Sendable

    /// Returns the answer, or throws a ``HandlerError`` to answer with a code such as
    /// `not_found`. Any other error is answered as `internal`. The task is cancelled at the
    /// request's deadline and when the gateway sends `cancel`.
    func handle(_ request: Request, context: HandlerContext) async throws -> Response
}

/// What a handler knows of the request besides its message.
public struct HandlerContext: Sendable {
    public var requestID: String
    public var method: String
    /// 1 for the first send of this request id.
    public var attempt: UInt32
    /// The environment of the worker handling it.
    public var environment: String

    public init(requestID: String, method: String, attempt: UInt32, environment: String) {
        self.requestID = requestID
        self.method = method
        self.attempt = attempt
        self.environment = environment
    }
}

/// A registered handler with its method's messages decoded and encoded around it: what the
/// worker runs for a request's bytes.
package struct RegisteredHandler: Sendable {
    package let run: @Sendable (Data, HandlerContext) async throws -> Data

    init<Handler: MethodHandler>(_ method: RequestMethod<Handler.Request, Handler.Response>, _ handler: Handler) {
        run = { payload, context in
            let request: Handler.Request
            do {
                request = try method.decodeRequest(from: payload)
            } catch {
                throw HandlerError.invalidArgument("payload (\(payload.count) bytes) is not a \(method.name) request: \(error)")
            }
            return try method.encode(response: try await handler.handle(request, context: context))
        }
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
    private var handlers: [String: RegisteredHandler] = [:]

    public init() {}

    /// Answers `method` with `handler` (replacing an earlier one for the same method).
    public mutating func register<Handler: MethodHandler>(_ method: RequestMethod<Handler.Request, Handler.Response>, _ handler: Handler) {
        handlers[method.name] = RegisteredHandler(method, handler)
    }

    package func handler(for method: String) -> RegisteredHandler? { handlers[method] }

    /// The method names, sorted; sent in `register` so the gateway routes only these here.
    public var methods: [String] { handlers.keys.sorted() }
}
