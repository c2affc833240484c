import NIOCore
import NIOHPACK
import NIOHTTP2
import Synchronization

/// How one stream's responses look on the wire, in the caller's protocol: gRPC (headers,
/// enveloped messages, `grpc-status` trailers or a trailers-only answer), Connect streaming
/// (headers, envelopes, an end-of-stream envelope with JSON), or Connect unary (a bare body,
/// or an error status with a JSON body). Pure: the frames to write, for whoever writes them.
struct ResponseFraming: Sendable {
    let wireProtocol: RPCContext.WireProtocol
    let contentType: String
    let encoding: MessageEncoding

    /// The frames of `messages` (one for unary calls), headers first when `first`.
    func frames(of messages: [[UInt8]], first: Bool, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws -> [HTTP2Frame.FramePayload] {
        var frames: [HTTP2Frame.FramePayload] = []
        frames.reserveCapacity(2)
        switch wireProtocol {
        case .connectUnary:
            // One message is the whole body, sent with its headers and the end of the stream.
            var body = messages.first ?? []
            var headers = responseHeaders(status: 200)
            if encoding == .gzip && body.count >= MessageEncoding.compressionThreshold {
                body = try Gzip.compress(body)
                headers.add(name: "content-encoding", value: "gzip")
            }
            frames.append(.headers(.init(headers: headers)))
            frames.append(.data(.init(data: .byteBuffer(ByteBuffer(bytes: body)), endStream: true)))
        case .grpc, .connect:
            if first { frames.append(.headers(.init(headers: streamHeaders()))) }
            var buffer = allocator.buffer(capacity: messages.reduce(0) { $0 + 5 + $1.count })
            for message in messages {
                if encoding == .gzip && message.count >= MessageEncoding.compressionThreshold {
                    buffer.writeEnvelope(flags: 0x01, try Gzip.compress(message))
                } else {
                    buffer.writeEnvelope(flags: 0x00, message)
                }
            }
            frames.append(.data(.init(data: .byteBuffer(buffer))))
        }
        return frames
    }

    /// The frames that end the stream with `status` (gRPC: trailers, or trailers-only when
    /// `first`). Trailers-only also while the client still sends: headers then trailers
    /// without a message in between never reached curl in that case (seen with a 6 MB
    /// request refused at its prefix), while a trailers-only answer did every time. Empty
    /// for a Connect unary call that ended with its one message.
    func endFrames(_ status: RPCStatus, first: Bool) -> [HTTP2Frame.FramePayload] {
        switch wireProtocol {
        case .grpc:
            var trailers: HPACKHeaders = first ? streamHeaders() : [:]
            trailers.add(name: "grpc-status", value: "\(status.code.rawValue)")
            if !status.message.isEmpty { trailers.add(name: "grpc-message", value: GRPCMessageEncoding.percentEncoded(status.message)) }
            for (name, value) in status.metadata { trailers.add(name: name, value: value) }
            return [.headers(.init(headers: trailers, endStream: true))]
        case .connect:
            var frames: [HTTP2Frame.FramePayload] = []
            if first { frames.append(.headers(.init(headers: streamHeaders()))) }
            var buffer = ByteBuffer()
            buffer.writeEnvelope(flags: 0x02, Array(ConnectJSON.endOfStream(status).utf8))
            frames.append(.data(.init(data: .byteBuffer(buffer), endStream: true)))
            return frames
        case .connectUnary:
            // A successful unary call ended with its one message; only errors remain.
            guard first, status.code != .ok else { return [] }
            return ResponseSink.connectUnaryError(status)
        }
    }

    private func streamHeaders() -> HPACKHeaders {
        var headers = responseHeaders(status: 200)
        if encoding == .gzip {
            headers.add(name: wireProtocol == .grpc ? "grpc-encoding" : "connect-content-encoding", value: "gzip")
        }
        return headers
    }

    private func responseHeaders(status: Int) -> HPACKHeaders {
        var headers: HPACKHeaders = [":status": "\(status)", "content-type": contentType]
        if wireProtocol == .grpc { headers.add(name: "grpc-accept-encoding", value: "gzip,identity") }
        return headers
    }
}

/// One stream's responses in the caller's protocol (``ResponseFraming``), sent through an
/// async `send`.
///
/// `write` is called by one task at a time (the handler's); `finish` once, by the
/// dispatcher, after the handler returned.
final class ResponseSink: Sendable {
    /// Writes frames to the stream and flushes them.
    private let send: @Sendable ([HTTP2Frame.FramePayload]) async throws -> Void
    private let framing: ResponseFraming
    private let headersSent = Atomic<Bool>(false)

    init(send: @escaping @Sendable ([HTTP2Frame.FramePayload]) async throws -> Void, wireProtocol: RPCContext.WireProtocol, contentType: String, encoding: MessageEncoding) {
        self.send = send
        self.framing = ResponseFraming(wireProtocol: wireProtocol, contentType: contentType, encoding: encoding)
    }

    /// Sends messages (one for unary calls) in one flush.
    func write(_ messages: [[UInt8]]) async throws {
        let first = !headersSent.exchange(true, ordering: .relaxed)
        try await send(try framing.frames(of: messages, first: first))
    }

    /// Ends the stream with `status` (gRPC: trailers, or trailers-only before any message).
    func finish(_ status: RPCStatus) async {
        let first = !headersSent.exchange(true, ordering: .relaxed)
        let frames = framing.endFrames(status, first: first)
        guard !frames.isEmpty else { return }
        try? await send(frames)
    }

    /// The frames of a Connect unary error: its HTTP status and `{"code":…,"message":…}`.
    static func connectUnaryError(_ status: RPCStatus) -> [HTTP2Frame.FramePayload] {
        var headers: HPACKHeaders = [":status": "\(status.code.httpStatus)", "content-type": "application/json"]
        for (name, value) in status.metadata { headers.add(name: name, value: value) }
        let body = ByteBuffer(string: ConnectJSON.error(status))
        return [.headers(.init(headers: headers)), .data(.init(data: .byteBuffer(body), endStream: true))]
    }
}

/// gRPC's `grpc-message` is percent-encoded UTF-8 (every byte outside printable ASCII, and `%`).
enum GRPCMessageEncoding {
    static func percentEncoded(_ message: String) -> String {
        var encoded = ""
        for byte in message.utf8 {
            if (0x20...0x7E).contains(byte) && byte != UInt8(ascii: "%") {
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let digits = Array("0123456789ABCDEF".unicodeScalars)
                encoded.unicodeScalars.append("%")
                encoded.unicodeScalars.append(digits[Int(byte >> 4)])
                encoded.unicodeScalars.append(digits[Int(byte & 0x0f)])
            }
        }
        return encoded
    }

    /// The message a peer sent; a `%` not followed by two hex digits is kept as it is.
    static func percentDecoded(_ encoded: String) -> String {
        let bytes = Array(encoded.utf8)
        guard bytes.contains(UInt8(ascii: "%")) else { return encoded }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count, let high = hex(bytes[index + 1]), let low = hex(bytes[index + 2]) {
                decoded.append(high << 4 | low)
                index += 3
            } else {
                decoded.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: decoded, as: UTF8.self)
    }
}

/// The JSON Connect puts in an end-of-stream message and a unary error body.
enum ConnectJSON {
    /// `{}` for success, `{"error":{…},"metadata":{…}}` otherwise.
    static func endOfStream(_ status: RPCStatus) -> String {
        var members: [String] = []
        if status.code != .ok { members.append("\"error\":" + error(status)) }
        if !status.metadata.isEmpty {
            var grouped: [(String, [String])] = []
            for (name, value) in status.metadata {
                if let index = grouped.firstIndex(where: { $0.0 == name }) { grouped[index].1.append(value) } else { grouped.append((name, [value])) }
            }
            members.append("\"metadata\":{" + grouped.map { "\(quoted($0.0)):[\($0.1.map(quoted).joined(separator: ","))]" }.joined(separator: ",") + "}")
        }
        return "{" + members.joined(separator: ",") + "}"
    }

    static func error(_ status: RPCStatus) -> String {
        status.message.isEmpty
            ? "{\"code\":\(quoted(status.code.connectName))}"
            : "{\"code\":\(quoted(status.code.connectName)),\"message\":\(quoted(status.message))}"
    }

    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
