import GatewayProtocol
import GRPCCore
import Logging

/// The `VPSGatewayService` of the wire contract: checks the secret, then hands the stream to
/// the gateway's session logic.
struct StreamService: VPSGatewayService.StreamingServiceProtocol {
    let gateway: Gateway

    func registerGateway(
        request: StreamingServerRequest<GatewayMessage>,
        context: ServerContext
    ) async throws -> StreamingServerResponse<GatewayMessage> {
        let presented = request.metadata[stringValues: GatewayMetadataKey.apiSecret].first(where: { _ in true })
        guard gateway.secretCheck.accepts(presented) else {
            gateway.logger.warning("refused a stream: missing or wrong API secret", metadata: [
                "remote_address": "\(context.remotePeer)",
                "secret_presented": "\(presented != nil)",
            ])
            throw RPCError(code: .unauthenticated, message: "missing or wrong \(GatewayMetadataKey.apiSecret) header")
        }
        guard !gateway.isShuttingDown else { throw Gateway.shuttingDownRefusal }
        gateway.logger.debug("stream opened", metadata: ["remote_address": "\(context.remotePeer)"])
        return StreamingServerResponse { writer in
            try await gateway.serveStream(inbound: request.messages, writer: writer, remoteAddress: context.remotePeer)
            return [:]
        }
    }
}
