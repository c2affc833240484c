import AsyncPrimitives
public import Logging
// Public: the listening address is a NIO SocketAddress.
public import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/2 server that serves the methods of an ``RPCRouter`` over gRPC and Connect alike,
/// choosing the protocol per stream by its content type. HTTP/2 itself (flow control, HPACK,
/// SETTINGS, PING acks, GOAWAY) is swift-nio-http2's; this type adds the RPC framing, the
/// limits a public port needs, and a shutdown that ends whatever the peers do.
///
/// ```swift
/// let server = RPCServer(configuration: .init(address: .tcp(host: "0.0.0.0", port: 1537)), router: router, logger: logger)
/// try await server.run()   // until cancelled; beginGracefulShutdown() and closeConnections() end it
/// ```
public final class RPCServer: Sendable {
    public let configuration: Configuration
    private let router: RPCRouter
    private let logger: Logger
    private let connections: ConnectionRegistry
    private let refusals: RefusalLog
    private let state = Mutex(State())

    private struct State {
        var listener: (any Channel)?
        /// Nil until the server has bound its address, taken its in-memory listener, or failed.
        var started: Started?
        var bindWaiters: [CheckedContinuation<Started, Never>] = []
    }

    public init(configuration: Configuration, router: RPCRouter, logger: Logger) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
        self.connections = ConnectionRegistry(limit: configuration.maxConnections)
        self.refusals = RefusalLog(logger: logger, message: "refused a request on \(configuration.name)")
    }

    /// Binds and serves until the listener is shut down and every connection has closed, or
    /// until cancelled (then every connection is closed at once).
    public func run() async throws {
        let dispatcher = StreamDispatcher(router: router, maxMessageBytes: configuration.maxMessageBytes, logger: logger, refusals: refusals)
        if case .inMemory(let listener) = configuration.address {
            return await serve(listener, dispatcher)
        }
        let listener: NIOAsyncChannel<Connection, Never>
        do {
            let tls = try configuration.tls.map(Self.makeTLSContext)
            listener = try await bind(tls: tls)
        } catch {
            wakeBindWaiters(.failed)
            throw error
        }
        state.withLock { $0.listener = listener.channel }
        wakeBindWaiters(.serving(listener.channel.localAddress))
        try await withTaskCancellationHandler {
            try await listener.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        // On the connection's own loop: a stream it hands over is taken in the
                        // same loop turn, with no thread between (see `serve`).
                        // Never `executorPreference: nil` (see `serve`).
                        if case .accepted(let channel, _, _) = connection {
                            group.addTask(executorPreference: EventLoopTaskExecutor(channel.eventLoop)) { await Self.serve(connection, dispatcher) }
                        } else {
                            group.addTask { await Self.serve(connection, dispatcher) }
                        }
                    }
                }
            }
        } onCancel: {
            listener.channel.close(promise: nil)
            self.connections.closeAll()
        }
    }

    /// Serves the streams of an in-memory listener until it stops accepting and they have
    /// ended, or until cancelled (then they are cut).
    private func serve(_ listener: InMemoryListener, _ dispatcher: StreamDispatcher) async {
        wakeBindWaiters(.serving(nil))
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                for await stream in listener.streams {
                    group.addTask { await dispatcher.serve(stream, remoteAddress: listener.description) }
                }
            }
        } onCancel: {
            listener.stopAccepting()
            listener.closeAll()
        }
    }

    /// How a server's start went.
    private enum Started {
        /// Bound to its address (nil for an in-memory listener).
        case serving(SocketAddress?)
        case failed
    }

    private var started: Started {
        get async {
            await withCheckedContinuation { continuation in
                let known: Started? = state.withLock { state in
                    if state.started == nil { state.bindWaiters.append(continuation) }
                    return state.started
                }
                if let known { continuation.resume(returning: known) }
            }
        }
    }

    /// The address the server listens on once bound; nil if binding failed or the server
    /// takes its streams in memory.
    public var listeningAddress: SocketAddress? {
        get async {
            guard case .serving(let address) = await started else { return nil }
            return address
        }
    }

    /// Waits until the server has bound its address (or taken its in-memory listener): true
    /// then, false when binding failed.
    public var isServing: Bool {
        get async {
            guard case .serving = await started else { return false }
            return true
        }
    }

    /// Open connections right now.
    public var connectionCount: Int { connections.count }

    /// Stops accepting and sends every connection GOAWAY: streams in progress go on, new ones
    /// are refused, and each connection closes once its streams are done.
    public func beginGracefulShutdown() {
        state.withLock { $0.listener }?.close(promise: nil)
        if case .inMemory(let listener) = configuration.address { listener.stopAccepting() }
        connections.quiesceAll()
    }

    /// Closes every connection now (after a graceful shutdown's grace); returns how many were open.
    @discardableResult
    public func closeConnections() -> Int {
        guard case .inMemory(let listener) = configuration.address else { return connections.closeAll() }
        return listener.closeAll()
    }

    private func wakeBindWaiters(_ started: Started) {
        let waiters = state.withLock { state in
            state.started = started
            defer { state.bindWaiters = [] }
            return state.bindWaiters
        }
        for waiter in waiters { waiter.resume(returning: started) }
    }

    /// One accepted connection, as the child channel initializer leaves it.
    enum Connection: Sendable {
        case accepted(any Channel, MessageQueue<IncomingStream>, remoteAddress: String)
        /// Over the connection cap: closed at once.
        case refused(any Channel)
    }

    /// A new directory only this user can enter, beside `path` (short, so the socket path in
    /// it still fits a Unix socket's 107 bytes); nil when it cannot be made.
    private static func privateDirectory(beside path: String) -> String? {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        var template = Array("\(directory.isEmpty ? "" : directory)/.b-XXXXXX".utf8CString)
        guard template.count + 2 <= 108, mkdtemp(&template) != nil else { return nil }
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Loads the PEM files once, so a bad certificate fails the start, not each connection.
    private static func makeTLSContext(_ tls: Configuration.TLS) throws -> NIOSSLContext {
        do {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(tls.certificateChain).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.privateKey, format: .pem))
            )
            configuration.applicationProtocols = ["h2"]
            configuration.minimumTLSVersion = .tlsv12
            if let clientCA = tls.clientCA {
                configuration.certificateVerification = .noHostnameVerification
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw RPCServerError(message: "cannot load TLS from \(tls.certificateChain), \(tls.privateKey)\(tls.clientCA.map { " and client CA \($0)" } ?? ""): \(error); give PEM files this user can read")
        }
    }

    private func bind(tls: NIOSSLContext?) async throws -> NIOAsyncChannel<Connection, Never> {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                // EMFILE and friends: wait a moment instead of spinning on accept().
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler()) }
            }
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Connection> = { channel in
            channel.eventLoop.makeCompletedFuture { try self.configure(channel, tls: tls) }
        }
        switch configuration.address {
        case .tcp(let host, let port):
            return try await bootstrap.childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .bind(host: host, port: port, childChannelInitializer: initializer)
        case .unix(let path):
            guard let mode = configuration.unixSocketMode, let staging = Self.privateDirectory(beside: path) else {
                return try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false, childChannelInitializer: initializer)
            }
            defer { rmdir(staging) }
            let bound = staging + "/s"
            let listener = try await bootstrap.bind(unixDomainSocketPath: bound, cleanupExistingSocketFile: false, childChannelInitializer: initializer)
            guard chmod(bound, mode_t(mode)) == 0, rename(bound, path) == 0 else {
                let error = errno
                unlink(bound)
                try? await listener.channel.close()
                throw RPCServerError(message: "cannot put the socket in place at \(path): \(String(cString: strerror(error))) (errno \(error))")
            }
            return listener
        case .inMemory:
            preconditionFailure("an in-memory listener is served without binding")
        }
    }

    /// The pipeline of one connection: the HTTP/1 refusal, HTTP/2 with its connection manager
    /// (keepalive pings, idle close, GOAWAY on quiesce), ping policing, the ``StreamSorter`` that
    /// serves whole unary calls from frames, and the multiplexer that makes a stream channel for
    /// every other stream.
    private func configure(_ channel: any Channel, tls: NIOSSLContext?) throws -> Connection {
        let remote = Self.describe(channel.remoteAddress)
        guard connections.admit(channel) else {
            refusals.record(peer: remote, why: "\(configuration.maxConnections) connections are open, the limit")
            channel.close(promise: nil)
            return .refused(channel)
        }
        let sync = channel.pipeline.syncOperations
        let refusals = self.refusals
        if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls)) }
        try sync.addHandler(PrefaceGate(deadline: TimeAmount(configuration.idleTimeout)) { line in
            refusals.record(peer: remote, what: line, why: line.hasPrefix("no HTTP/2 preface") ? "silent connection" : "HTTP/1 request on an HTTP/2-only endpoint")
        })
        var http2 = NIOHTTP2Handler.Configuration()
        http2.connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: configuration.maxHeaderListSize),
            HTTP2Setting(parameter: .maxFrameSize, value: 1 << 14),
            HTTP2Setting(parameter: .initialWindowSize, value: configuration.windowSize),
        ]
        http2.stream.targetWindowSize = configuration.windowSize
        let manager = NIOHTTP2ServerConnectionManagementHandler(eventLoop: channel.eventLoop, configuration: .init(
            maxIdleTime: TimeAmount(configuration.idleTimeout),
            maxAge: nil,
            maxGraceTime: nil,
            keepalive: configuration.keepaliveInterval.map { .init(pingInterval: TimeAmount($0), ackTimeout: TimeAmount(configuration.keepaliveTimeout)) }
        ))
        let policing = ConnectionPolicing(
            minimumInterval: TimeAmount(configuration.minClientPingInterval),
            sentAway: { refusals.record(peer: remote, why: "pings more often than every \(self.configuration.minClientPingInterval): GOAWAY too_many_pings") },
            failed: { error in refusals.record(peer: remote, why: "connection ended: \(error)") }
        )
        // NIOHTTP2's multiplexer as a handler of its own (not inline in the connection handler),
        // so the sorter can sit in front of it; the connection manager and the policing then
        // learn of streams from the connection handler's events instead of a stream delegate.
        try sync.addHandler(NIOHTTP2Handler(mode: .server, frameDelegate: policing, connectionConfiguration: http2.connection, streamConfiguration: http2.stream))
        try sync.addHandler(manager)
        try sync.addHandler(policing)
        // A queue the connection's task drains (not an AsyncStream, which drops what it holds
        // when its reader is cancelled: a stream channel's async wrapper dropped unfinished
        // stops the process, and a dropped session would never end).
        let incoming = MessageQueue<IncomingStream>(capacity: .max)
        channel.closeFuture.whenComplete { _ in incoming.finish() }
        try sync.addHandler(StreamSorter(
            router: router, maxMessageBytes: configuration.maxMessageBytes, windowSize: configuration.windowSize,
            remoteAddress: remote, incoming: incoming
        ))
        try sync.addHandler(HTTP2StreamMultiplexer(
            mode: .server, channel: channel, targetWindowSize: configuration.windowSize,
            outboundBufferSizeHighWatermark: http2.stream.outboundBufferSizeHighWatermark,
            outboundBufferSizeLowWatermark: http2.stream.outboundBufferSizeLowWatermark
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                let asyncStream = try NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>(wrappingChannelSynchronously: stream)
                if !incoming.enqueue(.channel(asyncStream)) {
                    // The connection's task has stopped taking streams (it was cancelled and
                    // the connection is closing). The wrapper must be finished before it goes,
                    // and only its scoped `executeThenClose` does that: a task of its own,
                    // bounded by the stream's close.
                    Task { try? await asyncStream.executeThenClose { _, _ in } }
                }
            }
        })
        return .accepted(channel, incoming, remoteAddress: remote)
    }

    private static func serve(_ connection: Connection, _ dispatcher: StreamDispatcher) async {
        guard case .accepted(let channel, let incoming, let remote) = connection else { return }
        await withTaskCancellationHandler {
            // Ends when the connection closes (a protocol error, a reset, a GOAWAY done); the
            // streams still running end with it. This task runs on the connection's loop
            // (`run`), and so do a unary call's tasks, which inherit that: they start in the
            // loop turn that read the call, are resumed there by an answer arriving on the same
            // loop, and write their response without a hop. Every other stream's task (a
            // session's timers, a streaming handler) goes to the global pool.
            //
            // The loop is named for each unary call rather than inherited: with Swift 6.3.1,
            // `addTask(executorPreference: nil)` inherits the parent's preference in a debug
            // build but drops it in an optimised one, so a release gateway ran every unary
            // call on the global pool while the debug-built tests saw the loop.
            let loop = EventLoopTaskExecutor(channel.eventLoop)
            await withDiscardingTaskGroup { group in
                while let streams = await incoming.nextBatch() {
                    for stream in streams {
                        let executor: any TaskExecutor = if case .unary = stream { loop } else { globalConcurrentExecutor }
                        group.addTask(executorPreference: executor) { await dispatcher.serve(stream, remoteAddress: remote) }
                    }
                }
                // Cancelled: what was handed over is still served, in cancelled tasks, so each
                // ends as the connection closes (a stream channel is closed, a session sees its
                // input end) instead of being dropped.
                incoming.finish()
                for stream in incoming.takeBatch() ?? [] {
                    group.addTask { await dispatcher.serve(stream, remoteAddress: remote) }
                }
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    /// `ipv4:127.0.0.1:50123`, `ipv6:[::1]:50123`, `unix:/path`: the peer as logs and
    /// `ListClients` show it.
    static func describe(_ address: SocketAddress?) -> String {
        switch address {
        case .v4(let v4)?: "ipv4:\(v4.host):\(address?.port ?? 0)"
        case .v6(let v6)?: "ipv6:[\(v6.host)]:\(address?.port ?? 0)"
        case .unixDomainSocket?: "unix:\(address?.pathname ?? "")"
        case nil: "unknown"
        }
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// A server that cannot start (its TLS files).
public struct RPCServerError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}
