import ArgumentParser
import GatewayProtocol
import GatewayWorker
import LeaseInventory
import Logging
import ServiceLifecycle
import Settings
import SQLiteDirect
import Supervision
import SystemdSupport
import Telemetry
import UnixSignals

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run the VPS-service side for one environment: dial the gateway(s) and answer requests.",
        discussion: """
            The worker dials every configured gateway, authenticates, registers with its \
            instance id, node, environment and methods, and answers requests from its \
            environment's inventory. It reconnects after any loss with exponential backoff and \
            jitter (1 s doubling to 60 s), reset after a stream stayed up 10 s.

            Methods answered: FindVPSByLease (from the inventory) and Ping (echoes its payload; \
            for health checks and transport benchmarks).

            Environment:
              VPS_GATEWAY_URL              the gateway to dial, http://HOST:PORT or https://HOST:PORT (default http://127.0.0.1:1537)
              VPS_NODE_GATEWAY_ENDPOINTS   several gateways: node1:http://h1:1537,node2:http://h2:1537 (wins over VPS_GATEWAY_URL)
              VPS_GATEWAY_API_SECRET       the shared secret (or --api-secret-file)
              VPS_GATEWAY_API_SECRET_FILE  a file holding the secret
              VPS_INVENTORY_URL            the inventory when --inventory is not given
              VPS_INVENTORY_PASSWORD_FILE  the PostgreSQL inventory's password file when --inventory-password-file is not given
              VPS_ENVIRONMENT              the environment when --env is not given
              VPS_GATEWAY_LOG_LEVEL, VPS_GATEWAY_LOG_FORMAT

            Examples:
              VPS_GATEWAY_API_SECRET=s3cret vps-gateway worker --env production \\
                  --inventory sqlite:/var/lib/vps-service/production.sqlite3
              VPS_NODE_GATEWAY_ENDPOINTS=node1:http://10.0.0.1:1537,node2:http://10.0.0.2:1537 \\
                  vps-gateway worker --env beta --instance-id beta-1 --inventory sqlite:beta.sqlite3
              vps-gateway worker --env production --api-secret-file /etc/vps-gateway/api-secret \\
                  --inventory 'postgres://vps_gateway@db.internal/platform?sslmode=require' \\
                  --inventory-password-file /etc/vps-gateway/inventory-password

            A PostgreSQL inventory that cannot be reached does not stop the worker: it registers, \
            answers lookups `unavailable` (the gateway retries them; its journal keeps them), says \
            so in its STATUS line and log, and reconnects with backoff (1 s doubling to 30 s) \
            once the database is back. A wrong password, an unknown database or missing tables \
            are configuration errors (78).

            SIGTERM/SIGINT: `drain` to every gateway, requests in flight get --shutdown-grace, \
            then the streams are closed (a gateway that does not answer is left after 1 s). A \
            second SIGTERM/SIGINT stops at once. The process always exits within the grace plus \
            3 s.

            Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT); 78 when the configuration or \
            the inventory is unusable; 70 on an internal failure, or when a stop outlived its bound.
            """
    )

    @Option(name: [.customLong(WorkerSettings.environment.flag), .customLong("environment")], help: WorkerSettings.environment.argumentHelp)
    var environment: String?

    @Option(name: .customLong(WorkerSettings.inventory.flag), help: WorkerSettings.inventory.argumentHelp)
    var inventory: String?

    @Option(name: .customLong(WorkerSettings.inventoryPasswordFile.flag), help: WorkerSettings.inventoryPasswordFile.argumentHelp)
    var inventoryPasswordFile: String?

    @Option(name: .customLong(WorkerSettings.instanceID.flag), help: WorkerSettings.instanceID.argumentHelp)
    var instanceID: String?

    @Option(name: .customLong(WorkerSettings.node.flag), help: WorkerSettings.node.argumentHelp)
    var node: String?

    @Option(name: .customLong(WorkerSettings.gatewayURL.flag), help: WorkerSettings.gatewayURL.argumentHelp)
    var gatewayURL: String?

    @Option(name: .customLong(WorkerSettings.apiSecretFile.flag), help: WorkerSettings.apiSecretFile.argumentHelp)
    var apiSecretFile: String?

    @Option(name: .customLong(WorkerSettings.maxConcurrent.flag), help: WorkerSettings.maxConcurrent.argumentHelp)
    var maxConcurrent: String?

    @Option(name: .customLong(WorkerSettings.heartbeatInterval.flag), help: WorkerSettings.heartbeatInterval.argumentHelp)
    var heartbeatInterval: String?

    @Option(name: .customLong(WorkerSettings.keepaliveInterval.flag), help: WorkerSettings.keepaliveInterval.argumentHelp)
    var keepaliveInterval: String?

    @Option(name: .customLong(WorkerSettings.backoffInitial.flag), help: WorkerSettings.backoffInitial.argumentHelp)
    var backoffInitial: String?

    @Option(name: .customLong(WorkerSettings.backoffMax.flag), help: WorkerSettings.backoffMax.argumentHelp)
    var backoffMax: String?

    @Option(name: .customLong(WorkerSettings.responseCacheSize.flag), help: WorkerSettings.responseCacheSize.argumentHelp)
    var responseCacheSize: String?

    @Option(name: .customLong(WorkerSettings.responseCacheTTL.flag), help: WorkerSettings.responseCacheTTL.argumentHelp)
    var responseCacheTTL: String?

    @Option(name: .customLong(WorkerSettings.tlsCA.flag), help: WorkerSettings.tlsCA.argumentHelp)
    var tlsCa: String?

    @Option(name: .customLong(WorkerSettings.tlsCertificate.flag), help: WorkerSettings.tlsCertificate.argumentHelp)
    var tlsCertificate: String?

    @Option(name: .customLong(WorkerSettings.tlsKey.flag), help: WorkerSettings.tlsKey.argumentHelp)
    var tlsKey: String?

    @Option(name: .customLong(WorkerSettings.shutdownGrace.flag), help: WorkerSettings.shutdownGrace.argumentHelp)
    var shutdownGrace: String?

    @Option(name: .customLong(WorkerSettings.simulateLatency.flag), help: WorkerSettings.simulateLatency.argumentHelp)
    var simulateLatency: String?

    @Option(name: .customLong(WorkerSettings.metricsAddress.flag), help: WorkerSettings.metricsAddress.argumentHelp)
    var metricsAddress: String?

    @OptionGroup var logging: LogOptions

    @Flag(help: "Shut down when stdin reaches end-of-file: the supervisor's lifeline, so no child outlives it.")
    var lifelineStdin = false

    /// Each setting with the text the command line gave for it, for the checks below.
    private var given: [(setting: any AnySetting, text: String?)] {
        typealias S = WorkerSettings
        return [
            (S.environment, environment), (S.inventory, inventory), (S.inventoryPasswordFile, inventoryPasswordFile),
            (S.instanceID, instanceID), (S.node, node), (S.gatewayURL, gatewayURL), (S.apiSecretFile, apiSecretFile),
            (S.maxConcurrent, maxConcurrent), (S.heartbeatInterval, heartbeatInterval), (S.keepaliveInterval, keepaliveInterval),
            (S.backoffInitial, backoffInitial), (S.backoffMax, backoffMax), (S.responseCacheSize, responseCacheSize),
            (S.responseCacheTTL, responseCacheTTL), (S.tlsCA, tlsCa), (S.tlsCertificate, tlsCertificate), (S.tlsKey, tlsKey),
            (S.shutdownGrace, shutdownGrace), (S.simulateLatency, simulateLatency), (S.metricsAddress, metricsAddress),
        ]
    }

    func validate() throws {
        try checkCommandLine(given)
        guard (tlsCertificate == nil) == (tlsKey == nil) else { throw ValidationError("give --tls-certificate and --tls-key together") }
        let initial = try WorkerSettings.backoffInitial.value(backoffInitial), maximum = try WorkerSettings.backoffMax.value(backoffMax)
        guard maximum >= initial else {
            throw ValidationError("--backoff-max (\(maximum.settingText)) must not be below --backoff-initial (\(initial.settingText))")
        }
    }

    func run() async throws {
        // First: SQLite takes its process-wide options only before anything opens a database.
        SQLiteProcess.configure()
        let environmentName = (try? WorkerSettings.environment.value(environment)) ?? "unknown"
        let logger = try logging.makeLogger(label: "worker-\(environmentName)", identifier: "vps-gateway-worker-\(environmentName)")
        let worker: Worker
        let opened: InventoryOpener.Opened
        let exported: (registry: MetricsRegistry, server: MetricsServer)?
        do {
            exported = try MetricsExport.make(address: try WorkerSettings.metricsAddress.value(metricsAddress), logger: logger)
            let configuration = try makeConfiguration()
            let inventoryURL = try WorkerSettings.inventory.value(inventory)
                ?? { throw ConfigurationProblem("no inventory: give --inventory sqlite:PATH or set VPS_INVENTORY_URL") }()
            opened = try await InventoryOpener.open(url: inventoryURL, password: try InventoryPassword.load(file: inventoryPasswordFile, for: inventoryURL), logger: logger)
            let inventory = opened.inventory
            if !opened.missingIndexes.isEmpty {
                logger.warning("the inventory lacks indexes a fast lookup needs; `vps-gateway inventory check` prints them", metadata: [
                    "inventory": "\(inventory.displayName)", "missing": "\(opened.missingIndexes.count)",
                ])
            }
            var handlers = HandlerRegistry()
            let registry = exported?.registry
            var onInventoryError: (@Sendable () -> Void)?
            if let registry { onInventoryError = { registry.increment(Metric.workerInventoryErrors) } }
            let lookup = FindVPSByLeaseHandler(inventory: inventory, onInventoryError: onInventoryError)
            if let simulateLatency = try WorkerSettings.simulateLatency.value(simulateLatency) {
                handlers.register(RequestMethods.findVPSByLease, DelayedHandler(lookup, delay: simulateLatency))
            } else {
                handlers.register(RequestMethods.findVPSByLease, lookup)
            }
            handlers.register(RequestMethods.ping, PingHandler())
            worker = Worker(configuration: configuration, handlers: handlers, metrics: registry, logger: logger)
            var starting: Logger.Metadata = [
                "environment": "\(configuration.environment)", "instance": "\(configuration.instanceID)",
                "inventory": "\(inventory.displayName)", "gateways": "\(configuration.endpoints.map(\.description).joined(separator: ","))",
            ]
            if inventory is SQLiteInventory {
                let memoryStatistics = SQLiteProcess.memoryStatisticsField
                starting[memoryStatistics.key] = "\(memoryStatistics.value)"
            }
            logger.info("worker starting", metadata: starting)
        } catch {
            throw fail("\(error)", Exit.config)
        }
        let inventory = opened.inventory
        let reporter = NotifyReporter(ready: { await worker.waitUntilRegistered() }, status: {
            "worker \(worker.statusLine)" + (inventory.healthLine.map { "; \($0)" } ?? "")
        })
        do {
            // Listed first, so it stops last: requests still draining can use the database.
            try await runRoleGroup(
                (exported.map { [$0.server] } ?? []) + (opened.service.map { [$0] } ?? []) + [worker, reporter], role: "worker", lifeline: lifelineStdin,
                shutdownLimit: worker.configuration.shutdownLimit, logger: logger,
                unfinished: { ["requests_running": "\(worker.runningRequests)"] }
            )
        } catch let error as WorkerError {
            throw fail("worker stopped: \(error)", Exit.config)
        } catch {
            throw fail("worker stopped: \(error)", Exit.software)
        }
    }

    func makeConfiguration() throws -> Worker.Configuration {
        typealias S = WorkerSettings
        guard let environment = try S.environment.value(environment) else {
            throw ConfigurationProblem("no environment: give --env NAME (production, beta, dev, ...) or set VPS_ENVIRONMENT")
        }
        let endpoints: [GatewayEndpoint]
        if let url = gatewayURL {
            endpoints = [try GatewayEndpoint(url: url, source: "--gateway-url")]
        } else if let list = Environment.value("VPS_NODE_GATEWAY_ENDPOINTS") {
            endpoints = try GatewayEndpoint.parseList(list)
        } else {
            endpoints = [try GatewayEndpoint(url: try S.gatewayURL.value(nil), source: "VPS_GATEWAY_URL")]
        }
        let secret = try SecretSource.load(file: apiSecretFile, setting: S.apiSecretFile, variable: "VPS_GATEWAY_API_SECRET")
        let host = Environment.hostName
        var configuration = Worker.Configuration(
            endpoints: endpoints, apiSecret: secret, instanceID: instanceID ?? host, environment: environment
        )
        configuration.node = node ?? host
        configuration.version = BuildInfo.version
        configuration.maxConcurrentRequests = try S.maxConcurrent.value(maxConcurrent)
        configuration.shutdownGracePeriod = try S.shutdownGrace.value(shutdownGrace)
        configuration.tls.trustRoots = tlsCa
        configuration.tls.certificateChain = tlsCertificate
        configuration.tls.privateKey = tlsKey
        configuration.heartbeatInterval = try S.heartbeatInterval.value(heartbeatInterval)
        configuration.keepaliveInterval = try S.keepaliveInterval.value(keepaliveInterval)
        configuration.responseCacheSize = try S.responseCacheSize.value(responseCacheSize)
        configuration.responseCacheLifetime = try S.responseCacheTTL.value(responseCacheTTL)
        configuration.backoff = Backoff.Configuration(initial: try S.backoffInitial.value(backoffInitial), maximum: try S.backoffMax.value(backoffMax))
        return configuration
    }
}
