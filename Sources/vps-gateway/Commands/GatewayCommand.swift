import ArgumentParser
import DHCPLeases
import Foundation
import GatewayJournal
import GatewayServer
import Telemetry
import Logging
import RPCEndpoint
import ServiceLifecycle
import Settings
import SQLiteDirect
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
              GATEWAY_DHCP_LEASES_DIR   the directory of dnsmasq's lease file when --dhcp-leases is not given
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

    @Option(name: .customLong(GatewaySettings.listen.flag), help: GatewaySettings.listen.argumentHelp)
    var listen: String?

    @Option(name: .customLong(GatewaySettings.apiSecretFile.flag), help: GatewaySettings.apiSecretFile.argumentHelp)
    var apiSecretFile: String?

    @Option(name: .customLong(GatewaySettings.adminSocket.flag), help: GatewaySettings.adminSocket.argumentHelp)
    var adminSocket: String?

    @Option(name: .customLong(GatewaySettings.heartbeatInterval.flag), help: GatewaySettings.heartbeatInterval.argumentHelp)
    var heartbeatInterval: String?

    @Option(name: .customLong(GatewaySettings.registrationTimeout.flag), help: GatewaySettings.registrationTimeout.argumentHelp)
    var registrationTimeout: String?

    @Option(name: .customLong(GatewaySettings.sendQueue.flag), help: GatewaySettings.sendQueue.argumentHelp)
    var sendQueue: String?

    @Option(name: .customLong(GatewaySettings.defaultTimeout.flag), help: GatewaySettings.defaultTimeout.argumentHelp)
    var defaultTimeout: String?

    @Option(name: .customLong(GatewaySettings.shutdownGrace.flag), help: GatewaySettings.shutdownGrace.argumentHelp)
    var shutdownGrace: String?

    @Option(name: .customLong(GatewaySettings.minClientPingInterval.flag), help: GatewaySettings.minClientPingInterval.argumentHelp)
    var minClientPingInterval: String?

    @Option(name: .customLong(GatewaySettings.keepaliveInterval.flag), help: GatewaySettings.keepaliveInterval.argumentHelp)
    var keepaliveInterval: String?

    @Option(name: .customLong(GatewaySettings.maxConnections.flag), help: GatewaySettings.maxConnections.argumentHelp)
    var maxConnections: String?

    @Option(name: .customLong(GatewaySettings.maxClients.flag), help: GatewaySettings.maxClients.argumentHelp)
    var maxClients: String?

    @Option(name: .customLong(GatewaySettings.maxConcurrentStreams.flag), help: GatewaySettings.maxConcurrentStreams.argumentHelp)
    var maxConcurrentStreams: String?

    @Option(name: .customLong(GatewaySettings.maxMessageSize.flag), help: GatewaySettings.maxMessageSize.argumentHelp)
    var maxMessageSize: String?

    @Option(name: .customLong(GatewaySettings.maxHeaderListSize.flag), help: GatewaySettings.maxHeaderListSize.argumentHelp)
    var maxHeaderListSize: String?

    @Option(name: .customLong(GatewaySettings.idleConnectionTimeout.flag), help: GatewaySettings.idleConnectionTimeout.argumentHelp)
    var idleConnectionTimeout: String?

    @Option(name: .customLong(GatewaySettings.eventLoops.flag), help: GatewaySettings.eventLoops.argumentHelp)
    var eventLoops: String?

    @Option(name: .customLong(GatewaySettings.journal.flag), help: GatewaySettings.journal.argumentHelp)
    var journal: String?

    @Option(name: .customLong(GatewaySettings.journalSync.flag), help: GatewaySettings.journalSync.argumentHelp)
    var journalSync: String?

    @Option(name: .customLong(GatewaySettings.journalRetention.flag), help: GatewaySettings.journalRetention.argumentHelp)
    var journalRetention: String?

    @Option(name: .customLong(GatewaySettings.journalUpkeepInterval.flag), help: GatewaySettings.journalUpkeepInterval.argumentHelp)
    var journalUpkeepInterval: String?

    @Option(name: .customLong(GatewaySettings.maxStoredResult.flag), help: GatewaySettings.maxStoredResult.argumentHelp)
    var maxStoredResult: String?

    @Option(name: .customLong(GatewaySettings.maxAttempts.flag), help: GatewaySettings.maxAttempts.argumentHelp)
    var maxAttempts: String?

    @OptionGroup var migrations: MigrationsOption

    @Option(name: .customLong(GatewaySettings.metricsAddress.flag), help: GatewaySettings.metricsAddress.argumentHelp)
    var metricsAddress: String?

    @Option(name: .customLong(GatewaySettings.dhcpLeases.flag), help: GatewaySettings.dhcpLeases.argumentHelp)
    var dhcpLeases: String?

    @Option(name: .customLong(GatewaySettings.dhcpHosts.flag), help: GatewaySettings.dhcpHosts.argumentHelp)
    var dhcpHosts: String?

    @Option(name: .customLong(GatewaySettings.dnsmasqPidFile.flag), help: GatewaySettings.dnsmasqPidFile.argumentHelp)
    var dnsmasqPidFile: String?

    @Option(name: .customLong(GatewaySettings.reconcileInterval.flag), help: GatewaySettings.reconcileInterval.argumentHelp)
    var reconcileInterval: String?

    @Option(name: .customLong(GatewaySettings.vpsHostnamePattern.flag), help: GatewaySettings.vpsHostnamePattern.argumentHelp)
    var vpsHostnamePattern: String?

    @Option(name: .customLong(GatewaySettings.negativeCacheTTL.flag), help: GatewaySettings.negativeCacheTTL.argumentHelp)
    var negativeCacheTTL: String?

    @Option(name: .customLong(GatewaySettings.ownerRecheck.flag), help: GatewaySettings.ownerRecheck.argumentHelp)
    var ownerRecheck: String?

    @Option(name: .customLong(GatewaySettings.environments.flag), help: GatewaySettings.environments.argumentHelp)
    var environments: String?

    @Option(name: .customLong(GatewaySettings.environmentsFile.flag), help: GatewaySettings.environmentsFile.argumentHelp)
    var environmentsFile: String?

    @Option(name: .customLong(GatewaySettings.tlsCertificate.flag), help: GatewaySettings.tlsCertificate.argumentHelp)
    var tlsCertificate: String?

    @Option(name: .customLong(GatewaySettings.tlsKey.flag), help: GatewaySettings.tlsKey.argumentHelp)
    var tlsKey: String?

    @Option(name: .customLong(GatewaySettings.tlsClientCA.flag), help: GatewaySettings.tlsClientCA.argumentHelp)
    var tlsClientCa: String?

    @OptionGroup var logging: LogOptions

    @Flag(help: "Shut down when stdin reaches end-of-file: the supervisor's lifeline, so no child outlives it.")
    var lifelineStdin = false

    /// Each setting with the text the command line gave for it, for the checks below.
    private var given: [(setting: any AnySetting, text: String?)] {
        typealias S = GatewaySettings
        return [
            (S.listen, listen), (S.apiSecretFile, apiSecretFile), (S.adminSocket, adminSocket),
            (S.heartbeatInterval, heartbeatInterval), (S.registrationTimeout, registrationTimeout), (S.sendQueue, sendQueue),
            (S.defaultTimeout, defaultTimeout), (S.shutdownGrace, shutdownGrace), (S.minClientPingInterval, minClientPingInterval),
            (S.keepaliveInterval, keepaliveInterval), (S.maxConnections, maxConnections), (S.maxClients, maxClients),
            (S.maxConcurrentStreams, maxConcurrentStreams), (S.maxMessageSize, maxMessageSize), (S.maxHeaderListSize, maxHeaderListSize),
            (S.idleConnectionTimeout, idleConnectionTimeout), (S.eventLoops, eventLoops), (S.journal, journal), (S.journalSync, journalSync),
            (S.journalRetention, journalRetention), (S.journalUpkeepInterval, journalUpkeepInterval), (S.maxStoredResult, maxStoredResult),
            (S.maxAttempts, maxAttempts), (S.metricsAddress, metricsAddress), (S.dhcpLeases, dhcpLeases), (S.dhcpHosts, dhcpHosts),
            (S.dnsmasqPidFile, dnsmasqPidFile), (S.reconcileInterval, reconcileInterval), (S.vpsHostnamePattern, vpsHostnamePattern),
            (S.negativeCacheTTL, negativeCacheTTL), (S.ownerRecheck, ownerRecheck), (S.environments, environments),
            (S.environmentsFile, environmentsFile), (S.tlsCertificate, tlsCertificate), (S.tlsKey, tlsKey), (S.tlsClientCA, tlsClientCa),
        ]
    }

    func validate() throws {
        try checkCommandLine(given)
        guard (tlsCertificate == nil) == (tlsKey == nil) else { throw ValidationError("give --tls-certificate and --tls-key together") }
        guard environments == nil || environmentsFile == nil else { throw ValidationError("give --environments or --environments-file, not both") }
        guard tlsClientCa == nil || tlsCertificate != nil else { throw ValidationError("--tls-client-ca needs --tls-certificate and --tls-key (mutual TLS is TLS)") }
    }

    func run() async throws {
        // First: SQLite takes its process-wide options only before anything opens a database,
        // and NIO its thread count only before anything uses its event loops.
        SQLiteProcess.configure()
        EventLoopThreads.configure(count: try GatewaySettings.eventLoops.value(eventLoops))
        let logger = try logging.makeLogger(label: "gateway", identifier: "vps-gateway")
        let gateway: Gateway
        let exported: (registry: MetricsRegistry, server: MetricsServer)?
        do {
            let configuration = try makeConfiguration()
            exported = try MetricsExport.make(address: try GatewaySettings.metricsAddress.value(metricsAddress), logger: logger)
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
        typealias S = GatewaySettings
        let secret = try SecretSource.load(file: apiSecretFile, setting: S.apiSecretFile, variable: "GATEWAY_API_SECRET")
        var configuration = Gateway.Configuration(apiSecret: secret)
        let address = try listen.map(ListenAddress.init) ?? ListenAddress(S.listen.defaultValue).port(try Self.portFromEnvironment())
        configuration.listenHost = address.host
        configuration.listenPort = address.port
        configuration.adminSocketPath = try S.adminSocket.value(adminSocket)
        configuration.heartbeatInterval = try S.heartbeatInterval.value(heartbeatInterval)
        configuration.registrationTimeout = try S.registrationTimeout.value(registrationTimeout)
        configuration.sendQueueCapacity = try S.sendQueue.value(sendQueue)
        configuration.defaultCallTimeout = try S.defaultTimeout.value(defaultTimeout)
        configuration.shutdownGracePeriod = try S.shutdownGrace.value(shutdownGrace)
        configuration.minClientPingInterval = try S.minClientPingInterval.value(minClientPingInterval)
        configuration.keepaliveInterval = try S.keepaliveInterval.value(keepaliveInterval)
        configuration.maxConnections = try S.maxConnections.value(maxConnections)
        configuration.maxClients = try S.maxClients.value(maxClients)
        configuration.maxConcurrentStreams = try S.maxConcurrentStreams.value(maxConcurrentStreams)
        configuration.maxMessageBytes = try S.maxMessageSize.value(maxMessageSize)
        configuration.maxHeaderListSize = try S.maxHeaderListSize.value(maxHeaderListSize)
        configuration.idleConnectionTimeout = try S.idleConnectionTimeout.value(idleConnectionTimeout)
        if let environmentsFile {
            configuration.answeringEnvironments = try EnvironmentsFile.read(environmentsFile)
        } else if let names = try S.environments.value(environments) {
            configuration.answeringEnvironments = EnvironmentsFile.parse(names)
        }
        if let tlsCertificate, let tlsKey {
            configuration.tls = .init(certificateChain: tlsCertificate, privateKey: tlsKey, clientCA: tlsClientCa)
        }
        configuration.maxAttempts = try S.maxAttempts.value(maxAttempts)
        configuration.maxStoredResultBytes = try S.maxStoredResult.value(maxStoredResult)
        configuration.journalRetention = try S.journalRetention.value(journalRetention)
        configuration.dhcp = try dhcpConfiguration()
        let upkeep = try S.journalUpkeepInterval.value(journalUpkeepInterval)
        configuration.pruneInterval = upkeep
        configuration.checkpointInterval = upkeep
        configuration.version = BuildInfo.version
        return configuration
    }

    /// The lease watcher's settings, or nil for `--dhcp-leases off`.
    func dhcpConfiguration() throws -> LeaseWatcher.Configuration? {
        typealias S = GatewaySettings
        var leases = S.dhcpLeases.defaultValue
        if let dhcpLeases {
            leases = dhcpLeases
        } else if let directory = Environment.value("GATEWAY_DHCP_LEASES_DIR") {
            leases = "\(directory)/dnsmasq.leases"
        }
        guard leases != "off" else { return nil }
        let hosts = try S.dhcpHosts.value(dhcpHosts)
        guard hosts != leases else { throw ConfigurationProblem("--dhcp-hosts and --dhcp-leases are the same file '\(hosts)'") }
        var configuration = LeaseWatcher.Configuration(leaseFile: leases, hostsFile: hosts)
        configuration.dnsmasqPidFile = try S.dnsmasqPidFile.value(dnsmasqPidFile)
        configuration.reconcileInterval = try S.reconcileInterval.value(reconcileInterval)
        configuration.vpsHostnamePattern = vpsHostnamePattern.map(HostnamePattern.init)
        configuration.negativeCacheTTL = try S.negativeCacheTTL.value(negativeCacheTTL)
        configuration.positiveRecheck = try S.ownerRecheck.value(ownerRecheck)
        return configuration
    }

    /// Opens and migrates the journal, or nil for `--journal off`.
    func openJournal(logger: Logger) async throws -> RequestJournal? {
        let path = try GatewaySettings.journal.value(journal)
        guard path != "off" else {
            logger.warning("running without a request journal: calls are not recorded, retried or replayed")
            return nil
        }
        return try await RequestJournal.open(
            at: path,
            migrations: try migrations.load(),
            durability: RequestJournal.Durability(rawValue: try GatewaySettings.journalSync.value(journalSync)) ?? .full,
            exclusive: true,
            logger: logger
        )
    }

    /// `GATEWAY_GRPC_PORT`, the port when `--listen` is not given; nil when unset.
    static func portFromEnvironment() throws -> Int? {
        guard let text = Environment.value("GATEWAY_GRPC_PORT") else { return nil }
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
        // The setting's rule words the error, so the flag and the YAML say the same.
        let problem = ValidationError(GatewaySettings.listen.problem(with: text, from: .commandLine) ?? "--listen '\(text)' is not HOST:PORT")
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw problem
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard !host.contains(" ") else { throw problem }
        self.init(host: host, port: port)
    }

    /// This address with `port` instead of its own, when one is given.
    func port(_ port: Int?) -> ListenAddress { ListenAddress(host: host, port: port ?? self.port) }
}
