import GRPCCore
public import RPCEndpoint

/// Every method of the gateway's wire as a typed descriptor, named after the generated ones
/// (so the .proto stays the one source of every name): the server routes them, the worker and
/// the admin client call them.
public enum RPCMethods {
    public static let registerGateway = RPCMethod(VPSGatewayService.Method.RegisterGateway.descriptor, kind: .bidirectionalStreaming)
    public static let call = RPCMethod(GatewayAdminService.Method.Call.descriptor, kind: .unary)
    public static let listClients = RPCMethod(GatewayAdminService.Method.ListClients.descriptor, kind: .unary)
    public static let replay = RPCMethod(GatewayAdminService.Method.Replay.descriptor, kind: .unary)
    public static let listLeases = RPCMethod(GatewayAdminService.Method.ListLeases.descriptor, kind: .unary)
    public static let healthCheck = RPCMethod(HealthService.Method.Check.descriptor, kind: .unary)
    public static let healthWatch = RPCMethod(HealthService.Method.Watch.descriptor, kind: .serverStreaming)
}

extension RPCMethod {
    init(_ descriptor: MethodDescriptor, kind: Kind) {
        self.init(service: descriptor.service.fullyQualifiedService, name: descriptor.method, kind: kind)
    }
}
