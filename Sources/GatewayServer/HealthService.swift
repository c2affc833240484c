import AsyncPrimitives
import GatewayProtocol
import RPCEndpoint
import SwiftProtobuf

/// `grpc.health.v1.Health` on the stream port, over gRPC and Connect: SERVING while the
/// gateway is ready (listening, journal handed back) and not draining, so `grpc_health_probe`
/// and `curl` can tell a load balancer or an operator whether to send it clients.
extension Gateway {
    func registerHealthService(on router: inout RPCRouter) {
        router.unary(RPCMethods.healthCheck) { (request: HealthCheckRequest, _) in
            try HealthCheckResponse.with { $0.status = try self.health(of: request.service) }
        }
        router.serverStreaming(RPCMethods.healthWatch) { (request: HealthCheckRequest, _, writer: RPCResponseWriter<HealthCheckResponse>) in
            guard Self.healthServices.contains(request.service) else {
                try await writer.write(.with { $0.status = .serviceUnknown })
                return
            }
            // Each change of the serving state, until the drain: then the last NOT_SERVING
            // and a clean end, so the stream does not hold the shutdown up.
            var sent: HealthCheckResponse.ServingStatus?
            while !Task.isCancelled {
                let previous = sent
                await self.readiness.wait { self.servingStatus($0) != previous }
                let conditions = self.readiness.value
                let status = self.servingStatus(conditions)
                try await writer.write(.with { $0.status = status })
                sent = status
                if conditions.contains(.draining) { return }
            }
        }
    }

    /// The empty name (the whole server) and the stream service's.
    static let healthServices: Set<String> = ["", RPCMethods.registerGateway.service]

    private func health(of service: String) throws(RPCStatus) -> HealthCheckResponse.ServingStatus {
        guard Self.healthServices.contains(service) else {
            throw RPCStatus(.notFound, "no service '\(service.prefix(128))' here; ask for \"\" or \(RPCMethods.registerGateway.service)")
        }
        return servingStatus(readiness.value)
    }

    func servingStatus(_ conditions: Set<StartupCondition>) -> HealthCheckResponse.ServingStatus {
        readyConditions.isSubset(of: conditions) && !conditions.contains(.draining) && journalHealthy ? .serving : .notServing
    }
}
