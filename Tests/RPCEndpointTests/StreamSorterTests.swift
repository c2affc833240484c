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
        let incoming: AsyncStream<IncomingStream>
        var iterator: AsyncStream<IncomingStream>.Iterator

        init() throws {
            var router = RPCRouter()
            router.unary(StreamSorterTests.unaryMethod) { (request: Google_Protobuf_StringValue, _) in request }
            router.bidirectionalStreaming(StreamSorterTests.bidiMethod) { (_: RPCRequestStream<Google_Protobuf_StringValue>, _, _: RPCResponseWriter<Google_Protobuf_StringValue>) in }
            let (incoming, continuation) = AsyncStream.makeStream(of: IncomingStream.self)
            self.incoming = incoming
            self.iterator = incoming.makeAsyncIterator()
            try channel.pipeline.syncOperations.addHandler(StreamSorter(router: router, maxMessageBytes: 64, incoming: continuation))
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
        guard case .unary(let call)? = await harness.iterator.next() else {
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
        guard case .unary(let call)? = await harness.iterator.next() else {
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
}
