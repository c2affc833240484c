import ArgumentParser
import GatewayProtocol
import GatewayWorker
import LeaseInventory
import Logging
import ServiceLifecycle
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

    @Option(name: [.customLong("env"), .customLong("environment")], help: ArgumentHelp("The environment this worker answers for (production, beta, dev, ...).", valueName: "name"))
    var environment: String?

    @Option(help: ArgumentHelp("The environment's inventory: sqlite:PATH, or the platform's database as postgres://USER@HOST[:PORT]/DB[?sslmode=disable|prefer|require|verify-full] (no password in it).", valueName: "url"))
    var inventory: String?

    @Option(help: ArgumentHelp("File holding the PostgreSQL inventory's password. Default: $VPS_INVENTORY_PASSWORD_FILE, else the systemd credential inventory-password ($CREDENTIALS_DIRECTORY/inventory-password) when present.", valueName: "path"))
    var inventoryPasswordFile: String?

    @Option(help: ArgumentHelp("This instance's id, unique among the gateway's clients. Default: the host name.", valueName: "id"))
    var instanceID: String?

    @Option(help: ArgumentHelp("This worker's node name, sent when an endpoint has none. Default: the host name.", valueName: "name"))
    var node: String?

    @Option(help: ArgumentHelp("The gateway to dial (wins over VPS_GATEWAY_URL).", valueName: "url"))
    var gatewayURL: String?

    @Option(help: ArgumentHelp("File holding the shared secret (wins over VPS_GATEWAY_API_SECRET).", valueName: "path"))
    var apiSecretFile: String?

    @Option(help: ArgumentHelp("Requests handled at once, over all streams; more are answered `unavailable` (the gateway retries them).", valueName: "count"))
    var maxConcurrent = 256

    @Option(help: ArgumentHelp("How often the worker sends a heartbeat.", valueName: "duration"))
    var heartbeatInterval = DurationArgument(.seconds(30), text: "30s")

    @Option(help: ArgumentHelp("How often the worker pings the gateway at the HTTP/2 level, so idle connections are kept and dead ones noticed. Must not be below the gateway's --min-client-ping-interval.", valueName: "duration"))
    var keepaliveInterval = DurationArgument(.seconds(30), text: "30s")

    @Option(help: ArgumentHelp("First reconnect delay.", valueName: "duration"))
    var backoffInitial = DurationArgument(.seconds(1), text: "1s")

    @Option(help: ArgumentHelp("Largest reconnect delay.", valueName: "duration"))
    var backoffMax = DurationArgument(.seconds(60), text: "60s")

    @Option(help: ArgumentHelp("Final answers remembered by request id, so a request the gateway repeats (after its crash) is answered without running the handler again; 0 turns it off.", valueName: "count"))
    var responseCacheSize = 100_000

    @Option(help: ArgumentHelp("How long an answer stays in the response cache.", valueName: "duration"))
    var responseCacheTTL = DurationArgument(.seconds(600), text: "10m")

    @Option(help: ArgumentHelp("For https:// gateways: trust only certificates chaining to this PEM CA (default: the system's roots).", valueName: "path"))
    var tlsCa: String?

    @Option(help: ArgumentHelp("For https:// gateways that require client certificates: this PEM certificate chain (with --tls-key).", valueName: "path"))
    var tlsCertificate: String?

    @Option(help: ArgumentHelp("The PEM private key of --tls-certificate.", valueName: "path"))
    var tlsKey: String?

    @Option(help: ArgumentHelp("On shutdown, how long requests in flight get after `drain`; the process exits within this plus 3 s.", valueName: "duration"))
    var shutdownGrace = DurationArgument(.seconds(5), text: "5s")

    @Option(help: ArgumentHelp("For tests and benchmarks: delay every answer by this long, as a slow database would.", valueName: "duration"))
    var simulateLatency: DurationArgument?

    @OptionGroup var logging: LogOptions

    @OptionGroup var metrics: MetricsOptions

    @Flag(help: "Shut down when stdin reaches end-of-file: the supervisor's lifeline, so no child outlives it.")
    var lifelineStdin = false

    func validate() throws {
        _ = try heartbeatInterval.requirePositive("--heartbeat-interval")
        _ = try backoffInitial.requirePositive("--backoff-initial")
        _ = try keepaliveInterval.requirePositive("--keepalive-interval")
        _ = try backoffMax.requirePositive("--backoff-max")
        _ = try shutdownGrace.requirePositive("--shutdown-grace")
        guard (tlsCertificate == nil) == (tlsKey == nil) else { throw ValidationError("give --tls-certificate and --tls-key together") }
        guard backoffMax.duration >= backoffInitial.duration else {
            throw ValidationError("--backoff-max (\(backoffMax)) must not be below --backoff-initial (\(backoffInitial))")
        }
        guard responseCacheSize >= 0 else { throw ValidationError("--response-cache-size must not be negative") }
        guard maxConcurrent >= 1 else { throw ValidationError("--max-concurrent must be at least 1, got \(maxConcurrent)") }
    }

    func run() async throws {
        let environmentName = environment ?? Environment.value("VPS_ENVIRONMENT") ?? "unknown"
        let logger = try logging.makeLogger(label: "worker-\(environmentName)", identifier: "vps-gateway-worker-\(environmentName)")
        let worker: Worker
        let opened: InventoryOpener.Opened
        let exported: (registry: MetricsRegistry, server: MetricsServer)?
        do {
            exported = try metrics.make(variable: "VPS_WORKER_METRICS_ADDRESS", logger: logger)
            let configuration = try makeConfiguration()
            let inventoryURL = try inventory ?? Environment.value("VPS_INVENTORY_URL")
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
            if let simulateLatency {
                handlers.register(RequestMethods.findVPSByLease, DelayedHandler(lookup, delay: simulateLatency.duration))
            } else {
                handlers.register(RequestMethods.findVPSByLease, lookup)
            }
            handlers.register(RequestMethods.ping, PingHandler())
            worker = Worker(configuration: configuration, handlers: handlers, metrics: registry, logger: logger)
            logger.info("worker starting", metadata: [
                "environment": "\(configuration.environment)", "instance": "\(configuration.instanceID)",
                "inventory": "\(inventory.displayName)", "gateways": "\(configuration.endpoints.map(\.description).joined(separator: ","))",
            ])
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
        guard let environment = environment ?? Environment.value("VPS_ENVIRONMENT") else {
            throw ConfigurationProblem("no environment: give --env NAME (production, beta, dev, ...) or set VPS_ENVIRONMENT")
        }
        let endpoints: [GatewayEndpoint]
        if let url = gatewayURL {
            endpoints = [try GatewayEndpoint(url: url, source: "--gateway-url")]
        } else if let list = Environment.value("VPS_NODE_GATEWAY_ENDPOINTS") {
            endpoints = try GatewayEndpoint.parseList(list)
        } else {
            endpoints = [try GatewayEndpoint(url: Environment.value("VPS_GATEWAY_URL") ?? "http://127.0.0.1:1537", source: "VPS_GATEWAY_URL")]
        }
        let secret = try SecretSource.load(file: apiSecretFile, fileVariable: "VPS_GATEWAY_API_SECRET_FILE", variable: "VPS_GATEWAY_API_SECRET")
        let host = Environment.hostName
        var configuration = Worker.Configuration(
            endpoints: endpoints, apiSecret: secret, instanceID: instanceID ?? host, environment: environment
        )
        configuration.node = node ?? host
        configuration.version = BuildInfo.version
        configuration.maxConcurrentRequests = maxConcurrent
        configuration.shutdownGracePeriod = shutdownGrace.duration
        configuration.tls.trustRoots = tlsCa
        configuration.tls.certificateChain = tlsCertificate
        configuration.tls.privateKey = tlsKey
        configuration.heartbeatInterval = heartbeatInterval.duration
        configuration.keepaliveInterval = keepaliveInterval.duration
        configuration.responseCacheSize = responseCacheSize
        configuration.responseCacheLifetime = responseCacheTTL.duration
        configuration.backoff = Backoff.Configuration(initial: backoffInitial.duration, maximum: backoffMax.duration)
        return configuration
    }
}
