public import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
public import SwiftProtobuf
import Synchronization

/// Unary gRPC calls, any number at once, on one HTTP/2 connection to a Unix socket or a TCP
/// port: what the admin CLI and `vps-gateway bench` speak to the gateway's admin socket.
///
/// Each call is one stream whose frames are written and read at the connection, beside
/// NIOHTTP2's handler: the request's HEADERS and DATA go out in one hop to the event loop, the
/// answer completes a promise, and the deadline is a timer on the loop. No stream channel, no
/// task or async sequence per call. grpc-swift's client cost `bench` about 150 µs of CPU per
/// call, more than the gateway spends on the call it measures; a benchmark that heavy hides
/// the product's speed. HTTP/2 itself — HPACK, stream states, outbound flow control, SETTINGS
/// and PING acks, holding streams past the server's concurrency limit — stays NIOHTTP2's.
///
/// A connection that closes or is sent GOAWAY is dialled again by the next call.
///
/// ```swift
/// let answer = try await RPCUnaryClient.withClient(to: .unixSocket(path: "/run/vps-gateway/admin.sock")) { client in
///     try await client.call(method, request, as: Response.self, timeout: .seconds(15))
/// }
/// ```
public final class RPCUnaryClient: Sendable {
    public enum Target: Sendable, CustomStringConvertible {
        case unixSocket(path: String)
        case tcp(host: String, port: Int)

        public var description: String {
            switch self {
            case .unixSocket(let path): "unix:\(path)"
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            }
        }

        var authority: String {
            switch self {
            case .unixSocket: "localhost"
            case .tcp: description
            }
        }
    }

    public struct Settings: Sendable {
        /// The largest answer accepted.
        public var maxMessageBytes: Int
        public var connectTimeout: Duration
        /// The inbound window of each stream and of the connection.
        public var windowSize: Int

        public init(maxMessageBytes: Int = 64 << 20, connectTimeout: Duration = .seconds(10), windowSize: Int = 1 << 20) {
            self.maxMessageBytes = maxMessageBytes
            self.connectTimeout = connectTimeout
            self.windowSize = windowSize
        }
    }

    public let target: Target
    private let settings: Settings
    private let state = Mutex<ConnectionState>(.none)

    private enum ConnectionState {
        case none
        /// Calls that find no usable connection wait for this one dial together.
        case dialling(EventLoopFuture<Connection>)
        case up(Connection)
    }

    private final class Connection: Sendable {
        let channel: any Channel
        let handler: NIOLoopBound<UnaryCallsHandler>
        /// False once the connection closed or was told to go away.
        let usable = Atomic<Bool>(true)

        init(channel: any Channel, handler: NIOLoopBound<UnaryCallsHandler>) {
            self.channel = channel
            self.handler = handler
        }
    }

    private init(target: Target, settings: Settings) {
        self.target = target
        self.settings = settings
    }

    /// Connects to `target`, runs `body` with the client, and closes the connection after it.
    /// Throws ``RPCStatus`` `unavailable` when the first connection cannot be made.
    public static func withClient<Result: Sendable>(
        to target: Target,
        settings: Settings = .init(),
        _ body: (RPCUnaryClient) async throws -> Result
    ) async throws -> Result {
        let client = RPCUnaryClient(target: target, settings: settings)
        do {
            _ = try await client.currentConnection()
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }

    /// Sends `request` (a serialized message) to `method` and returns the answer's message
    /// bytes. Throws the call's ``RPCStatus``: the server's, `deadlineExceeded` when no answer
    /// comes within `timeout`, `cancelled` when the task is, `unavailable` for a connection lost.
    public func call(_ method: RPCMethod, _ request: [UInt8], metadata: [(String, String)] = [], timeout: Duration) async throws -> ByteBuffer {
        let connection = try await currentConnection()
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": "http", ":path": method.path, ":authority": target.authority,
            "content-type": "application/grpc", "te": "trailers", "user-agent": "vps-gateway",
        ]
        for (name, value) in metadata { headers.add(name: name, value: value) }
        let eventLoop = connection.channel.eventLoop
        let answer = eventLoop.makePromise(of: ByteBuffer.self)
        let handler = connection.handler
        let requestHeaders = headers
        let amount = TimeAmount(timeout)
        if eventLoop.inEventLoop {
            handler.value.start(headers: requestHeaders, message: request, timeout: amount, answer: answer)
        } else {
            eventLoop.execute { handler.value.start(headers: requestHeaders, message: request, timeout: amount, answer: answer) }
        }
        return try await withTaskCancellationHandler {
            try await answer.futureResult.get()
        } onCancel: {
            eventLoop.execute { handler.value.cancel(answer.futureResult) }
        }
    }

    /// An executor that runs tasks on the connection's event loop: a task making call after
    /// call (a load generator's callers) that prefers it starts each call, and is resumed by
    /// its answer, without a hand-off between threads, and the calls started in one loop turn
    /// go out in one write.
    public func callerExecutor() async throws -> any TaskExecutor {
        EventLoopTaskExecutor(try await currentConnection().channel.eventLoop)
    }

    /// A typed call: `request` serialized, the answer decoded as `Response`.
    public func call<Response: SwiftProtobuf.Message>(
        _ method: RPCMethod, _ request: some SwiftProtobuf.Message, as: Response.Type = Response.self,
        metadata: [(String, String)] = [], timeout: Duration
    ) async throws -> Response {
        let bytes = try await call(method, try request.serializedBytes(), metadata: metadata, timeout: timeout)
        do {
            return try Response(serializedBytes: Array(bytes.readableBytesView))
        } catch {
            throw RPCStatus(.internal, "the answer to \(method) is not a valid \(Response.protoMessageName): \(error)")
        }
    }

    /// The connection calls go on: the current one while usable, else a new dial.
    private func currentConnection() async throws -> Connection {
        let (future, isNew) = state.withLock { state -> (EventLoopFuture<Connection>, Bool) in
            switch state {
            case .up(let connection) where connection.usable.load(ordering: .acquiring):
                return (connection.channel.eventLoop.makeSucceededFuture(connection), false)
            case .dialling(let future):
                return (future, false)
            case .none, .up:
                let future = open()
                state = .dialling(future)
                return (future, true)
            }
        }
        if isNew {
            // Outside the lock: on a future already complete the callback may run at once.
            future.whenComplete { result in
                self.state.withLock { state in
                    guard case .dialling(let current) = state, current === future else { return }
                    switch result {
                    case .success(let connection): state = .up(connection)
                    case .failure: state = .none
                    }
                }
            }
        }
        do {
            return try await future.get()
        } catch {
            throw RPCStatus(.unavailable, "cannot connect to \(target): \(error)")
        }
    }

    private func open() -> EventLoopFuture<Connection> {
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(TimeAmount(settings.connectTimeout))
        let settings = self.settings
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Connection> = { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                var configuration = NIOHTTP2Handler.ConnectionConfiguration()
                configuration.initialSettings = [
                    HTTP2Setting(parameter: .initialWindowSize, value: settings.windowSize),
                    HTTP2Setting(parameter: .maxFrameSize, value: 1 << 14),
                    HTTP2Setting(parameter: .maxHeaderListSize, value: 16 << 10),
                    HTTP2Setting(parameter: .enablePush, value: 0),
                ]
                try sync.addHandler(NIOHTTP2Handler(mode: .client, connectionConfiguration: configuration))
                let handler = UnaryCallsHandler(settings: settings)
                try sync.addHandler(handler)
                let connection = Connection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                handler.onUnusable = { connection.usable.store(false, ordering: .releasing) }
                return connection
            }
        }
        switch target {
        case .unixSocket(let path):
            return bootstrap.connect(unixDomainSocketPath: path).flatMap(initializer)
        case .tcp(let host, let port):
            return bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connect(host: host, port: port).flatMap(initializer)
        }
    }

    private func close() async {
        let current = state.withLock { state -> EventLoopFuture<Connection>? in
            defer { state = .none }
            switch state {
            case .none: return nil
            case .dialling(let future): return future
            case .up(let connection): return connection.channel.eventLoop.makeSucceededFuture(connection)
            }
        }
        guard let connection = try? await current?.get() else { return }
        try? await connection.channel.close()
    }
}

/// The calls of one connection, each on a stream of its own. Event-loop confined.
private final class UnaryCallsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private struct Call {
        let answer: EventLoopPromise<ByteBuffer>
        var reader: GRPCResponseReader
        var message: ByteBuffer?
        var deadline: Scheduled<Void>?
        /// Bytes read on the stream since its last WINDOW_UPDATE.
        var unacknowledged = 0
    }

    private let settings: RPCUnaryClient.Settings
    private var context: ChannelHandlerContext?
    private var calls: [HTTP2StreamID: Call] = [:]
    private var nextStreamID = HTTP2StreamID(1)
    /// Bytes read on the connection since its last WINDOW_UPDATE.
    private var unacknowledged = 0
    /// A flush is queued on the loop for the calls started since the last one.
    private var flushQueued = false
    /// Why no new call may start here; the client dials again.
    private var unusable: String?
    /// Tells the client, off the loop, that the next call needs a new connection.
    var onUnusable: @Sendable () -> Void = {}

    init(settings: RPCUnaryClient.Settings) {
        self.settings = settings
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The connection's window starts at 65,535 whatever SETTINGS say: widen it to the streams'.
        if settings.windowSize > 65535 {
            context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: settings.windowSize - 65535))), promise: nil)
        }
    }

    func start(headers: HPACKHeaders, message: [UInt8], timeout: TimeAmount, answer: EventLoopPromise<ByteBuffer>) {
        guard let context, unusable == nil else {
            return answer.fail(RPCStatus(.unavailable, unusable ?? "the connection is not open"))
        }
        let id = nextStreamID
        // Client stream ids are odd and below 2^31; a connection that used them up is replaced.
        guard Int(id) < Int(Int32.max) - 2 else {
            makeUnusable("the connection used up its stream ids")
            return answer.fail(RPCStatus(.unavailable, "the connection used up its stream ids; call again"))
        }
        nextStreamID = HTTP2StreamID(Int(id) + 2)
        var call = Call(answer: answer, reader: GRPCResponseReader(maxMessageBytes: settings.maxMessageBytes))
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        call.deadline = context.eventLoop.scheduleTask(in: timeout) {
            bound.value.abandon(id, RPCStatus(.deadlineExceeded, "no answer within \(Duration(timeout))"))
        }
        calls[id] = call
        var body = context.channel.allocator.buffer(capacity: 5 + message.count)
        body.writeEnvelope(flags: 0x00, message)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(body), endStream: true)))), promise: nil)
        flushSoon(context)
    }

    /// Flushes once the loop has run what is queued on it now, so the calls started in one
    /// loop turn go out in one write.
    private func flushSoon(_ context: ChannelHandlerContext) {
        guard !flushQueued else { return }
        flushQueued = true
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            bound.value.flushQueued = false
            bound.value.context?.flush()
        }
    }

    /// The task awaiting `answer` was cancelled.
    func cancel(_ answer: EventLoopFuture<ByteBuffer>) {
        guard let id = calls.first(where: { $0.value.answer.futureResult === answer })?.key else { return }
        abandon(id, RPCStatus(.cancelled, "the call was cancelled"))
    }

    /// Ends a call the server has not answered, resetting its stream.
    private func abandon(_ id: HTTP2StreamID, _ status: RPCStatus) {
        guard calls[id] != nil else { return }
        finish(id, .failure(status))
        context?.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
    }

    private func finish(_ id: HTTP2StreamID, _ result: Result<ByteBuffer, RPCStatus>) {
        guard let call = calls.removeValue(forKey: id) else { return }
        call.deadline?.cancel()
        call.answer.completeWith(result.mapError { $0 as any Error })
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data {
            // Counted for the connection whatever the stream: a late frame of an abandoned call
            // spends the connection's window too.
            giveBackWindow(stream: frame.streamID, bytes.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0), context)
        }
        if frame.streamID == .rootStream {
            if case .goAway(let lastStreamID, let code, let opaque) = frame.payload { readGoAway(lastStreamID, code, opaque) }
            return
        }
        let id = frame.streamID
        guard var call = calls[id] else { return }
        var status: RPCStatus?
        switch frame.payload {
        case .headers(let block):
            status = call.reader.readHeaders(block.headers, endStream: block.endStream)
        case .data(let data):
            guard case .byteBuffer(let bytes) = data.data else { return }
            var message = call.message
            status = call.reader.readData(bytes, endStream: data.endStream) { payload in
                guard message == nil else { throw RPCStatus(.internal, "the server sent more than one message for a unary call") }
                message = payload
            }
            call.message = message
        case .rstStream(let code):
            status = RPCStatus(code == .cancel ? .cancelled : .unavailable, "the server reset the stream (\(code))")
        default:
            return
        }
        guard let status else {
            calls[id] = call
            return
        }
        switch (status.code, call.message) {
        case (.ok, let message?): finish(id, .success(message))
        case (.ok, nil): finish(id, .failure(RPCStatus(.internal, "the server ended a unary call with OK but no message")))
        default: finish(id, .failure(status))
        }
    }

    private func readGoAway(_ lastStreamID: HTTP2StreamID, _ code: HTTP2ErrorCode, _ opaque: ByteBuffer?) {
        let detail = opaque.map { String(buffer: $0) }.map { " \($0.prefix(256))" } ?? ""
        makeUnusable("the server sent GOAWAY \(code)\(detail)")
        // Streams above the last one the server names were not processed.
        for id in calls.keys where id > lastStreamID {
            finish(id, .failure(RPCStatus(.unavailable, "the server sent GOAWAY \(code)\(detail) before serving the call; it was not processed")))
        }
    }

    /// Hands back the window the stream and the connection spent, once half of it is used.
    private func giveBackWindow(stream id: HTTP2StreamID, _ bytes: Int, _ context: ChannelHandlerContext) {
        var flush = false
        unacknowledged += bytes
        if unacknowledged >= settings.windowSize / 2 {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: unacknowledged))), promise: nil)
            unacknowledged = 0
            flush = true
        }
        if var call = calls[id] {
            call.unacknowledged += bytes
            if call.unacknowledged >= settings.windowSize / 2 {
                context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: call.unacknowledged))), promise: nil)
                call.unacknowledged = 0
                flush = true
            }
            calls[id] = call
        }
        if flush { context.flush() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent, calls[closed.streamID] != nil {
            finish(closed.streamID, .failure(RPCStatus(.unavailable, "the stream closed\(closed.reason.map { " (\($0))" } ?? "") before the server's trailers")))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        makeUnusable("the connection closed")
        for id in calls.keys { finish(id, .failure(RPCStatus(.unavailable, "the connection to the server closed before it answered"))) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        makeUnusable("\(error)")
        for id in calls.keys { finish(id, .failure(RPCStatus(.unavailable, "the connection failed: \(error)"))) }
        context.close(promise: nil)
    }

    private func makeUnusable(_ why: String) {
        guard unusable == nil else { return }
        unusable = why
        onUnusable()
    }
}
