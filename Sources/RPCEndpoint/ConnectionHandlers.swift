import NIOCore
import NIOHTTP2

/// The first handler of a connection: lets the HTTP/2 preface through, answers an HTTP/1.x
/// request with a clear refusal instead of the bare connection error NIOHTTP2 would give (a
/// `curl http://…` without `--http2-prior-knowledge` then says what to do), and closes a
/// connection that sends no preface within the deadline.
///
/// NIOHTTP2 sends its SETTINGS when the connection becomes active; an HTTP/1 client would read
/// them as garbage before the refusal. So the rest of the pipeline learns that the connection
/// is active only once the client's preface has arrived. (Holding NIOHTTP2's writes back
/// instead broke its flow-control accounting: a client that stopped reading was then sent
/// more than its window and reset the stream.)
final class PrefaceGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private var seen = ByteBuffer()
    private let deadline: TimeAmount
    private var timer: Scheduled<Void>?
    private var passed = false
    private let refused: @Sendable (String) -> Void

    /// - Parameters:
    ///   - deadline: how long a new connection has to send the preface.
    ///   - refused: told the first line of every refused request, or why (for the log).
    init(deadline: TimeAmount, refused: @escaping @Sendable (String) -> Void) {
        self.deadline = deadline
        self.refused = refused
    }

    func channelActive(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let refused = self.refused
        let deadline = self.deadline
        timer = context.eventLoop.scheduleTask(in: deadline) {
            refused("no HTTP/2 preface within \(deadline.nanoseconds / 1_000_000) ms")
            bound.value.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !passed else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        seen.writeBuffer(&bytes)
        let prefix = Array(seen.readableBytesView.prefix(Self.preface.count))
        if prefix == Array(Self.preface.prefix(prefix.count)) {
            // The preface, or the start of it: once whole, hand everything on and step aside.
            guard prefix.count == Self.preface.count else { return }
            pass(context)
            return
        }
        guard let line = Self.http1RequestLine(seen) else {
            // Neither: NIOHTTP2 refuses it as a bad preface and closes the connection.
            pass(context)
            return
        }
        timer?.cancel()
        refused(line)
        let body = "this endpoint speaks HTTP/2 only: gRPC or Connect over h2c with prior knowledge (or h2 over TLS); with curl, add --http2-prior-knowledge\n"
        let response = "HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n" + body
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }

    private func pass(_ context: ChannelHandlerContext) {
        timer?.cancel()
        passed = true
        let buffered = seen
        seen = ByteBuffer()
        context.fireChannelActive()
        context.fireChannelRead(wrapInboundOut(buffered))
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }

    /// `GET /x HTTP/1.1` when the bytes so far hold an HTTP/1 request line.
    private static func http1RequestLine(_ bytes: ByteBuffer) -> String? {
        let view = bytes.readableBytesView.prefix(512)
        guard let end = view.firstIndex(of: UInt8(ascii: "\r")) ?? view.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let line = String(decoding: view[view.startIndex..<end], as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count == 3, parts[0].allSatisfy({ $0.isUppercase }), parts[2].hasPrefix("HTTP/1.") else { return nil }
        return line
    }
}

/// Ends connections whose peer misbehaves at the connection level:
/// - a connection error (a bad preface, garbage frames, a flood NIOHTTP2's limits catch):
///   NIOHTTP2 sends GOAWAY and reports it here, and the connection is closed (NIOHTTP2 leaves
///   that to the pipeline; stream errors only end their stream);
/// - a client that pings far more often than agreed (a misconfigured keepalive can cost a
///   server a ping per millisecond): two pings closer together than the minimum interval are a
///   strike each, and the third strike gets GOAWAY `ENHANCE_YOUR_CALM` with `too_many_pings`,
///   as gRPC servers do, and the connection closed. Like gRPC's servers, writing HEADERS or
///   DATA clears the strikes: grpc-go pings with its data to size its windows (BDP pings),
///   which is traffic, not keepalive.
final class ConnectionPolicing: ChannelInboundHandler, NIOHTTP2FrameDelegate {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let minimumInterval: TimeAmount
    private var lastPing: NIODeadline?
    private var strikes = 0
    private let sentAway: @Sendable () -> Void
    private let failed: @Sendable (any Error) -> Void

    /// - Parameters:
    ///   - sentAway: told when a client is sent away for its pings.
    ///   - failed: told the error that ends a connection (a TLS handshake, a protocol error).
    init(minimumInterval: TimeAmount, sentAway: @escaping @Sendable () -> Void, failed: @escaping @Sendable (any Error) -> Void) {
        self.minimumInterval = minimumInterval
        self.sentAway = sentAway
        self.failed = failed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if case .ping(_, ack: false) = frame.payload {
            let now = NIODeadline.now()
            if let lastPing, now - lastPing < minimumInterval { strikes += 1 }
            lastPing = now
            if strikes > 2 {
                sentAway()
                let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .enhanceYourCalm, opaqueData: ByteBuffer(string: "too_many_pings")))
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(wrapOutboundOut(goAway)).whenComplete { _ in bound.value.close(promise: nil) }
                return
            }
        }
        context.fireChannelRead(data)
    }

    /// NIOHTTP2 reports every frame the connection writes (on the event loop).
    func wroteFrame(_ frame: HTTP2Frame) {
        switch frame.payload {
        case .headers, .data:
            strikes = 0
            lastPing = nil
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamError { return }
        failed(error)
        context.close(promise: nil)
    }
}
