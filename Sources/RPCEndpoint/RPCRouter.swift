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

    func route(forPath path: String) -> Route? { routes[path] }
}

/// A registered method with its handler, erased to message bytes.
struct Route: Sendable {
    let method: RPCMethod
    /// Runs before any message is read (the shared secret); throws to refuse the call.
    let admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)?
    let run: @Sendable (RequestSource, ResponseSink, MessageCodec, RPCContext) async throws -> Void

    init(
        method: RPCMethod,
        admission: (@Sendable (RPCContext) throws(RPCStatus) -> Void)?,
        run: @escaping @Sendable (RequestSource, ResponseSink, MessageCodec, RPCContext) async throws -> Void
    ) {
        self.method = method
        self.admission = admission
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
