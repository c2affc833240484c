// Short names for the generated wire types. Every module speaks these, so they are public.
public typealias GatewayMessage = Obiente_Cloud_Vpsgateway_V1_GatewayMessage
public typealias GatewayRegistration = Obiente_Cloud_Vpsgateway_V1_GatewayRegistration
public typealias GatewayRequest = Obiente_Cloud_Vpsgateway_V1_GatewayRequest
public typealias GatewayResponse = Obiente_Cloud_Vpsgateway_V1_GatewayResponse
public typealias VPSGatewayService = Obiente_Cloud_Vpsgateway_V1_VPSGatewayService
public typealias FindVPSByLeaseRequest = Obiente_Cloud_Vps_V1_FindVPSByLeaseRequest
public typealias FindVPSByLeaseResponse = Obiente_Cloud_Vps_V1_FindVPSByLeaseResponse

public typealias AdminCallRequest = Vpsgateway_Admin_V1_CallRequest
public typealias AdminCallResponse = Vpsgateway_Admin_V1_CallResponse
public typealias AdminOutcome = Vpsgateway_Admin_V1_Outcome
public typealias AdminClientInfo = Vpsgateway_Admin_V1_ClientInfo
public typealias AdminListClientsRequest = Vpsgateway_Admin_V1_ListClientsRequest
public typealias AdminListClientsResponse = Vpsgateway_Admin_V1_ListClientsResponse
public typealias AdminReplayRequest = Vpsgateway_Admin_V1_ReplayRequest
public typealias AdminReplayResponse = Vpsgateway_Admin_V1_ReplayResponse
public typealias AdminListLeasesRequest = Vpsgateway_Admin_V1_ListLeasesRequest
public typealias AdminListLeasesResponse = Vpsgateway_Admin_V1_ListLeasesResponse
public typealias AdminLeaseInfo = Vpsgateway_Admin_V1_LeaseInfo
public typealias GatewayAdminService = Vpsgateway_Admin_V1_GatewayAdmin

/// The request header that carries the shared secret (a fact of the existing wire).
public enum GatewayMetadataKey {
    public static let apiSecret = "x-api-secret"
}

public typealias HealthCheckRequest = Grpc_Health_V1_HealthCheckRequest
public typealias HealthCheckResponse = Grpc_Health_V1_HealthCheckResponse
public typealias HealthService = Grpc_Health_V1_Health
