import Foundation
// Public: requests and responses are the admin API's generated messages.
public import GatewayProtocol
import RPCEndpoint
import SwiftProtobuf

/// A client of the gateway's admin API on its Unix socket.
///
/// ```swift
/// try await AdminClient.connect(socketPath: "/run/vps-gateway/admin.sock") { admin in
///     let response = try await admin.call(.with { $0.method = "FindVPSByLease"; $0.payload = payload })
/// }
/// ```
public struct AdminClient: Sendable {
    private let client: RPCUnaryClient
    public let socketPath: String

    /// How long the listing and replay calls may take.
    private static let listingTimeout = Duration.seconds(30)

    /// Connects to the socket, runs `body`, and closes the connection.
    public static func connect<Result: Sendable>(
        socketPath: String,
        _ body: @Sendable (AdminClient) async throws -> Result
    ) async throws -> Result {
        var info = stat()
        guard stat(socketPath, &info) == 0 else {
            if errno == EACCES { throw AdminClientError.permissionDenied(socketPath) }
            throw AdminClientError(
                code: .unreachable,
                message: "no admin socket at '\(socketPath)' (\(String(cString: strerror(errno)))); is the gateway running? Give its socket with --admin-socket"
            )
        }
        // Connecting needs write permission on the socket: say so instead of "does not answer".
        guard access(socketPath, R_OK | W_OK) == 0 || errno != EACCES else { throw AdminClientError.permissionDenied(socketPath) }
        let client: @Sendable (RPCUnaryClient) async throws -> Result = { client in
            try await body(AdminClient(client: client, socketPath: socketPath))
        }
        do {
            return try await RPCUnaryClient.withClient(to: .unixSocket(path: socketPath), client)
        } catch let status as RPCStatus {
            throw AdminClientError(status: status, socketPath: socketPath)
        }
    }

    /// Where a task making many calls (`bench`'s callers) runs cheapest: the connection's
    /// event loop.
    public func callerExecutor() async throws -> any TaskExecutor {
        try await client.callerExecutor()
    }

    /// Sends one request through the gateway and waits for its outcome.
    public func call(_ request: AdminCallRequest) async throws -> AdminCallResponse {
        let timeoutMs = request.timeoutMs == 0 ? 10_000 : Int64(request.timeoutMs)
        // The gateway answers at its own deadline; allow for the trip over the socket. Enforced
        // here (a timer on the connection's loop) rather than sent as grpc-timeout, so the
        // gateway's own deadline is the one that decides the outcome.
        return try await unary(RPCMethods.call, request, as: AdminCallResponse.self, timeout: .milliseconds(timeoutMs + 5_000))
    }

    /// Sends finished journal requests again; returns what was queued.
    public func replay(_ request: AdminReplayRequest) async throws -> AdminReplayResponse {
        try await unary(RPCMethods.replay, request, as: AdminReplayResponse.self, timeout: Self.listingTimeout)
    }

    /// The DHCP leases the gateway watches and what each resolved to.
    public func listLeases(summaryOnly: Bool = false) async throws -> AdminListLeasesResponse {
        try await unary(RPCMethods.listLeases, AdminListLeasesRequest.with { $0.summaryOnly = summaryOnly }, as: AdminListLeasesResponse.self, timeout: Self.listingTimeout)
    }

    /// The connected instances, optionally of one environment.
    public func listClients(environment: String = "") async throws -> [AdminClientInfo] {
        let response: AdminListClientsResponse = try await unary(
            RPCMethods.listClients, AdminListClientsRequest.with { $0.environment = environment }, timeout: Self.listingTimeout
        )
        return response.clients
    }

    private func unary<Response: SwiftProtobuf.Message>(_ method: RPCMethod, _ request: some SwiftProtobuf.Message, as: Response.Type = Response.self, timeout: Duration) async throws -> Response {
        do {
            return try await client.call(method, request, as: Response.self, timeout: timeout)
        } catch let status as RPCStatus {
            throw AdminClientError(status: status, socketPath: socketPath)
        }
    }
}

/// The one error type of the admin client.
public struct AdminClientError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String { case unreachable, rejected, failed, notRecorded, shuttingDown, permissionDenied }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The socket is missing or nobody answers on it.
        public static let unreachable = Code(.unreachable)
        /// The gateway's journal could not record the request (a full disk), so nothing was sent.
        public static let notRecorded = Code(.notRecorded)
        /// The gateway is stopping and takes no calls.
        public static let shuttingDown = Code(.shuttingDown)
        /// This user may not use the socket.
        public static let permissionDenied = Code(.permissionDenied)
        /// The gateway refused the request as invalid.
        public static let rejected = Code(.rejected)
        /// Anything else the RPC reported.
        public static let failed = Code(.failed)

        public var description: String { value.rawValue }
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    static func permissionDenied(_ socketPath: String) -> AdminClientError {
        AdminClientError(
            code: .permissionDenied,
            message: "permission denied on the admin socket '\(socketPath)': run as root or as a member of its group (ls -l shows them; the unit's group is vps-gateway)"
        )
    }

    init(status: RPCStatus, socketPath: String) {
        switch status.code {
        case .resourceExhausted where status.message.contains("not recorded"):
            self.init(code: .notRecorded, message: "the gateway could not record the request, so it did not send it: \(status.message)")
        case .unavailable where status.message.contains("shutting down"):
            self.init(code: .shuttingDown, message: "\(status.message); run the command again once the gateway is back")
        case .unavailable:
            self.init(code: .unreachable, message: "the gateway's admin socket '\(socketPath)' does not answer (\(status.message)); is the gateway running?")
        case .deadlineExceeded:
            self.init(code: .failed, message: "no answer from the gateway: \(status.message)")
        case .invalidArgument, .failedPrecondition, .outOfRange:
            self.init(code: .rejected, message: "the gateway refused the request: \(status.message)")
        default:
            self.init(code: .failed, message: "admin RPC failed with \(status.code): \(status.message)")
        }
    }

    public var description: String { "\(code): \"\(message)\"" }
}
