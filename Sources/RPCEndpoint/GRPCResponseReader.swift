import NIOCore
import NIOHPACK

/// How a gRPC client reads the server's side of one stream — response headers, messages,
/// trailers — from its HEADERS and DATA frames. The stream client and the unary client share
/// it, so both map statuses, encodings and malformed answers the same way.
struct GRPCResponseReader {
    private enum State {
        case awaitingHeaders
        case messages(compressed: Bool)
        case ended
    }

    private var state = State.awaitingHeaders
    private var envelopes: EnvelopeReader
    /// Who answers, for error messages ("the gateway").
    private let peer: String

    init(maxMessageBytes: Int, peer: String = "the gateway") {
        envelopes = EnvelopeReader(maxMessageBytes: maxMessageBytes)
        self.peer = peer
    }

    var isEnded: Bool {
        if case .ended = state { return true }
        return false
    }

    /// Marks the stream ended (by the caller's own decision), so later frames are ignored.
    mutating func end() { state = .ended }

    /// A header block: the response headers, trailers, or trailers-only. The status when the
    /// block ends the stream or is wrong; nil while messages may follow.
    mutating func readHeaders(_ headers: HPACKHeaders, endStream: Bool) -> RPCStatus? {
        switch state {
        case .awaitingHeaders:
            let status = headers.first(name: ":status") ?? ""
            guard status == "200" else {
                return ending(RPCStatus(Self.code(forHTTPStatus: Int(status) ?? 0), "\(peer) answered HTTP status \(status)"))
            }
            if endStream { return ending(self.status(of: headers)) }
            guard headers.first(name: "content-type")?.hasPrefix("application/grpc") == true else {
                return ending(RPCStatus(.unknown, "\(peer) answered content type '\(headers.first(name: "content-type") ?? "")', not application/grpc"))
            }
            let encoding = headers.first(name: "grpc-encoding")
            guard encoding == nil || encoding == "identity" || encoding == "gzip" else {
                return ending(RPCStatus(.internal, "\(peer)'s grpc-encoding '\(encoding!)' is not identity or gzip"))
            }
            state = .messages(compressed: encoding == "gzip")
            return nil
        case .messages:
            guard endStream else { return ending(RPCStatus(.internal, "\(peer) sent headers in the middle of the stream")) }
            return ending(status(of: headers))
        case .ended:
            return nil
        }
    }

    /// A DATA frame's bytes: each message it completes goes to `onMessage`, in order. A status
    /// when the stream ends here: a framing error, a status `onMessage` threw, or END_STREAM
    /// without trailers.
    mutating func readData(_ bytes: ByteBuffer, endStream: Bool, onMessage: (ByteBuffer) throws -> Void) -> RPCStatus? {
        guard case .messages(let compressed) = state else {
            if isEnded { return nil }
            return ending(RPCStatus(.internal, "\(peer) sent DATA before its response headers"))
        }
        envelopes.append(bytes)
        do {
            while let envelope = try envelopes.next() {
                var payload = envelope.payload
                if envelope.isCompressed {
                    guard compressed else {
                        throw RPCStatus(.internal, "\(peer) sent a compressed message without naming grpc-encoding gzip")
                    }
                    payload = ByteBuffer(bytes: try Gzip.decompress(Array(payload.readableBytesView), limit: envelopes.maxMessageBytes))
                }
                try onMessage(payload)
                if isEnded { return nil }
            }
        } catch let status as RPCStatus {
            return ending(status)
        } catch {
            return ending(RPCStatus(.internal, "\(error)"))
        }
        if endStream { return ending(RPCStatus(.internal, "\(peer) ended the stream without trailers")) }
        return nil
    }

    private mutating func ending(_ status: RPCStatus) -> RPCStatus {
        state = .ended
        return status
    }

    private func status(of trailers: HPACKHeaders) -> RPCStatus {
        guard let raw = trailers.first(name: "grpc-status"), let value = Int(raw), let code = RPCStatus.Code(rawValue: value) else {
            return RPCStatus(.unknown, "\(peer)'s trailers carry no valid grpc-status")
        }
        return RPCStatus(code, GRPCMessageEncoding.percentDecoded(trailers.first(name: "grpc-message") ?? ""))
    }

    /// gRPC's mapping of an HTTP status that is not 200.
    private static func code(forHTTPStatus status: Int) -> RPCStatus.Code {
        switch status {
        case 400: .internal
        case 401: .unauthenticated
        case 403: .permissionDenied
        case 404: .unimplemented
        case 429, 502, 503, 504: .unavailable
        default: .unknown
        }
    }
}
