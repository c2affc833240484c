/// One method as the wire names it — `/package.Service/Method` — and how many messages go
/// each way. The request and response types come with the handler registered for it.
public struct RPCMethod: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case unary
        case serverStreaming
        case bidirectionalStreaming

        /// Unary methods also speak Connect's unary protocol (a bare message per body).
        var allowsConnectUnary: Bool { self == .unary }
    }

    /// The fully qualified service, like `grpc.health.v1.Health`.
    public let service: String
    public let name: String
    public let kind: Kind

    public init(service: String, name: String, kind: Kind) {
        self.service = service
        self.name = name
        self.kind = kind
    }

    /// The HTTP/2 `:path`.
    public var path: String { "/\(service)/\(name)" }

    public var description: String { "\(service)/\(name)" }
}
