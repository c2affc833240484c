public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
public import ServiceLifecycle

/// Serves `GET /metrics` on HOST:PORT over HTTP/1.1, for Prometheus to scrape: the smallest
/// HTTP server that does (swift-nio's HTTP/1 codec; no framework for one route). Anything
/// else is 404, a method other than GET or HEAD 405. At most 64 connections at once, each
/// closed after 30 s without a request. Stops at the graceful shutdown.
public final class MetricsServer: Service, Sendable {
    public let host: String
    public let port: Int
    private let registry: MetricsRegistry
    private let logger: Logger

    /// `address`: `HOST:PORT` (`[::1]:9464` for IPv6).
    public init(address: String, registry: MetricsRegistry, logger: Logger) throws {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw MetricsAddressError(address: address)
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw MetricsAddressError(address: address) }
        self.host = host
        self.port = port
        self.registry = registry
        self.logger = logger
    }

    public func run() async throws {
        let registry = self.registry
        let connections = ConnectionCount(limit: 64)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                guard connections.open() else { return channel.close() }
                channel.closeFuture.whenComplete { _ in connections.close() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(30)))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(registry: registry))
                }
            }
            .bind(host: host, port: port)
            .get()
        // The bound address, so a port of 0 is logged as the one the kernel chose.
        let bound = channel.localAddress.map { "\($0.ipAddress ?? host):\($0.port ?? port)" } ?? "\(host):\(port)"
        logger.info("serving metrics", metadata: ["address": "\(bound)", "path": "/metrics"])
        // Ends at the graceful shutdown (in a service group) or when cancelled.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await channel.closeFuture.get()
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

public struct MetricsAddressError: Error, CustomStringConvertible {
    public let address: String
    public var description: String { "metrics address '\(address)' is not HOST:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)" }
}

private final class ConnectionCount: Sendable {
    private let count = Mutex(0)
    private let limit: Int
    init(limit: Int) { self.limit = limit }
    func open() -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }
    func close() { count.withLock { $0 -= 1 } }
}

private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: MetricsRegistry
    private var head: HTTPRequestHead?

    init(registry: MetricsRegistry) { self.registry = registry }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break  // a scrape has no body; anything sent is dropped
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let status: HTTPResponseStatus
        var body: [UInt8]
        var headers = HTTPHeaders()
        if head.method != .GET && head.method != .HEAD {
            status = .methodNotAllowed
            headers.add(name: "allow", value: "GET, HEAD")
            body = Array("only GET /metrics is served\n".utf8)
        } else if path != "/metrics" {
            status = .notFound
            body = Array("not found; metrics are at /metrics\n".utf8)
        } else {
            status = .ok
            body = registry.exposition()
        }
        headers.add(name: "content-type", value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: "\(body.count)")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "connection", value: "close") }
        if head.method == .HEAD { body = [] }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil) }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            let channel = context.channel
            done.futureResult.whenComplete { (_: Result<Void, any Error>) in channel.close(promise: nil) }
        }
    }
}
