import Settings

extension Worker {
    /// Everything a worker needs to run. The CLI maps flags and environment variables onto it.
    public struct Configuration: Sendable {
        /// The gateways to dial, one stream each. At least one.
        public var endpoints: [GatewayEndpoint]
        /// Sent in `x-api-secret`. Required.
        public var apiSecret: String
        /// This instance's id, unique among the gateway's clients. Default: the host name.
        public var instanceID: String
        /// This worker's node name, sent as `gateway_id` when an endpoint has none of its own.
        public var node: String
        /// The environment this worker answers for (production, beta, dev, ...). Required.
        public var environment: String
        public var version: String
        /// Requests the worker handles at the same time, over all its streams; more are
        /// answered `unavailable`. Default: `WorkerSettings.maxConcurrent`.
        public var maxConcurrentRequests: Int
        /// How often the worker sends `heartbeat`. Default: `WorkerSettings.heartbeatInterval`.
        public var heartbeatInterval: Duration
        /// How long to wait for `registered` after `register`. Default 10 s.
        public var registrationTimeout: Duration
        /// The time a request gets when the gateway sent no deadline. Default 30 s.
        public var defaultRequestTimeout: Duration
        /// Reconnect delays. Default: `WorkerSettings.backoffInitial` doubling to `backoffMax`, 20 % jitter.
        public var backoff: Backoff.Configuration
        /// A stream that stayed registered this long resets the backoff. Default 10 s.
        public var healthyConnectionDuration: Duration
        /// HTTP/2 keepalive pings on the connection. Default: `WorkerSettings.keepaliveInterval`.
        public var keepaliveInterval: Duration
        /// How long a ping may stay unanswered before the connection is dropped. Default 20 s.
        public var keepaliveTimeout: Duration
        /// On shutdown, how long in-flight requests get after `drain`. Default: `WorkerSettings.shutdownGrace`.
        public var shutdownGracePeriod: Duration
        /// After the grace period and the half-close, how long the gateway gets to end the
        /// stream before the worker drops the connection (a stopped gateway never does).
        /// Default 1 s.
        public var streamCloseTimeout: Duration
        /// What `https://` gateways are checked against and what this worker presents.
        public var tls = TLS()

        public struct TLS: Sendable, Equatable {
            /// PEM CA certificates the gateway's certificate must chain to; nil trusts the
            /// system's roots.
            public var trustRoots: String?
            /// A PEM certificate chain and key to present, for gateways that require client
            /// certificates (mutual TLS).
            public var certificateChain: String?
            public var privateKey: String?

            public init() {}
        }

        /// Final answers remembered by request id, so a repeated id is answered without
        /// running its handler again. Default: `WorkerSettings.responseCacheSize` (0 turns the cache off).
        public var responseCacheSize: Int
        /// How long an answer is remembered. Default: `WorkerSettings.responseCacheTTL`.
        public var responseCacheLifetime: Duration

        public init(endpoints: [GatewayEndpoint], apiSecret: String, instanceID: String, environment: String) {
            self.endpoints = endpoints
            self.apiSecret = apiSecret
            self.instanceID = instanceID
            self.node = instanceID
            self.environment = environment
            self.version = "dev"
            self.maxConcurrentRequests = WorkerSettings.maxConcurrent.defaultValue
            self.heartbeatInterval = WorkerSettings.heartbeatInterval.defaultValue
            self.registrationTimeout = .seconds(10)
            self.defaultRequestTimeout = .seconds(30)
            self.backoff = Backoff.Configuration(initial: WorkerSettings.backoffInitial.defaultValue, maximum: WorkerSettings.backoffMax.defaultValue)
            self.healthyConnectionDuration = .seconds(10)
            self.keepaliveInterval = WorkerSettings.keepaliveInterval.defaultValue
            self.keepaliveTimeout = .seconds(20)
            self.shutdownGracePeriod = WorkerSettings.shutdownGrace.defaultValue
            self.streamCloseTimeout = .seconds(1)
            self.responseCacheSize = WorkerSettings.responseCacheSize.defaultValue
            self.responseCacheLifetime = WorkerSettings.responseCacheTTL.defaultValue
        }

        /// The longest a graceful shutdown may take before the process exits regardless.
        public var shutdownLimit: Duration { shutdownGracePeriod + streamCloseTimeout + .seconds(2) }

        func validate() throws {
            func invalid(_ message: String) -> WorkerError { WorkerError(code: .invalidConfiguration, message: message) }
            if endpoints.isEmpty { throw invalid("no gateway to dial: set VPS_GATEWAY_URL or VPS_NODE_GATEWAY_ENDPOINTS") }
            if apiSecret.isEmpty { throw invalid("no API secret: set VPS_GATEWAY_API_SECRET (the gateway's GATEWAY_API_SECRET)") }
            if instanceID.isEmpty || instanceID.utf8.count > 256 { throw invalid("the instance id must be 1-256 bytes, got '\(instanceID)'") }
            if environment.isEmpty || environment.utf8.count > 256 { throw invalid("the environment name must be 1-256 bytes, got '\(environment)'") }
            if maxConcurrentRequests < 1 { throw invalid("max concurrent requests must be at least 1, got \(maxConcurrentRequests)") }
        }
    }
}
