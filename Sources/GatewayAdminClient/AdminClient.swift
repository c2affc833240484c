import AsyncPrimitives
import Foundation
// Public: requests and responses are the admin API's generated messages.
public import GatewayProtocol
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf

/// A client of the gateway's admin API on its Unix socket.
///
/// ```swift
/// try await AdminClient.connect(socketPath: "/run/vps-gateway/admin.sock") { admin in
///     let response = try await admin.call(.with { $0.method = "FindVPSByLease"; $0.payload = payload })
/// }
/// ```
public struct AdminClient: Sendable {
    private let admin: GatewayAdminService.Client<HTTP2ClientTransport.Posix>
    public let socketPath: String

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
        let transport = try HTTP2ClientTransport.Posix(
            target: .unixDomainSocket(path: socketPath),
            transportSecurity: .plaintext,
            config: .defaults {
                $0.backoff = .init(initial: .milliseconds(50), max: .milliseconds(500), multiplier: 2, jitter: 0.1)
                $0.connection.flushCoalescing = nil
            }
        )
        return try await withGRPCClient(transport: transport) { client in
            try await body(AdminClient(admin: GatewayAdminService.Client(wrapping: client), socketPath: socketPath))
        }
    }

    /// Sends one request through the gateway and waits for its outcome.
    public func call(_ request: AdminCallRequest) async throws -> AdminCallResponse {
        let timeoutMs = request.timeoutMs == 0 ? 10_000 : Int64(request.timeoutMs)
        // The gateway answers at its own deadline; allow for the trip over the socket. Enforced
        // here rather than sent as grpc-timeout: grpc-swift's server sleeps a task per RPC for
        // a grpc-timeout, and each holds a few KB until that timeout even after the answer.
        let patience = Duration.milliseconds(timeoutMs + 5_000)
        let deadline = ContinuousClock.now + patience
        do {
            // A timer, not a second task: `bench` makes this call thousands of times a second.
            let answered: Result<AdminCallResponse, any Error>? = await withDeadlineTimer(deadline, orElse: nil) {
                do { return .success(try await admin.call(request)) } catch { return .failure(error) }
            }
            guard let answered else {
                throw RPCError(code: .deadlineExceeded, message: "no answer from the gateway within \(patience)")
            }
            return try answered.get()
        } catch let error as RPCError {
            throw AdminClientError(rpc: error, socketPath: socketPath)
        }
    }

    /// Sends finished journal requests again; returns what was queued.
    public func replay(_ request: AdminReplayRequest) async throws -> AdminReplayResponse {
        do {
            return try await admin.replay(request)
        } catch let error as RPCError {
            throw AdminClientError(rpc: error, socketPath: socketPath)
        }
    }

    /// The DHCP leases the gateway watches and what each resolved to.
    public func listLeases(summaryOnly: Bool = false) async throws -> AdminListLeasesResponse {
        do {
            return try await admin.listLeases(.with { $0.summaryOnly = summaryOnly })
        } catch let error as RPCError {
            throw AdminClientError(rpc: error, socketPath: socketPath)
        }
    }

    /// The connected instances, optionally of one environment.
    public func listClients(environment: String = "") async throws -> [AdminClientInfo] {
        do {
            return try await admin.listClients(.with { $0.environment = environment }).clients
        } catch let error as RPCError {
            throw AdminClientError(rpc: error, socketPath: socketPath)
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

    init(rpc error: RPCError, socketPath: String) {
        switch error.code {
        case .resourceExhausted where error.message.contains("not recorded"):
            self.init(code: .notRecorded, message: "the gateway could not record the request, so it did not send it: \(error.message)")
        case .unavailable where error.message.contains("shutting down"):
            self.init(code: .shuttingDown, message: "\(error.message); run the command again once the gateway is back")
        case .unavailable:
            self.init(code: .unreachable, message: "the gateway's admin socket '\(socketPath)' does not answer (\(error.message)); is the gateway running?")
        case .invalidArgument, .failedPrecondition, .outOfRange:
            self.init(code: .rejected, message: "the gateway refused the request: \(error.message)")
        default:
            self.init(code: .failed, message: "admin RPC failed with \(error.code): \(error.message)")
        }
    }

    public var description: String { "\(code): \"\(message)\"" }
}
