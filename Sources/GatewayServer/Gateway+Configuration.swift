// Public: the configuration carries the lease watcher's and the endpoint's TLS settings.
public import DHCPLeases
public import RPCEndpoint
import Settings

extension Gateway {
    /// Everything the gateway needs to know to run. The CLI maps flags and environment
    /// variables onto it; tests set fields directly.
    public struct Configuration: Sendable {
        /// Where VPS-service instances dial in. Default: `GatewaySettings.listen`.
        public var listenHost: String
        public var listenPort: Int
        /// The shared secret every stream must present in `x-api-secret`. Required.
        public var apiSecret: String
        /// The Unix socket of the admin API. Default: `GatewaySettings.adminSocket`.
        public var adminSocketPath: String
        /// How long a new stream has to send `register`. Default: `GatewaySettings.registrationTimeout`.
        public var registrationTimeout: Duration
        /// How often the gateway sends `heartbeat` on each stream. Default: `GatewaySettings.heartbeatInterval`.
        public var heartbeatInterval: Duration
        /// A stream silent for this many heartbeat intervals is evicted. Default 3.
        public var missedHeartbeatsBeforeEviction: Int
        /// Messages that may wait to be written to one stream before sends to it fail at
        /// once (so a client that does not read cannot stall anyone). Default: `GatewaySettings.sendQueue`.
        public var sendQueueCapacity: Int
        /// The timeout of a call whose caller gave none. Default: `GatewaySettings.defaultTimeout`.
        public var defaultCallTimeout: Duration
        /// The longest timeout a caller may ask for. Default 5 min.
        public var maxCallTimeout: Duration
        /// The largest message accepted on a stream or the admin socket. Default: `GatewaySettings.maxMessageSize`.
        public var maxMessageBytes: Int
        /// Streams a client may open at once on one connection. Default: `GatewaySettings.maxConcurrentStreams`.
        public var maxConcurrentStreams: Int
        /// The largest request header block. Default: `GatewaySettings.maxHeaderListSize`.
        public var maxHeaderListSize: Int
        /// Connections open at once on the stream port (and on the admin socket); more are
        /// closed as they arrive. Default: `GatewaySettings.maxConnections`.
        public var maxConnections: Int
        /// Instances registered at once (new instance ids beyond it are refused with
        /// resource_exhausted); keeps `ListClients` under the admin client's 4 MiB even with
        /// every registration at its 4 KiB cap. Default: `GatewaySettings.maxClients`.
        public var maxClients: Int
        /// A connection without an open stream (one that never sent the HTTP/2 preface, or
        /// whose streams ended) is closed after this. Default: `GatewaySettings.idleConnectionTimeout`.
        public var idleConnectionTimeout: Duration
        /// HTTP/2 keepalive pings the gateway sends on a connection that read nothing for this
        /// long. Default: `GatewaySettings.keepaliveInterval` (with the timeout, a dead peer is found within a minute).
        public var keepaliveInterval: Duration
        /// How long a keepalive ping may stay unanswered before the connection is closed.
        /// Default 20 s.
        public var keepaliveTimeout: Duration
        /// The shortest client ping interval the gateway tolerates (clients ping every 30 s
        /// by default; grpc's own default of 5 min would GOAWAY them). Default: `GatewaySettings.minClientPingInterval`.
        public var minClientPingInterval: Duration
        /// On shutdown, how long in-flight calls get to finish after `drain` is sent; the
        /// ones still unanswered then stay unfinished in the journal. Default: `GatewaySettings.shutdownGrace` (below the
        /// supervisor's 10 s `shutdown_grace`, which ends in SIGKILL).
        public var shutdownGracePeriod: Duration
        /// After the grace period, how long connections get to close after GOAWAY before the
        /// gateway cuts them (a silent, half-open or stopped peer never closes). Default 1 s.
        public var connectionCloseTimeout: Duration
        /// The environments this node serves (`--environments`; the supervisor passes its
        /// configured ones). When set, a call addressed to all environments goes to these only
        /// (an instance of another environment cannot answer for this node's leases), a "not
        /// found" counts only once each of them answered (a missing one makes the call fail and
        /// be retried), and the start waits for them to register. Empty: any environment.
        public var answeringEnvironments: Set<String>
        /// h2 over TLS on the stream port (PEM files); nil serves cleartext h2c. The admin
        /// socket stays cleartext (a local Unix socket).
        public var tls: RPCServer.Configuration.TLS?
        /// The version reported in `registered` and logs.
        public var version: String
        /// Journaled requests executing at once from the runner's queue (recovered, replayed
        /// and async ones; the rest wait). Default 256, the workers' default concurrency, so a
        /// replay does not make them refuse work as busy.
        public var maxConcurrentJournalRequests: Int
        /// Attempts of a request whose attempts keep failing. Default: `GatewaySettings.maxAttempts`.
        public var maxAttempts: Int
        /// The delay before the second attempt; doubled per attempt. Default 100 ms.
        public var retryInitialDelay: Duration
        /// The longest delay between attempts. Default 5 s.
        public var retryMaxDelay: Duration
        /// The largest answer the journal keeps with a finished row; a larger one is given to
        /// its caller but not stored (the row says so). Default: `GatewaySettings.maxStoredResult`.
        public var maxStoredResultBytes: Int
        /// Finished journal rows older than this are pruned. Default: `GatewaySettings.journalRetention`.
        public var journalRetention: Duration
        /// How often finished rows are pruned. Default: `GatewaySettings.journalUpkeepInterval`.
        public var pruneInterval: Duration
        /// How often the journal's WAL is checkpointed and truncated. Default: `GatewaySettings.journalUpkeepInterval`.
        public var checkpointInterval: Duration
        /// The DHCP lease watcher; nil runs the gateway without one.
        public var dhcp: LeaseWatcher.Configuration?
        /// How long a lease lookup may take. Default 30 s.
        public var leaseLookupTimeout: Duration
        /// After a start, journal recovery and the lease watcher wait for the workers to
        /// reconnect: at most this long. Default 10 s.
        public var clientSettleTime: Duration
        /// ...and they are taken to be back once no new one registered for this long.
        /// Default 1 s.
        public var clientQuietPeriod: Duration

        public init(apiSecret: String) {
            // GatewaySettings.listen's default, HOST:PORT.
            let listen = GatewaySettings.listen.defaultValue
            let colon = listen.lastIndex(of: ":") ?? listen.endIndex
            guard colon < listen.endIndex, let port = Int(listen[listen.index(after: colon)...]) else {
                preconditionFailure("GatewaySettings.listen's default '\(listen)' is not HOST:PORT")
            }
            self.listenHost = String(listen[..<colon])
            self.listenPort = port
            self.apiSecret = apiSecret
            self.adminSocketPath = GatewaySettings.adminSocket.defaultValue
            self.registrationTimeout = GatewaySettings.registrationTimeout.defaultValue
            self.heartbeatInterval = GatewaySettings.heartbeatInterval.defaultValue
            self.missedHeartbeatsBeforeEviction = 3
            self.sendQueueCapacity = GatewaySettings.sendQueue.defaultValue
            self.defaultCallTimeout = GatewaySettings.defaultTimeout.defaultValue
            self.maxCallTimeout = .seconds(300)
            self.maxMessageBytes = GatewaySettings.maxMessageSize.defaultValue
            self.maxConcurrentStreams = GatewaySettings.maxConcurrentStreams.defaultValue
            self.maxHeaderListSize = GatewaySettings.maxHeaderListSize.defaultValue
            self.maxConnections = GatewaySettings.maxConnections.defaultValue
            self.maxClients = GatewaySettings.maxClients.defaultValue
            self.idleConnectionTimeout = GatewaySettings.idleConnectionTimeout.defaultValue
            self.keepaliveInterval = GatewaySettings.keepaliveInterval.defaultValue
            self.keepaliveTimeout = .seconds(20)
            self.minClientPingInterval = GatewaySettings.minClientPingInterval.defaultValue
            self.shutdownGracePeriod = GatewaySettings.shutdownGrace.defaultValue
            self.tls = nil
            self.answeringEnvironments = []
            self.connectionCloseTimeout = .seconds(1)
            self.version = "dev"
            self.maxConcurrentJournalRequests = 256
            self.maxAttempts = GatewaySettings.maxAttempts.defaultValue
            self.retryInitialDelay = .milliseconds(100)
            self.retryMaxDelay = .seconds(5)
            self.maxStoredResultBytes = GatewaySettings.maxStoredResult.defaultValue
            self.journalRetention = GatewaySettings.journalRetention.defaultValue
            self.pruneInterval = GatewaySettings.journalUpkeepInterval.defaultValue
            self.checkpointInterval = GatewaySettings.journalUpkeepInterval.defaultValue
            self.dhcp = nil
            self.leaseLookupTimeout = .seconds(30)
            self.clientSettleTime = .seconds(10)
            self.clientQuietPeriod = .seconds(1)
        }

        /// The longest a graceful shutdown may take before the process exits regardless: the
        /// grace, the close timeout, and a margin for the journal's last commit.
        public var shutdownLimit: Duration { shutdownGracePeriod + connectionCloseTimeout + .seconds(2) }

        /// A stream silent for longer than this is evicted.
        var evictionSilence: Duration { heartbeatInterval * missedHeartbeatsBeforeEviction }
    }
}
