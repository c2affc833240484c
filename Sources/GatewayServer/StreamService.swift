import GatewayProtocol
import Logging
import RPCEndpoint

/// The `VPSGatewayService` of the wire contract on the stream port, for gRPC and Connect
/// clients alike: the secret is checked before any message is read, then the stream is a
/// ``ClientStream`` session, which does not know which protocol carries it.
extension Gateway {
    func registerStreamService(on router: inout RPCRouter) {
        router.bidirectionalSession(RPCMethods.registerGateway, admission: { context throws(RPCStatus) in
            try self.admitStream(context)
        }) { context in
            ClientStream(streams: self.streams, context: context)
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
