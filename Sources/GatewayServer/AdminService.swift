import Foundation
import GatewayProtocol
import GRPCCore
import Logging
import SwiftProtobuf

/// The admin API on the Unix socket: `Call` sends one request through the fan-out,
/// `ListClients` lists the connected instances.
struct AdminService: GatewayAdminService.SimpleServiceProtocol {
    let gateway: Gateway

    func call(request: AdminCallRequest, context: ServerContext) async throws -> AdminCallResponse {
        guard !request.method.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "method is empty; expected a method name such as \(GatewayMethod.findVPSByLease)")
        }
        let configuration = gateway.configuration
        let timeout: Duration = request.timeoutMs == 0
            ? configuration.defaultCallTimeout : .milliseconds(Int64(request.timeoutMs))
        guard timeout <= configuration.maxCallTimeout else {
            throw RPCError(code: .invalidArgument, message: "timeout_ms \(request.timeoutMs) is above the gateway's maximum of \(configuration.maxCallTimeout)")
        }
        let requestID = request.requestID.isEmpty ? Self.newRequestID() : request.requestID
        guard requestID.utf8.count <= 128 else {
            throw RPCError(code: .invalidArgument, message: "request_id is \(requestID.utf8.count) bytes; expected at most 128")
        }
        let started = ContinuousClock.now
        let call = OutgoingCall(
            requestID: requestID,
            method: request.method,
            payload: request.payload,
            target: CallTarget(
                environment: request.environment.isEmpty ? nil : request.environment,
                instanceID: request.instanceID.isEmpty ? nil : request.instanceID
            ),
            deadline: started + timeout
        )
        let result = await gateway.router.call(call)
        let elapsed = ContinuousClock.now - started
        let durationMicros = UInt64(max(0, elapsed.secondsValue * 1_000_000))
        let level: Logger.Level = (result.outcome == .ok || result.outcome == .notFound) ? .debug : .info
        gateway.logger.log(level: level, "call finished", metadata: [
            "request_id": "\(requestID)", "method": "\(request.method)", "outcome": "\(result.outcome.rawValue)",
            "instance": "\(result.responder?.instanceID ?? "")", "environment": "\(result.responder?.environment ?? "")",
            "duration_us": "\(durationMicros)", "error": "\(result.error)",
        ])
        return .with {
            $0.requestID = requestID
            $0.outcome = AdminOutcome(result.outcome)
            $0.payload = result.payload
            $0.responderInstance = result.responder?.instanceID ?? ""
            $0.responderEnvironment = result.responder?.environment ?? ""
            $0.error = result.error
            $0.attempts = 1
            $0.durationUs = durationMicros
        }
    }

    func listClients(request: AdminListClientsRequest, context: ServerContext) async throws -> AdminListClientsResponse {
        let connections = gateway.clients.connections(environment: request.environment.isEmpty ? nil : request.environment)
        return .with {
            $0.clients = connections.map { connection in
                AdminClientInfo.with {
                    $0.instanceID = connection.identity.instanceID
                    $0.environment = connection.identity.environment
                    $0.node = connection.identity.node
                    $0.version = connection.identity.version
                    $0.connectedAt = .init(date: connection.identity.connectedAt)
                    if let heartbeat = connection.lastHeartbeat { $0.lastHeartbeat = .init(date: heartbeat) }
                    $0.inFlight = UInt32(clamping: max(0, connection.inFlightCount))
                    $0.methods = connection.identity.methods
                    $0.remoteAddress = connection.identity.remoteAddress
                }
            }
        }
    }

    /// 16 random bytes in hex: unique enough to be the journal's idempotency key later.
    static func newRequestID() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        return String(format: "%016llx%016llx", high, low)
    }
}

extension AdminOutcome {
    init(_ outcome: CallResult.Outcome) {
        switch outcome {
        case .ok: self = .ok
        case .notFound: self = .notFound
        case .noReceivers: self = .noReceivers
        case .deadlineExceeded: self = .deadlineExceeded
        case .failed: self = .failed
        }
    }
}
