// Public: a session's send queue is a MessageQueue.
public import AsyncPrimitives
public import SwiftProtobuf

/// The methods an endpoint serves, each registered with its request and response types; the
/// type erasure happens here, once, so handlers see decoded messages and the stream code sees
/// bytes.
///
/// ```swift
/// var router = RPCRouter()
/// router.unary(Health.check) { (request: HealthCheckRequest, context) in .with { $0.status = .serving } }
/// ```
public struct RPCRouter: Sendable {
    private(set) var routes: [String: Route] = [:]

    public init() {}

    /// Registers a method with one request and one response.
    public mutating func unary<Request: Message, Response: Message>(
        _ method: RPCMethod,
        admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)? = nil,
        _ handler: @escaping @Sendable (Request, RPCContext) async throws -> Response
    ) {
        precondition(method.kind == .unary, "\(method) is not unary")
        routes[method.path] = Route(method: method, admission: admission) { requests, responses, codec, context in
            let request: Request = try await requests.single(codec)
            let response = try await handler(request, context)
            try await responses.write([codec.encode(response)])
        }
    }

    /// Registers a method with one request and a stream of responses.
    public mutating func serverStreaming<Request: Message, Response: Message>(
        _ method: RPCMethod,
        admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)? = nil,
        _ handler: @escaping @Sendable (Request, RPCContext, RPCResponseWriter<Response>) async throws -> Void
    ) {
        precondition(method.kind == .serverStreaming, "\(method) is not server-streaming")
        routes[method.path] = Route(method: method, admission: admission) { requests, responses, codec, context in
            let request: Request = try await requests.single(codec)
            try await handler(request, context, RPCResponseWriter(sink: responses, codec: codec))
        }
    }

    /// Registers a method with streams both ways.
    public mutating func bidirectionalStreaming<Request: Message, Response: Message>(
        _ method: RPCMethod,
        admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)? = nil,
        _ handler: @escaping @Sendable (RPCRequestStream<Request>, RPCContext, RPCResponseWriter<Response>) async throws -> Void
    ) {
        precondition(method.kind == .bidirectionalStreaming, "\(method) is not bidirectional")
        routes[method.path] = Route(method: method, admission: admission) { requests, responses, codec, context in
            try await handler(RPCRequestStream(source: requests, codec: codec), context, RPCResponseWriter(sink: responses, codec: codec))
        }
    }

    /// Registers a method with streams both ways, served as a session: the endpoint hands it
    /// each message as it is read and sends what it queues, with no task reading or writing
    /// the stream. `open` makes the session when the stream opens (after `admission`), on the
    /// connection's event loop: it must not block.
    public mutating func bidirectionalSession<Session: RPCSession>(
        _ method: RPCMethod,
        admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)? = nil,
        _ open: @escaping @Sendable (RPCContext) -> Session
    ) {
        precondition(method.kind == .bidirectionalStreaming, "\(method) is not bidirectional")
        let opener: @Sendable (RPCContext, MessageCodec) -> OpenSession = { context, codec in OpenSession(open(context), codec: codec) }
        routes[method.path] = Route(method: method, admission: admission, session: opener) { requests, responses, codec, context in
            try await opener(context, codec).serve(requests, responses)
        }
    }

    func route(forPath path: String) -> Route? { routes[path] }
}

/// A bidirectional stream served by the endpoint's callbacks rather than by a task that reads
/// it: ``receive(_:)`` gets each message where the stream is read (for a socket, on its
/// connection's event loop, as the message's last byte arrives), and what the session puts
/// in ``outbound`` is sent from there too. A long-lived stream of small messages (a worker's
/// requests and answers) then costs no task hop per message. ``run()`` is the session's
/// life (its timers); the stream ends when it returns, with OK, or throws, with its
/// ``RPCStatus``, once ``outbound`` is sent.
///
/// ```swift
/// final class Echo: RPCSession {
///     let outbound = MessageQueue<Google_Protobuf_StringValue>(capacity: 64)
///     private let ended = FirstOutcome<RPCStatus?>()
///     func receive(_ message: Google_Protobuf_StringValue) throws(RPCStatus) { outbound.enqueue(message) }
///     func inputEnded(_ error: RPCStatus?) { ended.decide(error) }
///     func run() async throws { if let error = await ended.wait() { throw error } }
/// }
/// router.bidirectionalSession(echo) { _ in Echo() }
/// ```
public protocol RPCSession<Request, Response>: Sendable {
    associatedtype Request: Message
    associatedtype Response: Message

    /// What the endpoint sends, in order, as it fills. A message that does not fit is
    /// refused by the queue (the client reads too slowly); finishing it ends the sending.
    var outbound: MessageQueue<Response> { get }

    /// One message from the client, in order, where it was read: must not block. A thrown
    /// status ends the input (``inputEnded(_:)`` follows with it).
    func receive(_ message: Request) throws(RPCStatus)

    /// The client's input has ended: nil when it half-closed, else how the stream broke (a
    /// malformed or oversized message, a reset, a lost connection). Called once.
    func inputEnded(_ error: RPCStatus?)

    /// The session's life; the stream ends when this returns or throws.
    func run() async throws
}

/// A session with its message types erased to bytes: what the endpoint drives.
struct OpenSession: Sendable {
    let receive: @Sendable ([UInt8]) throws(RPCStatus) -> Void
    let inputEnded: @Sendable (RPCStatus?) -> Void
    let run: @Sendable () async throws -> Void
    let outbound: EncodedQueue

    init<Session: RPCSession>(_ session: Session, codec: MessageCodec) {
        receive = { bytes throws(RPCStatus) in try session.receive(try codec.decode(bytes)) }
        inputEnded = { session.inputEnded($0) }
        run = { try await session.run() }
        outbound = EncodedQueue(session.outbound) { try codec.encode($0) }
    }

    /// Serves the session on a stream read and written by tasks (an in-memory listener's):
    /// a reader hands it the messages, a writer sends its queue; returns (or throws) as
    /// ``RPCSession/run()`` did, once the queue is sent.
    func serve(_ requests: RequestSource, _ responses: ResponseSink) async throws {
        try await withThrowingTaskGroup(of: Void.self) { writer in
            writer.addTask {
                while let batch = await outbound.nextBatch() { try await responses.write(batch) }
            }
            let ended = await withTaskGroup(of: Void.self) { reader -> Result<Void, any Error> in
                reader.addTask {
                    do {
                        while let bytes = try await requests.next() { try receive(bytes) }
                        inputEnded(nil)
                    } catch let status as RPCStatus {
                        inputEnded(status)
                    } catch {
                        inputEnded(RPCStatus(.cancelled, "the stream ended: \(error)"))
                    }
                }
                defer { reader.cancelAll() }
                do {
                    try await run()
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            outbound.finish()
            try await writer.waitForAll()
            try ended.get()
        }
    }
}

/// A registered method with its handler, erased to message bytes.
struct Route: Sendable {
    let method: RPCMethod
    /// Runs before any message is read (the shared secret); throws to refuse the call.
    let admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)?
    /// For a session (``RPCSession``): makes it, for a stream served at the connection's frames.
    let session: (@Sendable (RPCContext, MessageCodec) -> OpenSession)?
    /// Serves the call on a stream read and written by tasks.
    let run: @Sendable (RequestSource, ResponseSink, MessageCodec, RPCContext) async throws -> Void

    init(
        method: RPCMethod,
        admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)?,
        session: (@Sendable (RPCContext, MessageCodec) -> OpenSession)? = nil,
        run: @escaping @Sendable (RequestSource, ResponseSink, MessageCodec, RPCContext) async throws -> Void
    ) {
        self.method = method
        self.admission = admission
        self.session = session
        self.run = run
    }
}

/// The requests of a streaming call, decoded; ends when the client half-closes. Iterate it
/// from one task only.
public struct RPCRequestStream<Request: Message>: AsyncSequence, Sendable {
    public typealias Element = Request
    let source: RequestSource
    let codec: MessageCodec

    public struct AsyncIterator: AsyncIteratorProtocol {
        let source: RequestSource
        let codec: MessageCodec

        public mutating func next() async throws -> Request? {
            guard let bytes = try await source.next() else { return nil }
            return try codec.decode(bytes)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: source, codec: codec) }
}

/// Sends a streaming call's responses. Write from one task at a time; a write waits while the
/// client's flow-control window is full.
public struct RPCResponseWriter<Response: Message>: Sendable {
    let sink: ResponseSink
    let codec: MessageCodec

    public func write(_ response: Response) async throws {
        try await sink.write([codec.encode(response)])
    }

    /// Several responses in one flush.
    public func write(contentsOf responses: [Response]) async throws {
        var encoded: [[UInt8]] = []
        encoded.reserveCapacity(responses.count)
        for response in responses { encoded.append(try codec.encode(response)) }
        try await sink.write(encoded)
    }
}

/// Binary protobuf, or the protobuf JSON mapping (Connect's `+json` and `application/json`).
enum MessageCodec: Sendable {
    case binary
    case json

    func decode<M: Message>(_ bytes: [UInt8]) throws(RPCStatus) -> M {
        do {
            switch self {
            case .binary: return try M(serializedBytes: bytes)
            case .json:
                var options = JSONDecodingOptions()
                options.ignoreUnknownFields = true
                return try M(jsonUTF8Bytes: bytes, options: options)
            }
        } catch {
            throw RPCStatus(.invalidArgument, "the request is not a valid \(M.protoMessageName) (\(self == .json ? "JSON" : "binary protobuf"), \(bytes.count) bytes)")
        }
    }

    func encode(_ message: some Message) throws(RPCStatus) -> [UInt8] {
        do {
            switch self {
            case .binary: return try message.serializedBytes()
            case .json: return try message.jsonUTF8Bytes()
            }
        } catch {
            throw RPCStatus(.internal, "cannot encode the response: \(error)")
        }
    }
}

extension RequestSource {
    /// The one request of a unary or server-streaming call.
    func single<Request: Message>(_ codec: MessageCodec) async throws -> Request {
        guard let bytes = try await next() else {
            throw RPCStatus(.invalidArgument, "the call ended without its request message")
        }
        return try codec.decode(bytes)
    }
}
