// Public: a stream sends from a MessageQueue (`send(from:encode:)`).
public import AsyncPrimitives
public import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL

/// One bidirectional gRPC stream on a connection of its own: what a worker keeps open to its
/// gateway.
///
/// The stream's frames are read and written at the connection, beside NIOHTTP2's connection
/// handler, with no stream channel and no async channel: each message the server sends is
/// handed to `onMessage` on the event loop as its envelope completes, and a batch to send is
/// one DATA frame written in one hop to the loop. A general gRPC client (grpc-swift's) costs a
/// worker several task hops and a per-message async sequence for each request; a worker keeps
/// one stream for hours, so the general machinery buys it nothing. HTTP/2 itself — HPACK, the
/// stream's state, outbound flow control, SETTINGS and PING acks — stays NIOHTTP2's; this type
/// adds gRPC's framing, the inbound window updates (there is no stream channel to send them),
/// and keepalive pings.
///
/// ```swift
/// try await RPCStreamClient.withStream(to: target, method: method, metadata: [("x-api-secret", secret)], settings: .init(),
///                                      onMessage: { bytes in try handle(bytes) }) { stream in
///     try await stream.send([registration])
///     try await stream.ended()   // the server's status: returns for OK, throws RPCStatus otherwise
/// }
/// ```
public enum RPCStreamClient {
    /// Where to dial.
    public struct Target: Sendable {
        public var host: String
        public var port: Int
        /// h2 over TLS when set; cleartext h2 with prior knowledge otherwise.
        public var tls: TLS?

        public init(host: String, port: Int, tls: TLS? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
        }

        /// PEM files: the roots to check the server against (the system's when nil), and this
        /// client's own certificate and key for servers that require one.
        public struct TLS: Sendable {
            public var trustRoots: String?
            public var certificateChain: String?
            public var privateKey: String?

            public init(trustRoots: String? = nil, certificateChain: String? = nil, privateKey: String? = nil) {
                self.trustRoots = trustRoots
                self.certificateChain = certificateChain
                self.privateKey = privateKey
            }
        }

        var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        var isIPAddress: Bool { (try? SocketAddress(ipAddress: host, port: port)) != nil }
    }

    public struct Settings: Sendable {
        /// A PING this often; nil sends none.
        public var keepaliveInterval: Duration?
        /// A PING not acknowledged within this closes the connection.
        public var keepaliveTimeout: Duration
        /// The largest message accepted from the server.
        public var maxMessageBytes: Int
        public var connectTimeout: Duration
        /// The inbound window of the stream and the connection.
        public var windowSize: Int

        public init(keepaliveInterval: Duration? = .seconds(30), keepaliveTimeout: Duration = .seconds(20), maxMessageBytes: Int = 4 << 20, connectTimeout: Duration = .seconds(10), windowSize: Int = 1 << 20) {
            self.keepaliveInterval = keepaliveInterval
            self.keepaliveTimeout = keepaliveTimeout
            self.maxMessageBytes = maxMessageBytes
            self.connectTimeout = connectTimeout
            self.windowSize = windowSize
        }
    }

    /// Dials `target`, opens a stream of `method` with `metadata` as request headers, and runs
    /// `body` with it; the connection is closed when `body` returns or throws (and when the
    /// task is cancelled). `onMessage` gets each message the server sends, on the connection's
    /// event loop, in order; a status it throws ends the stream with that status.
    public static func withStream<Result: Sendable>(
        to target: Target,
        method: RPCMethod,
        metadata: [(String, String)],
        settings: Settings,
        onMessage: @escaping @Sendable (ByteBuffer) throws -> Void,
        _ body: (RPCClientStream) async throws -> Result
    ) async throws -> Result {
        let tls = try target.tls.map { try makeTLSContext($0) }
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": tls == nil ? "http" : "https", ":path": method.path, ":authority": target.authority,
            "content-type": "application/grpc", "te": "trailers", "user-agent": "vps-gateway",
        ]
        for (name, value) in metadata { headers.add(name: name, value: value) }
        let requestHeaders = headers
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(TimeAmount(settings.connectTimeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
        let stream: RPCClientStream
        do {
            stream = try await bootstrap.connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: target.isIPAddress ? nil : target.host))
                    }
                    var connection = NIOHTTP2Handler.ConnectionConfiguration()
                    connection.initialSettings = [
                        HTTP2Setting(parameter: .initialWindowSize, value: settings.windowSize),
                        HTTP2Setting(parameter: .maxFrameSize, value: 1 << 14),
                        HTTP2Setting(parameter: .maxHeaderListSize, value: 16 << 10),
                        HTTP2Setting(parameter: .enablePush, value: 0),
                    ]
                    try sync.addHandler(NIOHTTP2Handler(mode: .client, connectionConfiguration: connection))
                    let handler = ClientStreamHandler(headers: requestHeaders, settings: settings, onMessage: onMessage, ended: channel.eventLoop.makePromise())
                    try sync.addHandler(handler)
                    return RPCClientStream(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop), ended: handler.ended.futureResult)
                }
            }
        } catch {
            throw RPCStatus(.unavailable, "cannot connect to \(target.authority): \(error)")
        }
        do {
            let result = try await withTaskCancellationHandler {
                try await body(stream)
            } onCancel: {
                stream.channel.close(promise: nil)
            }
            try? await stream.channel.close()
            return result
        } catch {
            try? await stream.channel.close()
            throw error
        }
    }

    private static func makeTLSContext(_ tls: Target.TLS) throws -> NIOSSLContext {
        do {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.applicationProtocols = ["h2"]
            configuration.minimumTLSVersion = .tlsv12
            if let roots = tls.trustRoots { configuration.trustRoots = .file(roots) }
            if let chain = tls.certificateChain, let key = tls.privateKey {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(chain).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw RPCStatus(.failedPrecondition, "cannot load the TLS files (\([tls.trustRoots, tls.certificateChain, tls.privateKey].compactMap { $0 }.joined(separator: ", "))): \(error); give PEM files this user can read")
        }
    }
}

/// The stream `RPCStreamClient.withStream` opened.
public struct RPCClientStream: Sendable {
    let channel: any Channel
    fileprivate let handler: NIOLoopBound<ClientStreamHandler>
    fileprivate let ended: EventLoopFuture<Void>

    /// Sends messages in one DATA frame; returns once it is written to the connection (so a
    /// server that stops reading holds the sender back, through HTTP/2's flow control).
    public func send(_ messages: [[UInt8]]) async throws {
        let handler = self.handler
        let written = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute { handler.value.send(messages, promise: written) }
        try await written.futureResult.get()
    }

    /// Sends what `queue` holds, as it arrives, from the connection's event loop: each batch
    /// is one DATA frame, taken once the previous one is written (so a server that stops
    /// reading holds the queue back, and the queue's bound refuses what does not fit), and
    /// END_STREAM follows once the queue is finished and sent. No task runs in between: a
    /// message enqueued on the loop itself (an answer made while reading) goes out with the
    /// others of that loop turn. Use either this or ``send(_:)``, not both.
    public func send<Element: Sendable>(from queue: MessageQueue<Element>, encode: @escaping @Sendable (Element) throws -> [UInt8]) {
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.startSending(from: EncodedQueue(queue, encode: encode))
        }
    }

    /// Ends the request side of the stream (END_STREAM); the server's side goes on.
    public func finishSending() {
        let handler = self.handler
        channel.eventLoop.execute { handler.value.finishSending() }
    }

    /// Returns when the server ends the stream with OK; throws the ``RPCStatus`` it ended with
    /// otherwise, or `unavailable` for a connection that went away first.
    public func ended() async throws {
        try await withTaskCancellationHandler {
            try await ended.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

/// The client side of one gRPC stream, on stream 1 of its connection. Event-loop confined.
private final class ClientStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private static let streamID = HTTP2StreamID(1)

    private let headers: HPACKHeaders
    private let settings: RPCStreamClient.Settings
    private let onMessage: @Sendable (ByteBuffer) throws -> Void
    let ended: EventLoopPromise<Void>
    private var reader: GRPCResponseReader
    private var isEnded = false
    private var context: ChannelHandlerContext?
    private var started = false
    private var sendingFinished = false
    /// Bytes read since the last WINDOW_UPDATE.
    private var unacknowledged = 0
    /// Where ``pump()`` takes batches from, once ``startSending(from:)`` set it.
    private var source: EncodedQueue?
    /// A batch is written but not yet out: the next waits for it.
    private var writing = false
    private var keepalive: RepeatedTask?
    private var pingTimeout: Scheduled<Void>?
    private var goAway: String?

    init(headers: HPACKHeaders, settings: RPCStreamClient.Settings, onMessage: @escaping @Sendable (ByteBuffer) throws -> Void, ended: EventLoopPromise<Void>) {
        self.headers = headers
        self.settings = settings
        self.onMessage = onMessage
        self.ended = ended
        self.reader = GRPCResponseReader(maxMessageBytes: settings.maxMessageBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        start(context)
    }

    /// Opens the stream and widens the connection's window to the stream's.
    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        context.write(wrapOutboundOut(HTTP2Frame(streamID: Self.streamID, payload: .headers(.init(headers: headers)))), promise: nil)
        if settings.windowSize > 65535 {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: settings.windowSize - 65535))), promise: nil)
        }
        context.flush()
        if let interval = settings.keepaliveInterval {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            keepalive = context.eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) { _ in
                bound.value.ping()
            }
        }
    }

    private func ping() {
        guard pingTimeout == nil, let context else { return }
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 0x7670_6777), ack: false))), promise: nil)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let timeout = settings.keepaliveTimeout
        pingTimeout = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            bound.value.end(RPCStatus(.unavailable, "the gateway did not acknowledge a keepalive ping within \(timeout)"))
            bound.value.context?.close(promise: nil)
        }
    }

    func send(_ messages: [[UInt8]], promise: EventLoopPromise<Void>) {
        guard let context, !sendingFinished, !isEnded else {
            return promise.fail(RPCStatus(.unavailable, "the stream has ended"))
        }
        var buffer = context.channel.allocator.buffer(capacity: messages.reduce(0) { $0 + 5 + $1.count })
        for message in messages { buffer.writeEnvelope(flags: 0x00, message) }
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: Self.streamID, payload: .data(.init(data: .byteBuffer(buffer))))), promise: promise)
    }

    func startSending(from source: EncodedQueue) {
        self.source = source
        pump()
    }

    /// Writes the next batch of the queue unless one is still going out; asks the queue to
    /// wake it when there is nothing to take.
    private func pump() {
        guard let context, let source, !writing, !sendingFinished, !isEnded else { return }
        // Finished is looked at before the last take, so a message queued just before the
        // finish still goes out.
        guard let batch = source.takeBatch() ?? (source.isFinished ? source.takeBatch() : nil) else {
            if source.isFinished { return finishSending() }
            let (bound, loop) = (NIOLoopBound(self, eventLoop: context.eventLoop), context.eventLoop)
            return source.whenReady { loop.execute { bound.value.pump() } }
        }
        var buffer = context.channel.allocator.buffer(capacity: batch.reduce(0) { $0 + 5 + $1.count })
        for message in batch { buffer.writeEnvelope(flags: 0x00, message) }
        writing = true
        let written = context.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        written.futureResult.whenComplete { result in
            bound.value.writing = false
            if case .success = result { bound.value.pump() }
        }
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: Self.streamID, payload: .data(.init(data: .byteBuffer(buffer))))), promise: written)
    }

    func finishSending() {
        guard let context, !sendingFinished, !isEnded else { return }
        sendingFinished = true
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: Self.streamID, payload: .data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.streamID == .rootStream {
            return readConnectionFrame(frame, context)
        }
        guard frame.streamID == Self.streamID, !isEnded else { return }
        switch frame.payload {
        case .headers(let block):
            if let status = reader.readHeaders(block.headers, endStream: block.endStream) { end(status) }
        case .data(let data):
            guard case .byteBuffer(let bytes) = data.data else { return }
            giveBackWindow(bytes.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0), context)
            // The stream is the connection's only one: whatever ends it closes the connection.
            if let status = reader.readData(bytes, endStream: data.endStream, onMessage: onMessage) { fail(status, context) }
        case .rstStream(let code):
            end(RPCStatus(code == .cancel ? .cancelled : .unavailable, "the gateway reset the stream (\(code))"))
        default:
            break
        }
    }

    private func readConnectionFrame(_ frame: HTTP2Frame, _ context: ChannelHandlerContext) {
        switch frame.payload {
        case .ping(_, ack: true):
            pingTimeout?.cancel()
            pingTimeout = nil
        case .goAway(let lastStreamID, let code, let opaque):
            let detail = opaque.map { String(buffer: $0) }.map { " \($0.prefix(256))" } ?? ""
            goAway = "GOAWAY \(code)\(detail)"
            if lastStreamID < Self.streamID {
                end(RPCStatus(.unavailable, "the gateway sent \(goAway!) before serving the stream"))
            }
        default:
            break
        }
    }

    /// Hands back the window the stream and the connection spent, once half of it is used.
    private func giveBackWindow(_ bytes: Int, _ context: ChannelHandlerContext) {
        unacknowledged += bytes
        guard unacknowledged >= settings.windowSize / 2 else { return }
        let increment = unacknowledged
        unacknowledged = 0
        context.write(wrapOutboundOut(HTTP2Frame(streamID: Self.streamID, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent, closed.streamID == Self.streamID {
            end(RPCStatus(.unavailable, "the stream closed\(closed.reason.map { " (\($0))" } ?? "") before the gateway's trailers"))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(RPCStatus(.unavailable, "the connection to the gateway closed\(goAway.map { " after \($0)" } ?? "")"))
        keepalive?.cancel()
        pingTimeout?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(RPCStatus(.unavailable, "\(error)"), context)
    }

    /// Ends the stream with `status` and closes the connection.
    private func fail(_ status: RPCStatus, _ context: ChannelHandlerContext) {
        end(status)
        context.close(promise: nil)
    }

    private func end(_ status: RPCStatus) {
        guard !isEnded else { return }
        isEnded = true
        reader.end()
        if status.code == .ok { ended.succeed() } else { ended.fail(status) }
    }
}
