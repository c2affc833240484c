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

/// A handler that can often answer at once, without waiting: a lookup in a local file that
/// takes microseconds. The worker asks it first, on the thread that read the request (the
/// stream's event loop), and sends the answer in the same loop turn: no task, no timer, no
/// thread hop. When it would have to wait (a lock held by a writer, a network round trip)
/// it says so and the request runs through ``MethodHandler/handle(_:context:)`` in a task of
/// its own, under its deadline, as any other.
///
/// ```swift
/// extension Greeter: InstantMethodHandler {
///     func handleAtOnce(_ request: GreetRequest, context: HandlerContext) throws -> GreetResponse? {
///         .with { $0.text = "hello \(request.name)" }
///     }
/// }
/// ```
public protocol InstantMethodHandler<Request, Response>: MethodHandler {
    /// The answer, or nil when it cannot be given without waiting. Must not block: it runs
    /// where the gateway's stream is read. Throws as ``MethodHandler/handle(_:context:)`` does.
    func handleAtOnce(_ request: Request, context: HandlerContext) throws -> Response?

    /// False when this handler never answers at once (what it reads is always a round trip
    /// away): it is then not asked, so a request is not decoded twice. True by default.
    var answersAtOnce: Bool { get }
}

extension InstantMethodHandler {
    public var answersAtOnce: Bool { true }
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
    /// The answer given at once, nil when it would wait; nil for a handler that never answers
    /// at once (``InstantMethodHandler``).
    package let runAtOnce: (@Sendable (Data, HandlerContext) throws -> Data?)?

    init<Handler: MethodHandler>(_ method: RequestMethod<Handler.Request, Handler.Response>, _ handler: Handler) {
        run = { payload, context in
            try method.encode(response: try await handler.handle(try Self.decode(payload, method), context: context))
        }
        if let instant = handler as? any InstantMethodHandler<Handler.Request, Handler.Response>, instant.answersAtOnce {
            runAtOnce = { payload, context in
                try instant.handleAtOnce(try Self.decode(payload, method), context: context).map { try method.encode(response: $0) }
            }
        } else {
            runAtOnce = nil
        }
    }

    private static func decode<Request, Response>(_ payload: Data, _ method: RequestMethod<Request, Response>) throws -> Request {
        do {
            return try method.decodeRequest(from: payload)
        } catch {
            throw HandlerError.invalidArgument("payload (\(payload.count) bytes) is not a \(method.name) request: \(error)")
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
