import ArgumentParser
import DHCPLeases
import Foundation
import GatewayJournal
import GatewayServer
import Telemetry
import Logging
import RPCEndpoint
import ServiceLifecycle
import Supervision
import SystemdSupport
import UnixSignals

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run the gateway: accept VPS-service streams and route requests to them.",
        discussion: """
            VPS-service instances dial the gateway, authenticate with the shared secret in the \
            x-api-secret header, send `register`, and keep the stream open; the gateway sends \
            requests down every eligible stream and takes the first valid answer. Operators and \
            scripts use the admin API on a Unix socket (`vps-gateway lookup`, `call`, `clients`).

            Both the port and the admin socket speak gRPC and the Connect protocol (streaming, \
            and unary with proto or JSON bodies), chosen per HTTP/2 stream by its content type; \
            grpc.health.v1.Health answers on the port. HTTP/2 only (h2c with prior knowledge); \
            the examples show curl.

            Environment:
              GATEWAY_API_SECRET        the shared secret (or --api-secret-file)
              GATEWAY_API_SECRET_FILE   a file holding the secret
              GATEWAY_GRPC_PORT         the port when --listen is not given (default 1537)
              GATEWAY_ADMIN_SOCKET      the admin socket when --admin-socket is not given
              GATEWAY_JOURNAL           the journal when --journal is not given
              GATEWAY_DHCP_LEASES_DIR   the directory of dnsmasq's lease file (default /var/lib/vps-gateway)
              GATEWAY_DNSMASQ_PID_FILE  dnsmasq's pid file when --dnsmasq-pid-file is not given
              GATEWAY_RECONCILE_INTERVAL  how often the lease file is re-read (default 30s)
              GATEWAY_ENVIRONMENTS      the environments when --environments is not given
              VPS_GATEWAY_MIGRATIONS    the journal migrations directory when --migrations is not given
              VPS_GATEWAY_LOG_LEVEL, VPS_GATEWAY_LOG_FORMAT

            Examples:
              GATEWAY_API_SECRET=s3cret vps-gateway gateway
              vps-gateway gateway --listen 127.0.0.1:1537 --api-secret-file /etc/vps-gateway/secret \\
                  --admin-socket /tmp/gw.sock --journal /tmp/gw-journal.sqlite3
              vps-gateway gateway --journal off      # no recording, no retries (for comparison)
              curl --unix-socket /run/vps-gateway/admin.sock --http2-prior-knowledge -H 'content-type: application/json' -d '{}' http://localhost/vpsgateway.admin.v1.GatewayAdmin/ListClients
              curl --http2-prior-knowledge -H 'content-type: application/json' -d '{}' http://127.0.0.1:1537/grpc.health.v1.Health/Check
              vps-gateway gateway --dhcp-leases /var/lib/misc/dnsmasq.leases --dhcp-hosts /etc/dnsmasq.hosts/vps \\
                  --dnsmasq-pid-file /run/dnsmasq/dnsmasq.pid

            Every call is recorded in the request journal before it is sent and retried after a \
            crash or restart (see `vps-gateway journal --help`).

            The gateway watches dnsmasq's lease file; for every active lease whose hostname \
            does not name a VPS it asks the environments (FindVPSByLease, through the journal) \
            and writes `<ip> <vps-id>` lines to the hosts file dnsmasq serves, then SIGHUPs \
            that dnsmasq (`vps-gateway leases` shows the state).

            SIGTERM/SIGINT: no new streams or calls; calls still waiting for a receiver go back \
            to the journal (pending, for the next start); calls in flight get --shutdown-grace, \
            then stay unfinished in the journal; every connection is then closed, the ones that \
            do not close within a second are cut. A second SIGTERM/SIGINT stops at once. The \
            process always exits within the grace plus 3 s; its last log line says what it left.

            Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT); 73 another gateway runs on \
            the same admin socket or journal (its pid is named); 78 when the configuration is \
            unusable (no secret, bad address, port taken, a corrupt, newer or unwritable \
            journal); 70 on an internal failure, or when a stop outlived its bound.
            """
    )

    @Option(help: ArgumentHelp("Address to accept streams on, HOST:PORT. Default 0.0.0.0:$GATEWAY_GRPC_PORT (1537).", valueName: "host:port"))
    var listen: String?

    @Option(help: ArgumentHelp("File holding the shared secret (wins over GATEWAY_API_SECRET).", valueName: "path"))
    var apiSecretFile: String?

    @OptionGroup var admin: AdminSocketOption

    @Option(help: ArgumentHelp("How often the gateway sends a heartbeat on each stream; a stream silent for 3 intervals is evicted.", valueName: "duration"))
    var heartbeatInterval = DurationArgument(.seconds(30), text: "30s")

    @Option(help: ArgumentHelp("How long a new stream has to send `register`.", valueName: "duration"))
    var registrationTimeout = DurationArgument(.seconds(10), text: "10s")

    @Option(help: ArgumentHelp("Messages that may wait for one slow stream before sends to it fail.", valueName: "count"))
    var sendQueue = 1024

    @Option(help: ArgumentHelp("Timeout of a call that gives none (timeout_ms 0).", valueName: "duration"))
    var defaultTimeout = DurationArgument(.seconds(10), text: "10s")

    @Option(help: ArgumentHelp("On shutdown, how long in-flight calls get to finish.", valueName: "duration"))
    var shutdownGrace = DurationArgument(.seconds(5), text: "5s")

    @Option(help: ArgumentHelp("The shortest HTTP/2 ping interval tolerated from a client; faster pingers get GOAWAY. Must be below the workers' --keepalive-interval.", valueName: "duration"))
    var minClientPingInterval = DurationArgument(.seconds(10), text: "10s")

    @Option(help: ArgumentHelp("HTTP/2 keepalive: ping a connection that read nothing for this long; no answer within 20 s closes it.", valueName: "duration"))
    var keepaliveInterval = DurationArgument(.seconds(30), text: "30s")

    @Option(help: ArgumentHelp("Connections open at once (stream port, and admin socket); more are closed as they arrive.", valueName: "count"))
    var maxConnections = 4096

    @Option(help: ArgumentHelp("Instances registered at once; a new instance id beyond it is refused (resource_exhausted). Default: 256.", valueName: "count"))
    var maxClients: Int?

    @Option(help: ArgumentHelp("Streams one client may have open at once on one connection.", valueName: "count"))
    var maxConcurrentStreams = 256

    @Option(help: ArgumentHelp("The largest message accepted, after decompression.", valueName: "bytes"))
    var maxMessageSize = 4 * 1024 * 1024

    @Option(help: ArgumentHelp("The largest request header block.", valueName: "bytes"))
    var maxHeaderListSize = 16 * 1024

    @Option(help: ArgumentHelp("A connection that sent no HTTP/2 preface, or has had no stream open, for this long is closed.", valueName: "duration"))
    var idleConnectionTimeout = DurationArgument(.seconds(30), text: "30s")

    @Option(help: ArgumentHelp("The request journal (SQLite, WAL), or `off` to neither record nor retry calls. Env: GATEWAY_JOURNAL. Default: /var/lib/vps-gateway/journal.sqlite3.", valueName: "path|off"))
    var journal: String?

    @Option(help: ArgumentHelp("full: a recorded request survives power loss (default). normal: faster, but may lose the last commits on power loss (never on a crash).", valueName: "full|normal"))
    var journalSync = "full"

    @Option(help: ArgumentHelp("Finished journal rows older than this are pruned in the background.", valueName: "duration"))
    var journalRetention = DurationArgument(.seconds(7 * 86_400), text: "7d")

    @Option(help: ArgumentHelp("How often finished journal rows are pruned and the WAL is checkpointed.", valueName: "duration"))
    var journalUpkeepInterval = DurationArgument(.seconds(30), text: "30s")

    @Option(help: ArgumentHelp("The largest answer kept in the journal with its finished row; larger ones go to their caller but are not stored.", valueName: "bytes"))
    var maxStoredResult = 64 * 1024

    @Option(help: ArgumentHelp("Attempts of a request whose attempts keep failing (a dropped stream, an internal error).", valueName: "count"))
    var maxAttempts = 5

    @OptionGroup var migrations: MigrationsOption

    @OptionGroup var metrics: MetricsOptions

    @Option(help: ArgumentHelp("dnsmasq's lease file to watch, or `off`. Env: GATEWAY_DHCP_LEASES_DIR sets its directory. Default: /var/lib/vps-gateway/dnsmasq.leases.", valueName: "path|off"))
    var dhcpLeases: String?

    @Option(help: ArgumentHelp("The hosts file dnsmasq reads (addn-hosts) that the gateway writes. Default: vps-hosts beside the lease file.", valueName: "path"))
    var dhcpHosts: String?

    @Option(help: ArgumentHelp("dnsmasq's pid file; the gateway sends that dnsmasq SIGHUP after the hosts file changed. Env: GATEWAY_DNSMASQ_PID_FILE. Default: no signal.", valueName: "path"))
    var dnsmasqPidFile: String?

    @Option(help: ArgumentHelp("Re-read the lease file at least this often (inotify wakes it sooner). Env: GATEWAY_RECONCILE_INTERVAL.", valueName: "duration"))
    var reconcileInterval: DurationArgument?

    @Option(help: ArgumentHelp("Opt in: leases whose hostname matches this glob (like vps-*) are taken to name their VPS and are not looked up. Risk: the hostname is the tenant's choice, so a VM can claim another VPS's name and keep its real owner out of the hosts file. Default: every lease is looked up by MAC and IP.", valueName: "glob"))
    var vpsHostnamePattern: String?

    @Option(help: ArgumentHelp("How long a lease nobody owns is believed unowned before asking again.", valueName: "duration"))
    var negativeCacheTTL = DurationArgument(.seconds(300), text: "5m")

    @Option(help: ArgumentHelp("How long a lease's owner is trusted before it is asked again (a deleted VPS then drops out of the hosts file).", valueName: "duration"))
    var ownerRecheck = DurationArgument(.seconds(600), text: "10m")

    @Option(help: ArgumentHelp("The environments this node serves, comma-separated (production,beta,dev). Calls to all environments go to these only, a \"not found\" needs each of them to answer, and a start waits for them. Env: GATEWAY_ENVIRONMENTS. Default: any environment.", valueName: "names"))
    var environments: String?

    @Option(help: ArgumentHelp("Like --environments, from a file (one name per line), re-read on SIGHUP: what the supervisor uses.", valueName: "path"))
    var environmentsFile: String?

    @Option(help: ArgumentHelp("Serve h2 over TLS on the stream port with this PEM certificate chain (with --tls-key). Under systemd: a LoadCredential= file in $CREDENTIALS_DIRECTORY.", valueName: "path"))
    var tlsCertificate: String?

    @Option(help: ArgumentHelp("The PEM private key of --tls-certificate.", valueName: "path"))
    var tlsKey: String?

    @Option(help: ArgumentHelp("Require client certificates signed by this PEM CA (mutual TLS); needs --tls-certificate.", valueName: "path"))
    var tlsClientCa: String?

    @OptionGroup var logging: LogOptions

    @Flag(help: "Shut down when stdin reaches end-of-file: the supervisor's lifeline, so no child outlives it.")
    var lifelineStdin = false

    func validate() throws {
        _ = try heartbeatInterval.requirePositive("--heartbeat-interval")
        _ = try registrationTimeout.requirePositive("--registration-timeout")
        _ = try defaultTimeout.requirePositive("--default-timeout")
        _ = try minClientPingInterval.requirePositive("--min-client-ping-interval")
        _ = try keepaliveInterval.requirePositive("--keepalive-interval")
        _ = try idleConnectionTimeout.requirePositive("--idle-connection-timeout")
        if let maxClients, maxClients < 1 { throw ValidationError("--max-clients must be at least 1, got \(maxClients)") }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1, got \(maxConnections)") }
        guard (1...100_000).contains(maxConcurrentStreams) else { throw ValidationError("--max-concurrent-streams must be 1-100000, got \(maxConcurrentStreams)") }
        guard (1024...(64 << 20)).contains(maxMessageSize) else { throw ValidationError("--max-message-size must be 1024 to 67108864 bytes, got \(maxMessageSize)") }
        guard (1024...(1 << 20)).contains(maxHeaderListSize) else { throw ValidationError("--max-header-list-size must be 1024 to 1048576 bytes, got \(maxHeaderListSize)") }
        guard sendQueue >= 1 else { throw ValidationError("--send-queue must be at least 1, got \(sendQueue)") }
        guard RequestJournal.Durability(rawValue: journalSync) != nil else {
            throw ValidationError("--journal-sync '\(journalSync)' is not full or normal")
        }
        guard maxStoredResult >= 0 else { throw ValidationError("--max-stored-result must not be negative") }
        guard (1...100).contains(maxAttempts) else { throw ValidationError("--max-attempts must be 1-100, got \(maxAttempts)") }
        _ = try journalRetention.requirePositive("--journal-retention")
        _ = try journalUpkeepInterval.requirePositive("--journal-upkeep-interval")
        _ = try negativeCacheTTL.requirePositive("--negative-cache-ttl")
        _ = try ownerRecheck.requirePositive("--owner-recheck")
        _ = try reconcileInterval?.requirePositive("--reconcile-interval")
        if let listen { _ = try ListenAddress(listen) }
        guard (tlsCertificate == nil) == (tlsKey == nil) else { throw ValidationError("give --tls-certificate and --tls-key together") }
        guard environments == nil || environmentsFile == nil else { throw ValidationError("give --environments or --environments-file, not both") }
        guard tlsClientCa == nil || tlsCertificate != nil else { throw ValidationError("--tls-client-ca needs --tls-certificate and --tls-key (mutual TLS is TLS)") }
    }

    func run() async throws {
        let logger = try logging.makeLogger(label: "gateway", identifier: "vps-gateway")
        let gateway: Gateway
        let exported: (registry: MetricsRegistry, server: MetricsServer)?
        do {
            let configuration = try makeConfiguration()
            exported = try metrics.make(variable: "VPS_GATEWAY_METRICS_ADDRESS", logger: logger)
            let lock = try Gateway.lockAdminSocket(of: configuration)
            gateway = Gateway(configuration: configuration, journal: try await openJournal(logger: logger), instanceLock: lock, metrics: exported?.registry, logger: logger)
        } catch let error as GatewayError where error.code == .alreadyRunning {
            throw fail(error.message, Exit.alreadyRunning)
        } catch let error as JournalError where error.code == .inUse {
            throw fail(error.message, Exit.alreadyRunning)
        } catch {
            throw fail("\(error)", Exit.config)
        }
        let reporter = NotifyReporter(
            serving: { await gateway.waitUntilServing() }, ready: { await gateway.waitUntilReady() },
            status: { "gateway: \(gateway.statusLine)" }, alive: { gateway.isAlive }
        )
        do {
            let reloader: [any Service] = environmentsFile.map { [EnvironmentsFileReloader(path: $0, gateway: gateway, logger: logger)] } ?? []
            let metricsServer: [any Service] = exported.map { [$0.server] } ?? []
            try await runRoleGroup(
                metricsServer + [gateway, reporter] + reloader, role: "gateway", lifeline: lifelineStdin,
                shutdownLimit: gateway.configuration.shutdownLimit, logger: logger,
                unfinished: { ["status": "\(gateway.statusLine)"] }
            )
        } catch let error as GatewayError {
            switch error.code {
            case .alreadyRunning: throw fail("\(error.message)", Exit.alreadyRunning)
            case .invalidConfiguration, .listenFailed, .adminSocketFailed: throw fail("gateway stopped: \(error)", Exit.config)
            default: throw fail("gateway stopped: \(error)", Exit.software)
            }
        } catch {
            throw fail("gateway stopped: \(error)", Exit.software)
        }
    }

    func makeConfiguration() throws -> Gateway.Configuration {
        let secret = try SecretSource.load(file: apiSecretFile, fileVariable: "GATEWAY_API_SECRET_FILE", variable: "GATEWAY_API_SECRET")
        var configuration = Gateway.Configuration(apiSecret: secret)
        let address = try listen.map(ListenAddress.init) ?? ListenAddress(host: "0.0.0.0", port: try Self.portFromEnvironment())
        configuration.listenHost = address.host
        configuration.listenPort = address.port
        configuration.adminSocketPath = admin.path
        configuration.heartbeatInterval = heartbeatInterval.duration
        configuration.registrationTimeout = registrationTimeout.duration
        configuration.sendQueueCapacity = sendQueue
        configuration.defaultCallTimeout = defaultTimeout.duration
        configuration.shutdownGracePeriod = shutdownGrace.duration
        configuration.minClientPingInterval = minClientPingInterval.duration
        configuration.keepaliveInterval = keepaliveInterval.duration
        configuration.maxConnections = maxConnections
        if let maxClients { configuration.maxClients = maxClients }
        configuration.maxConcurrentStreams = maxConcurrentStreams
        configuration.maxMessageBytes = maxMessageSize
        configuration.maxHeaderListSize = maxHeaderListSize
        configuration.idleConnectionTimeout = idleConnectionTimeout.duration
        if let environmentsFile {
            configuration.answeringEnvironments = try EnvironmentsFile.read(environmentsFile)
        } else if let names = environments ?? Environment.value("GATEWAY_ENVIRONMENTS") {
            configuration.answeringEnvironments = EnvironmentsFile.parse(names)
        }
        if let tlsCertificate, let tlsKey {
            configuration.tls = .init(certificateChain: tlsCertificate, privateKey: tlsKey, clientCA: tlsClientCa)
        }
        configuration.maxAttempts = maxAttempts
        configuration.maxStoredResultBytes = maxStoredResult
        configuration.journalRetention = journalRetention.duration
        configuration.dhcp = try dhcpConfiguration()
        configuration.pruneInterval = journalUpkeepInterval.duration
        configuration.checkpointInterval = journalUpkeepInterval.duration
        configuration.version = BuildInfo.version
        return configuration
    }

    static let defaultJournal = "/var/lib/vps-gateway/journal.sqlite3"

    /// The lease watcher's settings, or nil for `--dhcp-leases off`.
    func dhcpConfiguration() throws -> LeaseWatcher.Configuration? {
        let directory = Environment.value("GATEWAY_DHCP_LEASES_DIR") ?? "/var/lib/vps-gateway"
        let leases = dhcpLeases ?? "\(directory)/dnsmasq.leases"
        guard leases != "off" else { return nil }
        let hosts = dhcpHosts ?? ((leases as NSString).deletingLastPathComponent + "/vps-hosts")
        guard hosts != leases else { throw ConfigurationProblem("--dhcp-hosts and --dhcp-leases are the same file '\(hosts)'") }
        var configuration = LeaseWatcher.Configuration(leaseFile: leases, hostsFile: hosts)
        configuration.dnsmasqPidFile = dnsmasqPidFile ?? Environment.value("GATEWAY_DNSMASQ_PID_FILE")
        if let reconcileInterval {
            configuration.reconcileInterval = reconcileInterval.duration
        } else if let text = Environment.value("GATEWAY_RECONCILE_INTERVAL") {
            guard let parsed = DurationArgument(argument: text), parsed.duration > .zero else {
                throw ConfigurationProblem("GATEWAY_RECONCILE_INTERVAL '\(text)' is not a positive duration like 30s")
            }
            configuration.reconcileInterval = parsed.duration
        }
        configuration.vpsHostnamePattern = vpsHostnamePattern.map(HostnamePattern.init)
        configuration.negativeCacheTTL = negativeCacheTTL.duration
        configuration.positiveRecheck = ownerRecheck.duration
        return configuration
    }

    /// Opens and migrates the journal, or nil for `--journal off`.
    func openJournal(logger: Logger) async throws -> RequestJournal? {
        let path = journal ?? Environment.value("GATEWAY_JOURNAL") ?? Self.defaultJournal
        guard path != "off" else {
            logger.warning("running without a request journal: calls are not recorded, retried or replayed")
            return nil
        }
        return try await RequestJournal.open(
            at: path,
            migrations: try migrations.load(),
            durability: RequestJournal.Durability(rawValue: journalSync) ?? .full,
            exclusive: true,
            logger: logger
        )
    }

    static func portFromEnvironment() throws -> Int {
        guard let text = Environment.value("GATEWAY_GRPC_PORT") else { return 1537 }
        guard let port = Int(text), (1...65535).contains(port) else {
            throw ConfigurationProblem("GATEWAY_GRPC_PORT '\(text)' is not a port number 1-65535")
        }
        return port
    }
}

/// `HOST:PORT`, `[V6]:PORT` or `:PORT`.
struct ListenAddress {
    var host: String
    var port: Int

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    init(_ text: String) throws {
        let problem = ValidationError("--listen '\(text)' is not HOST:PORT; expected e.g. 0.0.0.0:1537, [::]:1537 or 127.0.0.1:0")
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw problem
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard !host.contains(" ") else { throw problem }
        self.init(host: host, port: port)
    }
}
