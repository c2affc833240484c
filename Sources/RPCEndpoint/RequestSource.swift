import NIOCore
import NIOHTTP2

/// One stream's request messages: DATA frames in, decoded (decompressed) message bytes out.
///
/// It owns the stream's frame iterator, which the dispatcher used for the HEADERS and then
/// hands to the handler; the two never read at the same time, which is why the unchecked
/// `Sendable` is sound. A unary call read whole by ``StreamSorter`` comes as its body instead,
/// with its input already ended.
final class RequestSource: @unchecked Sendable {
    enum Framing {
        /// gRPC and Connect streaming: length-prefixed envelopes.
        case envelopes
        /// Connect unary: the whole body is the message.
        case wholeBody
    }

    /// Nil for a body read whole.
    private var frames: StreamFrames?
    private var collectedBody: ByteBuffer?
    private var reader: EnvelopeReader
    private let framing: Framing
    private let encoding: MessageEncoding
    private let maxMessageBytes: Int
    private(set) var inputEnded: Bool
    private var bodyDelivered = false

    init(
        frames: StreamFrames?,
        framing: Framing,
        encoding: MessageEncoding,
        maxMessageBytes: Int,
        inputEnded: Bool
    ) {
        self.frames = frames
        self.framing = framing
        self.encoding = encoding
        self.maxMessageBytes = maxMessageBytes
        self.reader = EnvelopeReader(maxMessageBytes: maxMessageBytes)
        self.inputEnded = inputEnded
    }

    /// A request whose whole body was read already.
    convenience init(collected body: ByteBuffer, framing: Framing, encoding: MessageEncoding, maxMessageBytes: Int) {
        self.init(frames: nil, framing: framing, encoding: encoding, maxMessageBytes: maxMessageBytes, inputEnded: true)
        switch framing {
        case .envelopes: reader.append(body)
        case .wholeBody: collectedBody = body
        }
    }

    /// The next message, or nil once the client half-closed. Throws `RPCStatus` for a
    /// malformed or oversized message, and when the client resets the stream.
    func next() async throws -> [UInt8]? {
        switch framing {
        case .envelopes: return try await nextEnvelope()
        case .wholeBody: return try await wholeBody()
        }
    }

    private func nextEnvelope() async throws -> [UInt8]? {
        while true {
            switch try reader.nextMessage(encoding: encoding) {
            case .message(let bytes): return bytes
            case .endOfStream: return nil
            case nil: break
            }
            if inputEnded {
                if reader.hasPartialEnvelope { throw RPCStatus(.invalidArgument, "the request ended inside a message") }
                return nil
            }
            try await readFrame { reader.append($0) }
        }
    }

    private func wholeBody() async throws -> [UInt8]? {
        guard !bodyDelivered else { return nil }
        var body = collectedBody ?? ByteBuffer()
        collectedBody = nil
        while true {
            guard body.readableBytes <= maxMessageBytes else {
                throw RPCStatus(.resourceExhausted, "the request body is over the limit of \(maxMessageBytes) bytes")
            }
            if inputEnded { break }
            try await readFrame { bytes in body.writeImmutableBuffer(bytes) }
        }
        bodyDelivered = true
        let bytes = Array(body.readableBytesView)
        return encoding == .gzip ? try Gzip.decompress(bytes, limit: maxMessageBytes) : bytes
    }

    /// After the response: reads (and drops) what the client still sends, up to `limit` bytes
    /// and for at most `wait`, and says whether its request ended. A body a little over the
    /// limit is read to its end, so the client sees a clean answer; a client that goes on
    /// uploading is told to stop with RST_STREAM NO_ERROR by the caller (some clients then
    /// drop the answer they were sent).
    func drain(limit: Int = 8 << 20, wait: Duration = .seconds(1)) async -> Bool {
        guard !inputEnded else { return true }
        let deadline = ContinuousClock.now + wait
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                var drained = 0
                while !self.inputEnded && drained <= limit && ContinuousClock.now < deadline {
                    do { try await self.readFrame { drained += $0.readableBytes } } catch { return false }
                }
                return self.inputEnded
            }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                return false
            }
            let ended = await group.next() ?? false
            group.cancelAll()
            return ended || inputEnded
        }
    }

    /// Reads one frame; DATA goes to `consume`. A stream that closes or resets without
    /// END_STREAM is the client giving up.
    private func readFrame(_ consume: (ByteBuffer) -> Void) async throws {
        guard frames != nil else { throw RPCStatus(.cancelled, "the request ended") }
        let frame: HTTP2Frame.FramePayload?
        do {
            frame = try await frames!.next()
        } catch {
            throw RPCStatus(.cancelled, "the client reset the stream")
        }
        switch frame {
        case .data(let data):
            if case .byteBuffer(let bytes) = data.data { consume(bytes) }
            if data.endStream { inputEnded = true }
        case .headers(let headers):
            // Trailers from the client end its input.
            if headers.endStream { inputEnded = true }
        case nil:
            throw RPCStatus(.cancelled, "the client closed the stream before ending its request")
        default:
            break
        }
    }
}

/// Where a stream's frames come from: its HTTP/2 stream channel, or an ``InMemoryListener``'s
/// stream. An enum, not a protocol, so the socket path pays a switch and no existential.
enum StreamFrames {
    case channel(NIOAsyncChannelInboundStream<HTTP2Frame.FramePayload>.AsyncIterator)
    case memory(AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>.AsyncIterator)

    mutating func next() async throws -> HTTP2Frame.FramePayload? {
        switch self {
        case .channel(var frames):
            defer { self = .channel(frames) }
            return try await frames.next()
        case .memory(var frames):
            defer { self = .memory(frames) }
            return try await frames.next()
        }
    }
}
