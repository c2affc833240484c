import ArgumentParser
import Foundation
import Settings
import GatewayAdminClient
import GatewayBench
import GatewayProtocol
import TextFormats

/// The admin `CallResponse` in JSON, with the admin API's field names and every field present.
struct CallResponseJSON: Encodable {
    var request_id: String
    var outcome: String
    var payload_hex: String
    var responder_instance: String
    var responder_environment: String
    var error: String
    var attempts: UInt32
    var duration_us: UInt64

    init(_ response: AdminCallResponse) {
        request_id = response.requestID
        outcome = BenchmarkReport.name(of: response.outcome)
        payload_hex = response.payload.hex
        responder_instance = response.responderInstance
        responder_environment = response.responderEnvironment
        error = response.error
        attempts = response.attempts
        duration_us = response.durationUs
    }
}

extension AdminCallResponse {
    /// 0 ok, 1 not found, 2 anything else.
    var exitCode: ExitCode {
        switch outcome {
        case .ok: Exit.success
        case .notFound: Exit.notFound
        default: Exit.unresolved
        }
    }

    /// One line for a terminal: the outcome and who answered or what went wrong.
    var summary: String {
        let name = BenchmarkReport.name(of: outcome)
        switch outcome {
        case .ok: return "\(name): answered by \(Printable.escaped(responderEnvironment))/\(Printable.escaped(responderInstance)) in \(durationUs) µs (request \(Printable.escaped(requestID)))"
        default: return "\(name): \(Printable.escaped(error, limit: 2048)) (request \(Printable.escaped(requestID)), \(durationUs) µs)"
        }
    }
}

/// Runs an admin-socket operation, turning its errors into messages and exit codes.
func withAdmin<Result: Sendable>(_ socket: AdminSocketOption, _ body: @Sendable (AdminClient) async throws -> Result) async throws -> Result {
    do {
        return try await AdminClient.connect(socketPath: try socket.path, body)
    } catch let error as AdminClientError {
        throw fail(error.message, Exit.code(for: error))
    }
}
