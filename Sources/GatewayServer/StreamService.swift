import GatewayProtocol
import Logging
import RPCEndpoint

/// The `VPSGatewayService` of the wire contract on the stream port, for gRPC and Connect
/// clients alike: the secret is checked before any message is read, then the stream goes to
/// the gateway's session logic, which does not know which protocol carries it.
extension Gateway {
    func registerStreamService(on router: inout RPCRouter) {
        router.bidirectionalStreaming(RPCMethods.registerGateway, admission: { context throws(RPCStatus) in
            try self.admitStream(context)
        }) { (requests: RPCRequestStream<GatewayMessage>, context, writer: RPCResponseWriter<GatewayMessage>) in
            try await self.streams.serve(
                inbound: requests, write: { try await writer.write(contentsOf: $0) },
                remoteAddress: context.remoteAddress, wireProtocol: context.wireProtocol
            )
        }
    }

    private func admitStream(_ context: RPCContext) throws(RPCStatus) {
        let presented = context.header(GatewayMetadataKey.apiSecret)
        guard secretCheck.accepts(presented) else {
            refusedStreams.record(peer: context.remoteAddress, why: presented == nil ? "no \(GatewayMetadataKey.apiSecret) header" : "wrong \(GatewayMetadataKey.apiSecret)")
            throw RPCStatus(.unauthenticated, "missing or wrong \(GatewayMetadataKey.apiSecret) header")
        }
        guard !isShuttingDown else { throw ClientStreams.shuttingDownRefusal }
        logger.debug("stream opened", metadata: ["remote_address": "\(context.remoteAddress)", "protocol": "\(context.wireProtocol.rawValue)"])
    }
}
