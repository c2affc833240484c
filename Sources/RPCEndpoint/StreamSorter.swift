import AsyncPrimitives
import NIOCore
import NIOHTTP2

/// A stream of a connection, as the endpoint serves it.
enum IncomingStream: Sendable {
    /// A unary call read whole from the connection's frames.
    case unary(UnaryCall)
    /// A session (``RPCSession``) served at the connection's frames: its run.
    case session(SessionCall)
    /// Any other stream, on an HTTP/2 stream channel of its own.
    case channel(NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>)
}

/// A unary call read whole: its decided route, headers and body, and where its answer goes.
struct UnaryCall: Sendable {
    let call: RequestHead.Call
    let head: RequestHead
    let body: ByteBuffer
    let responder: UnaryResponder
}

/// Writes a unary call's response frames on its stream, in one hop to the connection's loop.
struct UnaryResponder: Sendable {
    fileprivate let sorter: NIOLoopBound<StreamSorter>
    fileprivate let streamID: HTTP2StreamID

    func send(_ frames: [HTTP2Frame.FramePayload]) {
        let (sorter, streamID) = (sorter, streamID)
        if sorter.eventLoop.inEventLoop { return sorter.value.respond(on: streamID, frames) }
        sorter.eventLoop.execute { sorter.value.respond(on: streamID, frames) }
    }
}

/// Sits between NIOHTTP2's connection handler and its stream multiplexer, and decides per new
/// stream, from its HEADERS, who serves it.
///
/// A unary call without an admission check whose body arrives in the read that brings it
/// (nearly every admin call and health check) is collected here from the connection's frames
/// and answered with frames written on the connection: no stream channel is made for it.
/// Profiles of the admin socket showed NIOHTTP2's per-stream child channel (its pipeline,
/// activation, and the flushes passing through it) as the largest part of a call's CPU.
/// NIOHTTP2's connection handler still keeps every stream's state, flow control and limits;
/// this handler only keeps which streams it serves.
///
/// A bidirectional session (``RPCSession``, a worker's `RegisterGateway` stream) is served
/// here too, for its whole life (`StreamSorter+Sessions.swift`): its messages are handed to
/// it as they are read, and what it queues is written from the loop.
///
/// Every other stream — other streaming methods, refusals, unary calls with an admission
/// check, and a unary body that goes on past its first read (a slow or large upload) — is
/// passed to the multiplexer, with the frames and stream events held so far replayed in
/// their order, so the stream channel sees the stream from its first frame as if nothing had
/// been in between.
///
/// Event-loop confined; ``UnaryResponder`` is the one way in from other threads.
final class StreamSorter: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// What a collected stream has read so far, for replaying to the multiplexer.
    private enum Held {
        case frame(HTTP2Frame)
        case event(Any)
    }

    private struct Collecting {
        let call: RequestHead.Call
        let head: RequestHead
        var held: [Held]
        var body: ByteBuffer
    }

    private let router: RPCRouter
    let maxMessageBytes: Int
    /// The stream window the connection announced, given back by sessions as they read.
    let windowSize: Int
    let remoteAddress: String
    /// Where the connection's task takes the streams it serves from.
    let incoming: MessageQueue<IncomingStream>
    private(set) var context: ChannelHandlerContext?
    /// Client streams have increasing ids (NIOHTTP2 refuses any other order), so a HEADERS
    /// frame above this id opens a stream and any other is a known stream's trailers.
    private var highestStreamID = HTTP2StreamID(0)
    private var collecting: [HTTP2StreamID: Collecting] = [:]
    /// Unary calls handed to their handler, until their stream closes.
    private var serving: Set<HTTP2StreamID> = []
    /// Session streams, until they close.
    var sessions: [HTTP2StreamID: SessionStream] = [:]
    /// A flush is queued on the loop for what was written since the last one.
    private var flushQueued = false

    init(router: RPCRouter, maxMessageBytes: Int, windowSize: Int, remoteAddress: String, incoming: MessageQueue<IncomingStream>) {
        self.router = router
        self.maxMessageBytes = maxMessageBytes
        self.windowSize = windowSize
        self.remoteAddress = remoteAddress
        self.incoming = incoming
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let id = frame.streamID
        if serving.contains(id) {
            // The request has ended; what the client sends now (a window update, a reset) is
            // NIOHTTP2's to account for, and a reset's stream-closed event follows.
            return
        }
        if var stream = collecting.removeValue(forKey: id) {
            return collect(frame, into: &stream, context)
        }
        if sessions[id] != nil {
            return readSession(frame, context)
        }
        guard id > highestStreamID, case .headers(let headers) = frame.payload else {
            // The root stream, PRIORITY, and the frames of streams the multiplexer serves.
            return context.fireChannelRead(data)
        }
        highestStreamID = id
        let head = RequestHead(headers: headers.headers)
        guard case .call(let call) = head.decide(router) else {
            return context.fireChannelRead(data)
        }
        if let open = call.route.session {
            return openSession(id, call, head, inputEnded: headers.endStream, open, context)
        }
        guard call.route.method.kind == .unary, call.route.admission == nil else {
            return context.fireChannelRead(data)
        }
        var stream = Collecting(call: call, head: head, held: [.frame(frame)], body: ByteBuffer())
        if headers.endStream {
            serve(id, stream, context)
        } else {
            // HEADERS alone come in a read of their own often enough: wait for the body's
            // first frame before deciding (a client that stalls there ends the stream itself,
            // by its own deadline, as gRPC and Connect clients do).
            stream.held.reserveCapacity(2)
            collecting[id] = stream
        }
    }

    private func collect(_ frame: HTTP2Frame, into stream: inout Collecting, _ context: ChannelHandlerContext) {
        stream.held.append(.frame(frame))
        switch frame.payload {
        case .data(let data):
            // The envelope's 5-byte prefix rides on top of the message's own limit.
            guard case .byteBuffer(let bytes) = data.data, stream.body.readableBytes + bytes.readableBytes <= maxMessageBytes + 5 else {
                return handOver(stream, context)
            }
            stream.body.writeImmutableBuffer(bytes)
            if data.endStream {
                serve(frame.streamID, stream, context)
            } else {
                collecting[frame.streamID] = stream
            }
        case .headers(let trailers) where trailers.endStream:
            serve(frame.streamID, stream, context)
        case .windowUpdate:
            collecting[frame.streamID] = stream
        case .rstStream:
            // The client gave up before the body ended: nothing to serve (its stream-closed
            // event follows and is dropped, as this stream is no longer known).
            return
        default:
            handOver(stream, context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        let id: HTTP2StreamID
        switch event {
        case let created as NIOHTTP2StreamCreatedEvent: id = created.streamID
        case let closed as StreamClosedEvent: id = closed.streamID
        case let window as NIOHTTP2WindowUpdatedEvent: id = window.streamID
        default: return context.fireUserInboundEventTriggered(event)
        }
        if id != .rootStream, collecting[id] != nil {
            if event is StreamClosedEvent {
                collecting[id] = nil
            } else {
                collecting[id]?.held.append(.event(event))
            }
        } else if id != .rootStream, serving.contains(id) {
            if event is StreamClosedEvent { serving.remove(id) }
        } else if id != .rootStream, sessions[id] != nil {
            if let closed = event as? StreamClosedEvent { sessionClosed(id, reason: closed.reason) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A body that began in this read and goes on after it is a slow or large upload: the
        // stream channel's reader (with its limits, deadline and drain) takes it from here.
        if !collecting.isEmpty {
            for (id, stream) in collecting where stream.held.contains(where: Self.isData) {
                collecting[id] = nil
                handOver(stream, context)
            }
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        collecting = [:]
        serving = []
        closeAllSessions()
        context.fireChannelInactive()
    }

    private static func isData(_ held: Held) -> Bool {
        if case .frame(let frame) = held, case .data = frame.payload { return true }
        return false
    }

    private func serve(_ id: HTTP2StreamID, _ stream: Collecting, _ context: ChannelHandlerContext) {
        serving.insert(id)
        let responder = UnaryResponder(sorter: NIOLoopBound(self, eventLoop: context.eventLoop), streamID: id)
        // Refused only once the connection's task stopped taking streams: the connection is
        // closing, and the call with it.
        incoming.enqueue(.unary(UnaryCall(call: stream.call, head: stream.head, body: stream.body, responder: responder)))
    }

    /// Passes a stream to the multiplexer: what it read so far, in order.
    private func handOver(_ stream: Collecting, _ context: ChannelHandlerContext) {
        for held in stream.held {
            switch held {
            case .frame(let frame): context.fireChannelRead(wrapInboundOut(frame))
            case .event(let event): context.fireUserInboundEventTriggered(event)
            }
        }
    }

    /// Writes a unary call's frames on its stream and flushes, unless the stream has closed
    /// meanwhile (the client reset it, or the connection went).
    fileprivate func respond(on id: HTTP2StreamID, _ frames: [HTTP2Frame.FramePayload]) {
        guard serving.contains(id), let context else { return }
        for frame in frames {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: frame)), promise: nil)
        }
        flushSoon()
    }

    /// Flushes once the loop has run what is queued on it now: the answers that become ready
    /// together (under load, many per loop turn) go out in one `writev`, and a client reads
    /// them in one read.
    func flushSoon() {
        guard !flushQueued, let context else { return }
        flushQueued = true
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            bound.value.flushQueued = false
            bound.value.context?.flush()
        }
    }
}
