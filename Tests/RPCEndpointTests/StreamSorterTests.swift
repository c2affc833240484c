import AsyncPrimitives
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
@testable import RPCEndpoint
import SwiftProtobuf
import Testing

/// ``StreamSorter`` on an embedded channel: frames and stream events go in as NIOHTTP2's
/// connection handler delivers them, and a recorder behind the sorter stands where the
/// multiplexer is.
@Suite("Stream sorting in front of the multiplexer")
struct StreamSorterTests {
    static let unaryMethod = RPCMethod(service: "test.v1.Service", name: "Unary", kind: .unary)
    static let bidiMethod = RPCMethod(service: "test.v1.Service", name: "Bidi", kind: .bidirectionalStreaming)
    static let sessionMethod = RPCMethod(service: "test.v1.Service", name: "Session", kind: .bidirectionalStreaming)
    static let guardedSessionMethod = RPCMethod(service: "test.v1.Service", name: "GuardedSession", kind: .bidirectionalStreaming)

    /// Echoes every message; its run ends with the client's input.
    final class EchoSession: RPCSession {
        let outbound = MessageQueue<Google_Protobuf_StringValue>(capacity: 16)
        private let ended = FirstOutcome<RPCStatus?>()
        func receive(_ message: Google_Protobuf_StringValue) throws(RPCStatus) { outbound.enqueue(message) }
        func inputEnded(_ error: RPCStatus?) { ended.decide(error) }
        func run() async throws { if let error = await ended.wait() { throw error } }
    }

    /// What reached the handler after the sorter, in order.
    final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame
        enum Seen: Equatable {
            case frame(HTTP2StreamID, String)
            case created(HTTP2StreamID)
            case closed(HTTP2StreamID)
        }
        var seen: [Seen] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            let kind = switch frame.payload {
            case .headers(let headers): headers.endStream ? "headers+end" : "headers"
            case .data(let data): data.endStream ? "data+end" : "data"
            case .ping: "ping"
            default: "other"
            }
            seen.append(.frame(frame.streamID, kind))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let created = event as? NIOHTTP2StreamCreatedEvent { seen.append(.created(created.streamID)) }
            if let closed = event as? StreamClosedEvent { seen.append(.closed(closed.streamID)) }
        }
    }

    struct Harness {
        let channel = EmbeddedChannel()
        let recorder = Recorder()
        let incoming = MessageQueue<IncomingStream>(capacity: .max)
        /// Streams taken from `incoming` but not yet looked at.
        var taken: [IncomingStream] = []

        init() throws {
            var router = RPCRouter()
            router.unary(StreamSorterTests.unaryMethod) { (request: Google_Protobuf_StringValue, _) in request }
            router.bidirectionalStreaming(StreamSorterTests.bidiMethod) { (_: RPCRequestStream<Google_Protobuf_StringValue>, _, _: RPCResponseWriter<Google_Protobuf_StringValue>) in }
            router.bidirectionalSession(StreamSorterTests.sessionMethod) { _ in EchoSession() }
            router.bidirectionalSession(StreamSorterTests.guardedSessionMethod, admission: { (_) throws(RPCStatus) in
                throw RPCStatus(.unauthenticated, "no secret")
            }) { _ in EchoSession() }
            try channel.pipeline.syncOperations.addHandler(StreamSorter(router: router, maxMessageBytes: 64, windowSize: 65535, remoteAddress: "embedded", incoming: incoming))
            try channel.pipeline.syncOperations.addHandler(recorder)
        }

        /// One frame of a read; the read ends at ``readComplete()``.
        func read(_ id: Int, _ payload: HTTP2Frame.FramePayload) throws {
            channel.pipeline.syncOperations.fireChannelRead(NIOAny(HTTP2Frame(streamID: HTTP2StreamID(id), payload: payload)))
        }

        func event(_ event: any Sendable) {
            channel.pipeline.fireUserInboundEventTriggered(event)
        }

        func readComplete() {
            channel.pipeline.fireChannelReadComplete()
        }

        func created(_ id: Int) -> NIOHTTP2StreamCreatedEvent {
            NIOHTTP2StreamCreatedEvent(streamID: HTTP2StreamID(id), localInitialWindowSize: 65535, remoteInitialWindowSize: 65535)
        }

        /// The next stream the sorter handed to the connection's task.
        mutating func nextStream() async -> IncomingStream? {
            if taken.isEmpty { taken = await incoming.nextBatch() ?? [] }
            return taken.isEmpty ? nil : taken.removeFirst()
        }

        func written() throws -> [HTTP2Frame] {
            channel.embeddedEventLoop.run()
            var frames: [HTTP2Frame] = []
            while let frame = try channel.readOutbound(as: HTTP2Frame.self) { frames.append(frame) }
            return frames
        }
    }

    static func headers(_ method: RPCMethod, endStream: Bool = false) -> HTTP2Frame.FramePayload {
        .headers(.init(headers: [":method": "POST", ":path": method.path, ":scheme": "http", "content-type": "application/grpc"], endStream: endStream))
    }

    static func data(_ bytes: String, endStream: Bool = false) -> HTTP2Frame.FramePayload {
        .data(.init(data: .byteBuffer(ByteBuffer(string: bytes)), endStream: endStream))
    }

    @Test("a unary call whole in one read is served from its frames: nothing reaches the multiplexer, and its answer is written on its stream until the stream closes")
    func wholeUnaryCallIsServedHere() async throws {
        var harness = try Harness()
        try harness.read(1, Self.headers(Self.unaryMethod))
        try harness.read(1, Self.data("abc", endStream: true))
        harness.event(harness.created(1))
        harness.readComplete()
        guard case .unary(let call)? = await harness.nextStream() else {
            Issue.record("expected a unary call")
            return
        }
        #expect(call.body == ByteBuffer(string: "abc"))
        #expect(call.call.route.method == Self.unaryMethod)
        #expect(harness.recorder.seen.isEmpty)

        call.responder.send([.headers(.init(headers: [":status": "200"])), Self.data("answer", endStream: true)])
        let written = try harness.written()
        #expect(written.map(\.streamID) == [HTTP2StreamID(1), HTTP2StreamID(1)])
        guard written.count == 2, case .data(let body) = written[1].payload, case .byteBuffer(let bytes) = body.data else {
            Issue.record("expected headers and data, got \(written)")
            return
        }
        #expect(bytes == ByteBuffer(string: "answer"))

        // Once its stream has closed (answered, or reset by the client), nothing more is written.
        harness.event(StreamClosedEvent(streamID: 1, reason: nil))
        call.responder.send([Self.data("late", endStream: true)])
        #expect(try harness.written().isEmpty)
        #expect(harness.recorder.seen.isEmpty)
        _ = try harness.channel.finish()
    }

    @Test("a streaming call, and a unary body that goes on past its first read, reach the multiplexer with every frame and event in order; a known stream's frames and the root stream pass through")
    func otherStreamsReachTheMultiplexerInOrder() throws {
        let harness = try Harness()
        try harness.read(1, Self.headers(Self.bidiMethod))
        harness.event(harness.created(1))
        harness.readComplete()
        #expect(harness.recorder.seen == [.frame(1, "headers"), .created(1)])

        // A unary body that begins in this read and does not end in it is handed over at the
        // read's end, with what was held, in the order it came.
        try harness.read(3, Self.headers(Self.unaryMethod))
        harness.event(harness.created(3))
        try harness.read(3, Self.data("ab"))
        #expect(harness.recorder.seen.count == 2)
        harness.readComplete()
        try harness.read(3, Self.data("c", endStream: true))
        try harness.read(1, Self.headers(Self.bidiMethod, endStream: true))
        try harness.read(0, .ping(HTTP2PingData(withInteger: 7), ack: false))
        harness.event(StreamClosedEvent(streamID: 3, reason: nil))
        harness.readComplete()
        #expect(harness.recorder.seen == [
            .frame(1, "headers"), .created(1),
            .frame(3, "headers"), .created(3), .frame(3, "data"),
            .frame(3, "data+end"), .frame(1, "headers+end"), .frame(0, "ping"), .closed(3),
        ])
        _ = try harness.channel.finish()
    }

    @Test("a unary body over the message limit is handed to the multiplexer at once, to be refused there")
    func oversizedBodyIsHandedOver() throws {
        let harness = try Harness()
        try harness.read(1, Self.headers(Self.unaryMethod))
        try harness.read(1, Self.data(String(repeating: "x", count: 100), endStream: true))
        harness.readComplete()
        #expect(harness.recorder.seen == [.frame(1, "headers"), .frame(1, "data+end")])
        _ = try harness.channel.finish()
    }

    @Test("HEADERS alone in a read wait for the body's first frame; a client reset before the body ends leaves nothing behind")
    func headersAloneWaitForTheBody() async throws {
        var harness = try Harness()
        try harness.read(1, Self.headers(Self.unaryMethod))
        harness.event(harness.created(1))
        harness.readComplete()
        try harness.read(1, Self.data("abc", endStream: true))
        harness.readComplete()
        guard case .unary(let call)? = await harness.nextStream() else {
            Issue.record("expected a unary call")
            return
        }
        #expect(call.body == ByteBuffer(string: "abc"))

        try harness.read(3, Self.headers(Self.unaryMethod))
        try harness.read(3, .rstStream(.cancel))
        harness.event(StreamClosedEvent(streamID: 3, reason: .cancel))
        harness.readComplete()
        #expect(harness.recorder.seen == [.closed(3)])
        _ = try harness.channel.finish()
    }

    static func envelopes(_ texts: [String]) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for text in texts { buffer.writeEnvelope(flags: 0, try Google_Protobuf_StringValue(text).serializedBytes()) }
        return buffer
    }

    /// The messages in DATA frames written on a stream, and whether the trailers said OK.
    static func response(_ frames: [HTTP2Frame]) throws -> (messages: [String], status: String?) {
        var reader = EnvelopeReader(maxMessageBytes: 1 << 20)
        var status: String?
        for frame in frames {
            switch frame.payload {
            case .data(let data): if case .byteBuffer(let bytes) = data.data { reader.append(bytes) }
            case .headers(let headers): status = headers.headers.first(name: "grpc-status") ?? status
            default: break
            }
        }
        var messages: [String] = []
        while let envelope = try reader.next() {
            messages.append(try Google_Protobuf_StringValue(serializedBytes: Array(envelope.payload.readableBytesView)).value)
        }
        return (messages, status)
    }

    @Test("a session is served at the frames: each message reaches it as its envelope completes, even split across frames; its queue is written on the stream, then the end once its run is over; nothing reaches the multiplexer")
    func sessionIsServedAtTheFrames() async throws {
        var harness = try Harness()
        try harness.read(1, Self.headers(Self.sessionMethod))
        harness.event(harness.created(1))
        var bytes = try Self.envelopes(["one", "two"])
        let head = bytes.readSlice(length: 4)!
        try harness.read(1, .data(.init(data: .byteBuffer(head))))
        harness.readComplete()
        try harness.read(1, .data(.init(data: .byteBuffer(bytes))))
        harness.readComplete()
        guard case .session(let call)? = await harness.nextStream() else {
            Issue.record("expected a session")
            return
        }
        let echoed = try Self.response(try harness.written())
        #expect(echoed.messages == ["one", "two"])
        #expect(echoed.status == nil, "no trailers while the session runs")

        // The client ends its side: the run returns, and the connection's task ends the stream.
        try harness.read(1, .data(.init(data: .byteBuffer(try Self.envelopes(["three"])), endStream: true)))
        harness.readComplete()
        call.responder.finish(await Self.status { try await call.session.run() })
        let end = try Self.response(try harness.written())
        #expect(end.messages == ["three"], "what was queued goes out before the end")
        #expect(end.status == "0")
        harness.event(StreamClosedEvent(streamID: 1, reason: nil))
        #expect(harness.recorder.seen.isEmpty)
        _ = try harness.channel.finish()
    }

    @Test("a session refused by its admission check is answered at once in the caller's protocol, and no session is opened")
    func refusedSessionIsAnsweredAtOnce() throws {
        let harness = try Harness()
        try harness.read(1, Self.headers(Self.guardedSessionMethod))
        harness.readComplete()
        let written = try harness.written()
        #expect(written.count == 1)
        guard case .headers(let trailers)? = written.first?.payload else {
            Issue.record("expected trailers-only, got \(written)")
            return
        }
        #expect(trailers.endStream && trailers.headers.first(name: "grpc-status") == "16")
        #expect(trailers.headers.first(name: "grpc-message") == "no secret")
        #expect(harness.recorder.seen.isEmpty)
        _ = try harness.channel.finish()
    }

    static func status(_ body: () async throws -> Void) async -> RPCStatus {
        do {
            try await body()
            return .ok
        } catch {
            return error as? RPCStatus ?? RPCStatus(.internal, "\(error)")
        }
    }
}
