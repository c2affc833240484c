import AsyncPrimitives
import NIOCore
import NIOHTTP2

/// A session stream's life, handed to its connection's task: the task runs the session and
/// ends the stream with how that went.
struct SessionCall: Sendable {
    let session: OpenSession
    let context: RPCContext
    let responder: SessionResponder
}

/// Ends a session stream with its run's status, in one hop to the connection's loop.
struct SessionResponder: Sendable {
    fileprivate let sorter: NIOLoopBound<StreamSorter>
    fileprivate let streamID: HTTP2StreamID

    func finish(_ status: RPCStatus) {
        let (sorter, streamID) = (sorter, streamID)
        sorter.eventLoop.execute { sorter.value.endSession(streamID, status) }
    }
}

/// One session stream as its connection serves it: the session, the request's envelopes
/// still being read, and how far the response has gone.
struct SessionStream {
    /// Nil for a stream refused at admission: answered, and its input read to its end.
    let session: OpenSession?
    let framing: ResponseFraming
    let requestEncoding: MessageEncoding
    var reader: EnvelopeReader
    var headersSent = false
    /// A batch is written but not yet out: the next waits for it.
    var writing = false
    /// The session was told its input ended.
    var inputDone = false
    /// The client's END_STREAM came.
    var clientEnded: Bool
    /// How the session's run ended: written once its queue is sent.
    var endStatus: RPCStatus?
    /// The end of the response (trailers, end-of-stream) is written.
    var ended = false
    /// Bytes read since the last WINDOW_UPDATE.
    var unacknowledged = 0
    /// Bytes read and dropped after the input was done.
    var dropped = 0
    var timers: [Scheduled<Void>] = []
}

/// Sessions (``RPCSession``) served at the connection's frames: each message is decoded and
/// handed to the session as its envelope completes, and the session's send queue is written
/// from the loop, one DATA frame per batch, the next batch once the last is out (so a client
/// that stops reading fills its window, then the session's queue, which refuses). NIOHTTP2
/// keeps the stream's state and outbound flow control; there is no stream channel, so the
/// stream's inbound window is given back here.
extension StreamSorter {
    /// After the response has ended, a client still sending is read (and dropped) for this
    /// long and this much before RST_STREAM NO_ERROR tells it to stop, as on the dispatcher's
    /// path, so a request a little over a limit still sees a clean answer.
    static let drainTime = TimeAmount.seconds(1)
    static let drainLimit = 8 << 20

    /// Opens a session for a new stream, or answers its refusal by the route's admission check.
    func openSession(
        _ id: HTTP2StreamID, _ call: RequestHead.Call, _ head: RequestHead, inputEnded: Bool,
        _ open: @Sendable (RPCContext, MessageCodec) -> OpenSession, _ context: ChannelHandlerContext
    ) {
        let rpcContext = RPCContext(
            method: call.route.method, wireProtocol: call.wireProtocol, remoteAddress: remoteAddress,
            deadline: call.timeout.map { .now + $0 }, headers: head.headers
        )
        let framing = ResponseFraming(wireProtocol: call.wireProtocol, contentType: call.responseContentType, encoding: call.responseEncoding)
        let reader = EnvelopeReader(maxMessageBytes: maxMessageBytes)
        if let admission = call.route.admission {
            do throws(RPCStatus) {
                try admission(rpcContext)
            } catch {
                var refused = SessionStream(session: nil, framing: framing, requestEncoding: call.requestEncoding, reader: reader, clientEnded: inputEnded)
                refused.inputDone = true
                sessions[id] = refused
                return writeSessionEnd(id, error)
            }
        }
        let session = open(rpcContext, call.codec)
        sessions[id] = SessionStream(session: session, framing: framing, requestEncoding: call.requestEncoding, reader: reader, clientEnded: inputEnded)
        let responder = SessionResponder(sorter: NIOLoopBound(self, eventLoop: context.eventLoop), streamID: id)
        guard incoming.enqueue(.session(SessionCall(session: session, context: rpcContext, responder: responder))) else {
            // The connection's task stopped taking streams (it is closing): nothing will run
            // the session, so it is ended before it has read a message.
            let closing = RPCStatus(.unavailable, "the server is closing the connection")
            endSessionInput(id, closing)
            return writeSessionEnd(id, closing)
        }
        if inputEnded { endSessionInput(id, nil) }
        pumpSession(id)
    }

    /// A frame of a session stream.
    func readSession(_ frame: HTTP2Frame, _ context: ChannelHandlerContext) {
        let id = frame.streamID
        switch frame.payload {
        case .data(let data):
            guard case .byteBuffer(let bytes) = data.data, sessions[id] != nil else { return }
            giveBackWindow(id, bytes.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0), context)
            if data.endStream { sessions[id]!.clientEnded = true }
            if sessions[id]!.inputDone {
                sessions[id]!.dropped += bytes.readableBytes
                if sessions[id]!.ended && sessions[id]!.dropped > Self.drainLimit { resetSession(id, .noError) }
                return
            }
            sessions[id]!.reader.append(bytes)
            deliverMessages(id, endOfInput: data.endStream)
        case .headers(let trailers) where trailers.endStream:
            guard sessions[id] != nil else { return }
            sessions[id]!.clientEnded = true
            deliverMessages(id, endOfInput: true)
        case .rstStream(let code):
            // The stream-closed event follows.
            endSessionInput(id, RPCStatus(.cancelled, "the client reset the stream (\(code))"))
        default:
            // WINDOW_UPDATE and PRIORITY are NIOHTTP2's; a HEADERS frame without END_STREAM
            // after the first is a protocol error it has refused already.
            break
        }
    }

    /// Hands the session every whole message read so far; ends its input at the client's
    /// end of stream or at the first message it cannot take.
    private func deliverMessages(_ id: HTTP2StreamID, endOfInput: Bool) {
        guard let stream = sessions[id], let session = stream.session, !stream.inputDone else { return }
        // The reader is taken out while the session runs (it does not call back into the
        // sorter: its sends reach the loop through `execute`).
        var reader = stream.reader
        sessions[id]!.reader = EnvelopeReader(maxMessageBytes: maxMessageBytes)
        var end: RPCStatus?? = nil
        do throws(RPCStatus) {
            reading: while let inbound = try reader.nextMessage(encoding: stream.requestEncoding) {
                switch inbound {
                case .message(let bytes): try session.receive(bytes)
                case .endOfStream:
                    end = .some(nil)
                    break reading
                }
            }
        } catch {
            end = .some(error)
        }
        sessions[id]?.reader = reader
        if end == nil && endOfInput {
            end = .some(reader.hasPartialEnvelope ? RPCStatus(.invalidArgument, "the request ended inside a message") : nil)
        }
        if let end { endSessionInput(id, end) }
    }

    private func endSessionInput(_ id: HTTP2StreamID, _ error: RPCStatus?) {
        guard let stream = sessions[id], !stream.inputDone else { return }
        sessions[id]!.inputDone = true
        stream.session?.inputEnded(error)
    }

    /// Hands back the window the stream spent, once half of it is used (the connection's is
    /// the multiplexer's, which sees the connection's window events).
    private func giveBackWindow(_ id: HTTP2StreamID, _ bytes: Int, _ context: ChannelHandlerContext) {
        sessions[id]!.unacknowledged += bytes
        guard sessions[id]!.unacknowledged >= windowSize / 2, !sessions[id]!.clientEnded else { return }
        let increment = sessions[id]!.unacknowledged
        sessions[id]!.unacknowledged = 0
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
    }

    /// The session's run ended: its queue is finished, sent, and then the end of the stream.
    func endSession(_ id: HTTP2StreamID, _ status: RPCStatus) {
        guard let stream = sessions[id], stream.endStatus == nil, !stream.ended else { return }
        sessions[id]!.endStatus = status
        stream.session?.outbound.finish()
        pumpSession(id)
    }

    /// Writes the session's next batch unless one is still going out; the end of the stream
    /// once the run has ended and its queue is sent; else asks the queue for a wake-up.
    func pumpSession(_ id: HTTP2StreamID) {
        guard let context, let stream = sessions[id], !stream.writing, !stream.ended else { return }
        guard let session = stream.session else { return }
        let outbound = session.outbound
        // Finished is looked at before the last take, so a message queued just before the
        // finish still goes out.
        if let batch = outbound.takeBatch() ?? (outbound.isFinished ? outbound.takeBatch() : nil) {
            let frames: [HTTP2Frame.FramePayload]
            do {
                frames = try stream.framing.frames(of: batch, first: !stream.headersSent, allocator: context.channel.allocator)
            } catch {
                // A response that cannot be compressed: the stream ends with why.
                let status = error as? RPCStatus ?? RPCStatus(.internal, "cannot frame a response: \(error)")
                endSessionInput(id, status)
                outbound.finish()
                return writeSessionEnd(id, status)
            }
            sessions[id]!.headersSent = true
            sessions[id]!.writing = true
            let written = context.eventLoop.makePromise(of: Void.self)
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            written.futureResult.whenComplete { result in
                guard bound.value.sessions[id] != nil else { return }
                bound.value.sessions[id]!.writing = false
                if case .success = result { bound.value.pumpSession(id) }
            }
            for (index, frame) in frames.enumerated() {
                context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: frame)), promise: index == frames.count - 1 ? written : nil)
            }
            flushSoon()
        } else if let status = stream.endStatus {
            writeSessionEnd(id, status)
        } else if !outbound.isFinished {
            let (bound, loop) = (NIOLoopBound(self, eventLoop: context.eventLoop), context.eventLoop)
            outbound.whenReady { loop.execute { bound.value.pumpSession(id) } }
        }
    }

    /// Writes the end of the stream with `status`. A client still sending is then read for
    /// ``drainTime`` and ``drainLimit`` bytes at most, and one that does not take the last
    /// frames (its window stays shut) is reset after ``StreamDispatcher/lastFramesBound``.
    private func writeSessionEnd(_ id: HTTP2StreamID, _ status: RPCStatus) {
        guard let context, let stream = sessions[id], !stream.ended else { return }
        let frames = stream.framing.endFrames(status, first: !stream.headersSent)
        sessions[id]!.ended = true
        sessions[id]!.headersSent = true
        for frame in frames { context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: frame)), promise: nil) }
        context.flush()
        // A client that had ended its side: the stream closed as the end went out.
        guard let stream = sessions[id] else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if !stream.clientEnded {
            sessions[id]!.timers.append(context.eventLoop.scheduleTask(in: Self.drainTime) {
                if let stream = bound.value.sessions[id], !stream.clientEnded { bound.value.resetSession(id, .noError) }
            })
        }
        sessions[id]!.timers.append(context.eventLoop.scheduleTask(in: TimeAmount(StreamDispatcher.lastFramesBound)) {
            if bound.value.sessions[id] != nil { bound.value.resetSession(id, .cancel) }
        })
    }

    /// RST_STREAM: after a complete answer, NO_ERROR tells the client to stop sending without
    /// making the answer an error (RFC 9113 §8.1).
    private func resetSession(_ id: HTTP2StreamID, _ code: HTTP2ErrorCode) {
        context?.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(code))), promise: nil)
    }

    /// The stream closed (both sides ended, a reset, the connection's end): the session's
    /// input ends, if it had not, and its run's end finds nothing to write.
    func sessionClosed(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?) {
        guard let stream = sessions.removeValue(forKey: id) else { return }
        for timer in stream.timers { timer.cancel() }
        if !stream.inputDone {
            stream.session?.inputEnded(RPCStatus(.unavailable, "the stream closed\(reason.map { " (\($0))" } ?? "") before the client ended it"))
        }
    }

    func closeAllSessions() {
        let closed = sessions
        sessions = [:]
        for stream in closed.values {
            for timer in stream.timers { timer.cancel() }
            if !stream.inputDone { stream.session?.inputEnded(RPCStatus(.unavailable, "the connection closed")) }
        }
    }
}
