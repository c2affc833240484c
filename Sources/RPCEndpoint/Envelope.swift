// Package: the client transport of RPCInMemory frames its messages with the same reader.
package import NIOCore

/// The content codings a message may travel in.
enum MessageEncoding: String, Sendable {
    case identity
    case gzip

    /// The coding a header names; nil for one this endpoint does not speak.
    init?(header: String?) {
        switch header?.lowercased() {
        case nil, "", "identity": self = .identity
        case "gzip": self = .gzip
        default: return nil
        }
    }

    /// Gzip when a client's accept list (`gzip, deflate`) names it.
    static func preferred(fromAcceptList list: String?) -> MessageEncoding {
        guard let list else { return .identity }
        let accepted = list.split(separator: ",").map { $0.trimmingSpaces.lowercased() }
        return accepted.contains("gzip") ? .gzip : .identity
    }

    /// Responses smaller than this go uncompressed even when the client accepts gzip: the
    /// flag per message allows it, and compressing a 50-byte answer only costs CPU.
    static let compressionThreshold = 1024
}

/// The length-prefixed message framing that gRPC and Connect streaming share: one flag byte,
/// a four-byte big-endian length, the message. gRPC defines bit 0 of the flags (compressed);
/// Connect adds bit 1 (end of stream, a JSON trailer instead of a message).
///
/// No library frames Connect, and sharing one reader keeps the two protocols' limits equal.
package struct EnvelopeReader {
    package struct Envelope {
        package var flags: UInt8
        package var payload: ByteBuffer

        package var isCompressed: Bool { flags & 0x01 != 0 }
        package var isEndOfStream: Bool { flags & 0x02 != 0 }
    }

    private var buffered: ByteBuffer?
    package let maxMessageBytes: Int

    package init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    /// Adds bytes read from a DATA frame.
    package mutating func append(_ bytes: ByteBuffer) {
        if buffered == nil {
            buffered = bytes
        } else {
            var more = bytes
            buffered!.writeBuffer(&more)
        }
    }

    /// True when bytes of an unfinished envelope are waiting.
    package var hasPartialEnvelope: Bool { (buffered?.readableBytes ?? 0) > 0 }

    /// The next complete envelope, nil when more bytes are needed. Throws for a message over
    /// the size limit before its bytes arrive, so a client cannot make the endpoint buffer it.
    package mutating func next() throws(RPCStatus) -> Envelope? {
        guard var buffer = buffered, buffer.readableBytes >= 5,
              let flags = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self) else { return nil }
        guard Int(length) <= maxMessageBytes else {
            throw RPCStatus(.resourceExhausted, "a message of \(length) bytes is over the limit of \(maxMessageBytes) bytes")
        }
        guard buffer.readableBytes >= 5 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 5)
        let payload = buffer.readSlice(length: Int(length))!
        buffered = buffer.readableBytes == 0 ? nil : buffer
        return Envelope(flags: flags, payload: payload)
    }
}

extension EnvelopeReader {
    /// What a request's next envelope holds.
    enum Inbound {
        /// A message, decompressed.
        case message([UInt8])
        /// A Connect client's end-of-stream envelope: its input has ended.
        case endOfStream
    }

    /// The next whole envelope of a request, decompressed (`encoding` is what the request's
    /// headers named); nil when more bytes are needed.
    mutating func nextMessage(encoding: MessageEncoding) throws(RPCStatus) -> Inbound? {
        guard let envelope = try next() else { return nil }
        // A Connect client has nothing to end with an envelope; its end of input is the end
        // of the stream.
        if envelope.isEndOfStream { return .endOfStream }
        let bytes = Array(envelope.payload.readableBytesView)
        guard envelope.isCompressed else { return .message(bytes) }
        guard encoding == .gzip else {
            throw RPCStatus(.internal, "a message is flagged compressed but the request named no encoding")
        }
        return .message(try Gzip.decompress(bytes, limit: maxMessageBytes))
    }
}

extension ByteBuffer {
    /// Appends one envelope: `flags`, the length, the bytes.
    package mutating func writeEnvelope(flags: UInt8, _ bytes: [UInt8]) {
        writeInteger(flags)
        writeInteger(UInt32(bytes.count))
        writeBytes(bytes)
    }
}
