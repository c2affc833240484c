/// How an RPC ended, in the vocabulary gRPC and Connect share: a code, a message for people,
/// and metadata (gRPC trailers, Connect's end-of-stream `metadata`).
///
/// A handler throws it to end its RPC with an error; the endpoint writes it in the form the
/// caller's protocol expects (`grpc-status`/`grpc-message` trailers, a Connect end-of-stream
/// message, or a Connect unary error body with its HTTP status).
public struct RPCStatus: Error, Sendable, Equatable, CustomStringConvertible {
    /// The codes of gRPC's `status.proto`, which Connect names in snake case.
    public enum Code: Int, Sendable, CaseIterable {
        case ok = 0
        case cancelled = 1
        case unknown = 2
        case invalidArgument = 3
        case deadlineExceeded = 4
        case notFound = 5
        case alreadyExists = 6
        case permissionDenied = 7
        case resourceExhausted = 8
        case failedPrecondition = 9
        case aborted = 10
        case outOfRange = 11
        case unimplemented = 12
        case `internal` = 13
        case unavailable = 14
        case dataLoss = 15
        case unauthenticated = 16

        /// The name in Connect's error JSON.
        public var connectName: String {
            switch self {
            case .ok: "ok"
            case .cancelled: "canceled"
            case .unknown: "unknown"
            case .invalidArgument: "invalid_argument"
            case .deadlineExceeded: "deadline_exceeded"
            case .notFound: "not_found"
            case .alreadyExists: "already_exists"
            case .permissionDenied: "permission_denied"
            case .resourceExhausted: "resource_exhausted"
            case .failedPrecondition: "failed_precondition"
            case .aborted: "aborted"
            case .outOfRange: "out_of_range"
            case .unimplemented: "unimplemented"
            case .internal: "internal"
            case .unavailable: "unavailable"
            case .dataLoss: "data_loss"
            case .unauthenticated: "unauthenticated"
            }
        }

        /// The HTTP status of a Connect unary error with this code (Connect's own table).
        public var httpStatus: Int {
            switch self {
            case .ok: 200
            case .cancelled: 499
            case .unknown, .internal, .dataLoss: 500
            case .invalidArgument, .failedPrecondition, .outOfRange: 400
            case .deadlineExceeded: 504
            case .notFound, .unimplemented: 404
            case .alreadyExists, .aborted: 409
            case .permissionDenied: 403
            case .resourceExhausted: 429
            case .unavailable: 503
            case .unauthenticated: 401
            }
        }
    }

    public var code: Code
    public var message: String
    /// Sent as trailers (gRPC) or end-of-stream metadata (Connect).
    public var metadata: [(name: String, value: String)]

    public init(_ code: Code, _ message: String = "", metadata: [(name: String, value: String)] = []) {
        self.code = code
        self.message = message
        self.metadata = metadata
    }

    public static let ok = RPCStatus(.ok)

    public var description: String { message.isEmpty ? code.connectName : "\(code.connectName): \(message)" }

    public static func == (a: RPCStatus, b: RPCStatus) -> Bool {
        a.code == b.code && a.message == b.message && a.metadata.elementsEqual(b.metadata) { $0 == $1 }
    }
}
