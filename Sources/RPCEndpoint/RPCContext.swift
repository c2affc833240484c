import NIOHPACK

/// What a handler knows about the call it serves.
public struct RPCContext: Sendable {
    /// Which protocol carries the call.
    public enum WireProtocol: String, Sendable {
        /// gRPC over HTTP/2 (`application/grpc`).
        case grpc
        /// The Connect streaming protocol (`application/connect+proto`, `+json`).
        case connect
        /// Connect's unary protocol (`application/proto`, `application/json`).
        case connectUnary = "connect-unary"
    }

    public let method: RPCMethod
    public let wireProtocol: WireProtocol
    /// `ipv4:127.0.0.1:50123`, `unix:/run/…`, as the transport saw the peer.
    public let remoteAddress: String
    /// The caller's deadline (`grpc-timeout`, `connect-timeout-ms`), if it set one.
    public let deadline: ContinuousClock.Instant?
    let headers: HPACKHeaders

    /// The first value of a request header (lowercase name), or nil.
    public func header(_ name: String) -> String? {
        headers.first(name: name)
    }
}
