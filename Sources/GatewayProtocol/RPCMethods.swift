import GatewayProtocol
import GRPCCore
import RPCEndpoint

/// The methods the gateway serves, named after the generated descriptors (so the .proto stays
/// the one source of every name).
enum ServedMethods {
    static let registerGateway = RPCMethod(VPSGatewayService.Method.RegisterGateway.descriptor, kind: .bidirectionalStreaming)
    static let call = RPCMethod(GatewayAdminService.Method.Call.descriptor, kind: .unary)
    static let listClients = RPCMethod(GatewayAdminService.Method.ListClients.descriptor, kind: .unary)
    static let replay = RPCMethod(GatewayAdminService.Method.Replay.descriptor, kind: .unary)
    static let listLeases = RPCMethod(GatewayAdminService.Method.ListLeases.descriptor, kind: .unary)
    static let healthCheck = RPCMethod(HealthService.Method.Check.descriptor, kind: .unary)
    static let healthWatch = RPCMethod(HealthService.Method.Watch.descriptor, kind: .serverStreaming)
}

extension RPCMethod {
    init(_ descriptor: MethodDescriptor, kind: Kind) {
        self.init(service: descriptor.service.fullyQualifiedService, name: descriptor.method, kind: kind)
    }
}
