import NIOCore
import NIOHTTP2

/// The first handler of every HTTP/2 stream: it decides from the stream's first frames how the
/// stream is served.
///
/// A unary call whose body arrives in one read (nearly every admin call and health check) is collected here, on the event loop, and served without an
/// `NIOAsyncChannel`: one task runs the handler and the response is written in one hop back
/// to the loop. Measured on the admin socket, the async channel's setup, its inbound and
/// outbound state machines and `executeThenClose` were a sizeable part of a call's CPU.
/// Everything else — streaming methods, refusals, a body that spans reads or is over the
/// limit, an admission check, an unexpected frame — is handed to an `NIOAsyncChannel` with
/// the frames seen so far passed on to it, so ``StreamDispatcher`` serves it exactly as it
/// would have from the start.
///
/// Event-loop confined; the one cross-thread member is ``start``, a future.
final class StreamStart: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload

    /// How the stream is served.
    enum Start: Sendable {
        case unary(CollectedCall)
        case stream(NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>)
        /// The stream ended before anything was decided.
        case closed
    }

    /// A unary call read whole: its decided route, headers and body, and the stream to
    /// answer on.
    struct CollectedCall: Sendable {
        let call: RequestHead.Call
        let head: RequestHead
        let body: ByteBuffer
        let stream: any Channel
    }

    private enum State {
        case waiting
        case collecting(RequestHead.Call, RequestHead, frames: [HTTP2Frame.FramePayload], body: ByteBuffer)
        case decided
    }

    private let router: RPCRouter
    private let maxMessageBytes: Int
    private let promise: EventLoopPromise<Start>
    private var state = State.waiting

    /// Completed once the stream's first frames have decided how it is served.
    var start: EventLoopFuture<Start> { promise.futureResult }

    init(stream: any Channel, router: RPCRouter, maxMessageBytes: Int) {
        self.router = router
        self.maxMessageBytes = maxMessageBytes
        self.promise = stream.eventLoop.makePromise(of: Start.self)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .decided:
            context.fireChannelRead(data)
        case .waiting:
            let frame = unwrapInboundIn(data)
            guard case .headers(let headers) = frame else { return handOver(context, [frame]) }
            let head = RequestHead(headers: headers.headers)
            guard case .call(let call) = head.decide(router), call.route.method.kind == .unary, call.route.admission == nil else {
                return handOver(context, [frame])
            }
            if headers.endStream {
                decide(.unary(CollectedCall(call: call, head: head, body: ByteBuffer(), stream: context.channel)))
            } else {
                state = .collecting(call, head, frames: [frame], body: ByteBuffer())
            }
        case .collecting(let call, let head, var frames, var body):
            let frame = unwrapInboundIn(data)
            frames.append(frame)
            switch frame {
            case .data(let data):
                // The envelope's 5-byte prefix rides on top of the message's own limit.
                guard case .byteBuffer(let bytes) = data.data, body.readableBytes + bytes.readableBytes <= maxMessageBytes + 5 else {
                    return handOver(context, frames)
                }
                body.writeImmutableBuffer(bytes)
                if data.endStream {
                    decide(.unary(CollectedCall(call: call, head: head, body: body, stream: context.channel)))
                } else {
                    state = .collecting(call, head, frames: frames, body: body)
                }
            case .headers(let trailers) where trailers.endStream:
                decide(.unary(CollectedCall(call: call, head: head, body: body, stream: context.channel)))
            default:
                handOver(context, frames)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A body that began in this read and goes on after it is a slow or large upload: the
        // dispatcher's reader (with its limits, deadline and drain) takes it from here. HEADERS
        // alone come in a read of their own (the stream channel is made for them), so the
        // body's first frame is waited for; a client that stalls there ends the stream itself
        // (its own deadline resets it, as gRPC and Connect clients do).
        if case .collecting(_, _, let frames, _) = state, frames.count > 1 { handOver(context, frames) }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        decideIfOpen(.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .decided = state {
            context.fireErrorCaught(error)
        } else {
            // A reset before anything was decided: nothing to serve.
            decide(.closed)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        decideIfOpen(.closed)
    }

    private func decideIfOpen(_ start: Start) {
        if case .decided = state { return }
        decide(start)
    }

    private func decide(_ start: Start) {
        state = .decided
        promise.succeed(start)
    }

    /// Wraps the stream in an `NIOAsyncChannel` (after this handler) and passes on the frames
    /// read so far, so the async channel's reader sees the stream from its first frame.
    private func handOver(_ context: ChannelHandlerContext, _ frames: [HTTP2Frame.FramePayload]) {
        do {
            let stream = try NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>(wrappingChannelSynchronously: context.channel)
            decide(.stream(stream))
        } catch {
            decide(.closed)
            context.close(promise: nil)
            return
        }
        for frame in frames { context.fireChannelRead(wrapInboundOut(frame)) }
    }
}
