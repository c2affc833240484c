import AsyncPrimitives
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Serves one HTTP/2 stream: reads its HEADERS, chooses the protocol from the content type,
/// refuses what it cannot serve, runs the route's handler and ends the stream in the
/// caller's protocol.
struct StreamDispatcher: Sendable {
    let router: RPCRouter
    let maxMessageBytes: Int
    let logger: Logger
    let refusals: RefusalLog

    /// Serves a stream of a connection as ``StreamSorter`` passed it on.
    func serve(_ incoming: IncomingStream, remoteAddress: String) async {
        switch incoming {
        case .unary(let call): await serve(call, remoteAddress: remoteAddress)
        case .session(let call): call.responder.finish(await Self.run(under: call.context.deadline) { try await call.session.run() })
        case .channel(let stream): await serve(stream, remoteAddress: remoteAddress)
        }
    }

    /// A unary call read whole: the handler runs here, the response goes straight to the stream.
    private func serve(_ unary: UnaryCall, remoteAddress: String) async {
        let call = unary.call
        let context = RPCContext(
            method: call.route.method, wireProtocol: call.wireProtocol, remoteAddress: remoteAddress,
            deadline: call.timeout.map { .now + $0 }, headers: unary.head.headers
        )
        let responder = unary.responder
        let sink = ResponseSink(send: { responder.send($0) }, wireProtocol: call.wireProtocol, contentType: call.responseContentType, encoding: call.responseEncoding)
        let source = RequestSource(
            collected: unary.body, framing: call.wireProtocol == .connectUnary ? .wholeBody : .envelopes,
            encoding: call.requestEncoding, maxMessageBytes: maxMessageBytes
        )
        await sink.finish(await run(call.route, source, sink, call.codec, context))
    }

    func serve(_ stream: NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>, remoteAddress: String) async {
        // A stream that the client resets, or whose connection closes, ends here silently.
        try? await stream.executeThenClose { inbound, outbound in
            try await serve(frames: .channel(inbound.makeAsyncIterator()), send: { try await outbound.write(contentsOf: $0) }, remoteAddress: remoteAddress)
            // The last frames written may still wait for the client's flow-control window;
            // closing the channel now would reset the stream (CANCEL) and drop them. Both
            // sides have ended by now (or the stream was reset), so the channel closes by
            // itself once its last frame is out; a client that never opens its window is cut
            // after the bound.
            let channel = stream.channel
            let cut = channel.eventLoop.scheduleTask(in: TimeAmount(Self.lastFramesBound)) { channel.close(promise: nil) }
            try? await channel.closeFuture.get()
            cut.cancel()
        }
    }

    /// How long a stream whose handler is done may wait for its last frames to go out.
    static let lastFramesBound = Duration.seconds(10)

    /// Serves a stream of an ``InMemoryListener``.
    func serve(_ stream: InMemoryStream, remoteAddress: String) async {
        try? await serve(frames: .memory(stream.requests.makeAsyncIterator()), send: { try stream.respond($0) }, remoteAddress: remoteAddress)
        stream.serverFinished()
    }

    /// One stream, from its HEADERS to its end, whatever carries its frames.
    private func serve(frames: StreamFrames, send: @escaping @Sendable ([HTTP2Frame.FramePayload]) async throws -> Void, remoteAddress: String) async throws {
        var frames = frames
        guard case .headers(let first)? = try await frames.next() else { return }
        let head = RequestHead(headers: first.headers)
        let call: RequestHead.Call
        switch head.decide(router) {
        case .refuse(let refusal):
            refusals.record(peer: remoteAddress, what: "\(head.path) (\(head.headers.first(name: "content-type") ?? "no content type"))", why: refusal.reason)
            try await send(Self.frames(of: refusal))
            let rest = RequestSource(frames: frames, framing: .envelopes, encoding: .identity, maxMessageBytes: maxMessageBytes, inputEnded: first.endStream)
            if await !rest.drain() { try await send([Self.stopSending]) }
            return
        case .call(let decided):
            call = decided
        }
        let context = RPCContext(
            method: call.route.method, wireProtocol: call.wireProtocol, remoteAddress: remoteAddress,
            deadline: call.timeout.map { .now + $0 }, headers: head.headers
        )
        let sink = ResponseSink(send: send, wireProtocol: call.wireProtocol, contentType: call.responseContentType, encoding: call.responseEncoding)
        if let admission = call.route.admission {
            do throws(RPCStatus) {
                try admission(context)
            } catch {
                await sink.finish(error)
                let rest = RequestSource(frames: frames, framing: .envelopes, encoding: .identity, maxMessageBytes: maxMessageBytes, inputEnded: first.endStream)
                if await !rest.drain() { try await send([Self.stopSending]) }
                return
            }
        }
        let source = RequestSource(
            frames: frames, framing: call.wireProtocol == .connectUnary ? .wholeBody : .envelopes,
            encoding: call.requestEncoding, maxMessageBytes: maxMessageBytes, inputEnded: first.endStream
        )
        await sink.finish(await run(call.route, source, sink, call.codec, context))
        if await !source.drain() { try await send([Self.stopSending]) }
    }

    /// After a complete response to a request the client is still sending (one refused at
    /// its length prefix, say): RST_STREAM NO_ERROR tells it to stop without making the
    /// response an error (RFC 9113 §8.1). Closing the stream would reset it with CANCEL, and
    /// clients then drop the response.
    static let stopSending = HTTP2Frame.FramePayload.rstStream(.noError)

    /// Runs the handler, under the caller's deadline when it gave one; returns how the call ended.
    private func run(_ route: Route, _ source: RequestSource, _ sink: ResponseSink, _ codec: MessageCodec, _ context: RPCContext) async -> RPCStatus {
        await Self.run(under: context.deadline) { try await route.run(source, sink, codec, context) }
    }

    /// How `body` ended, as a status; `deadline_exceeded` (and `body` cancelled) at `deadline`.
    private static func run(under deadline: ContinuousClock.Instant?, _ body: @escaping @Sendable () async throws -> Void) async -> RPCStatus {
        guard let deadline else { return await status(body) }
        return await withDeadlineTimer(deadline, orElse: RPCStatus(.deadlineExceeded, "the call's deadline passed")) {
            await status(body)
        }
    }

    private static func status(_ body: () async throws -> Void) async -> RPCStatus {
        do {
            try await body()
            return .ok
        } catch let status as RPCStatus {
            return status
        } catch is CancellationError {
            return RPCStatus(.cancelled, "the call was cancelled")
        } catch {
            return RPCStatus(.internal, "\(error)")
        }
    }

    static func frames(of refusal: RequestHead.Refusal) -> [HTTP2Frame.FramePayload] {
        switch refusal {
        case .http(let status, let extra, let body, let contentType):
            var headers: HPACKHeaders = [":status": "\(status)", "content-type": contentType]
            for (name, value) in extra { headers.add(name: name, value: value) }
            return [.headers(.init(headers: headers)), .data(.init(data: .byteBuffer(ByteBuffer(string: body + "\n")), endStream: true))]
        case .grpc(let status, let extra):
            var headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc", "grpc-status": "\(status.code.rawValue)"]
            if !status.message.isEmpty { headers.add(name: "grpc-message", value: GRPCMessageEncoding.percentEncoded(status.message)) }
            for (name, value) in extra { headers.add(name: name, value: value) }
            return [.headers(.init(headers: headers, endStream: true))]
        case .connectStream(let status, let contentType):
            var body = ByteBuffer()
            body.writeEnvelope(flags: 0x02, Array(ConnectJSON.endOfStream(status).utf8))
            return [.headers(.init(headers: [":status": "200", "content-type": contentType])), .data(.init(data: .byteBuffer(body), endStream: true))]
        case .connectUnary(let status):
            return ResponseSink.connectUnaryError(status)
        }
    }
}
