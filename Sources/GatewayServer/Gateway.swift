import AsyncPrimitives
import DHCPLeases
import Foundation
// Public: the gateway is given its journal.
public import GatewayJournal
// Public: the gateway is given the request methods it knows.
public import GatewayProtocol
// Public: the gateway is a `Service` that a `ServiceGroup` runs and shuts down.
public import Logging
// Public: the gateway is given the lock on its admin socket.
public import ProcessLifecycle
// Public: the stream service can be served on an in-memory listener.
public import RPCEndpoint
public import ServiceLifecycle
import Synchronization
public import Telemetry
import TextFormats

/// The gateway: accepts VPS-service streams, fans calls out to them, and serves the admin
/// API on a Unix socket.
///
/// ```swift
/// var configuration = Gateway.Configuration(apiSecret: secret)
/// configuration.listenPort = 1537
/// let gateway = Gateway(configuration: configuration, logger: logger)
/// try await ServiceGroup(services: [gateway], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
public final class Gateway: Service, Sendable {
    public let configuration: Configuration
    let logger: Logger
    let clients: ConnectedClients
    let router: CallRouter
    /// The known request methods' JSON forms, for the admin API.
    let methodMessages: MethodMessages
    let secretCheck: SecretCheck
    /// Nil when the gateway runs with `--journal off`.
    let journal: RequestJournal?
    let runner: RequestRunner?
    /// Nil when the gateway runs without a lease file.
    let leaseWatcher: LeaseWatcher?
    /// The admin socket this gateway bound, removed at exit only while it is still that one.
    private let adminSocketFile = Mutex<OwnedPath?>(nil)
    /// What READY=1 waits for: listening, and with a journal, its unfinished rows handed back;
    /// and, once it begins, the drain (health then says NOT_SERVING).
    let readiness = WatchedState<Set<StartupCondition>>([])
    /// The stream port as bound (a configured port 0 becomes the kernel's choice).
    private let boundStreamPort = Mutex<Int?>(nil)
    let metrics: MetricsRegistry?
    /// The metrics counted per call, resolved once.
    let hotMetrics: HotMetrics?
    /// Repeated refusals of unauthenticated streams, one log line per peer and minute.
    let refusedStreams: RefusalLog
    /// The client streams, each from `register` to its end.
    let streams: ClientStreams

    /// Held for the gateway's life: one gateway per admin socket.
    private let instanceLock: InstanceLock?
    /// Where the stream service takes its streams instead of the configured port; nil serves
    /// the port.
    let streamListener: InMemoryListener?

    /// Takes the admin socket's lock (`PATH.lock`): the first thing a gateway does, before it
    /// opens its journal, so a second gateway is refused (``GatewayError/Code/alreadyRunning``,
    /// naming the first one's pid) without touching anything of the first.
    public static func lockAdminSocket(of configuration: Configuration) throws -> InstanceLock {
        try AdminSocket.lock(path: configuration.adminSocketPath)
    }

    /// - Parameters:
    ///   - journal: the opened and migrated request journal, or nil to run without one
    ///     (calls are then neither recorded nor retried).
    ///   - methods: the request methods whose answers the gateway judges by their own rule
    ///     and whose messages the admin API speaks as JSON; any other method name is still
    ///     routed (its successes win as they are).
    ///   - instanceLock: from ``lockAdminSocket(of:)``; taken by ``run()`` when not given.
    ///   - metrics: where calls, clients, journal, leases and stream messages are counted;
    ///     nil records nothing.
    ///   - streamListener: serves the stream service (registration, health) to in-memory
    ///     clients instead of on the configured port: tests that run workers in this process.
    public init(
        configuration: Configuration, journal: RequestJournal?, methods: [AnyRequestMethod] = RequestMethods.all,
        instanceLock: InstanceLock? = nil, metrics: MetricsRegistry? = nil, streamListener: InMemoryListener? = nil, logger: Logger
    ) {
        self.streamListener = streamListener
        let methods = RequestMethods.byName(methods)
        self.methodMessages = MethodMessages(methods: methods)
        self.instanceLock = instanceLock
        self.metrics = metrics
        let hotMetrics = metrics.map(HotMetrics.init)
        self.hotMetrics = hotMetrics
        self.configuration = configuration
        self.refusedStreams = RefusalLog(logger: logger, message: "refused a stream: missing or wrong API secret")
        let clients = ConnectedClients(limit: configuration.maxClients)
        self.clients = clients
        self.logger = logger
        let router = CallRouter(clients: clients, rules: AnswerRules(methods), answeringEnvironments: configuration.answeringEnvironments, logger: logger)
        self.router = router
        self.secretCheck = SecretCheck(secret: configuration.apiSecret)
        self.journal = journal
        let runner = journal.map { RequestRunner(journal: $0, router: router, configuration: configuration, logger: logger) }
        self.runner = runner
        let lookups = LeaseLookups(caller: MethodCaller(router: router, runner: runner), timeout: configuration.leaseLookupTimeout)
        let leaseWatcher = configuration.dhcp.map { dhcp in
            LeaseWatcher(configuration: dhcp, lookup: { lease, requestID in await lookups(lease, requestID) }, logger: logger, observer: metrics.map(Self.leaseObserver))
        }
        self.leaseWatcher = leaseWatcher
        self.streams = ClientStreams(
            settings: .init(configuration), clients: clients, router: router, metrics: hotMetrics, logger: logger,
            clientsChanged: { environment in Self.recordClients(of: environment, clients, metrics) },
            // "Not found" from the others was said without this environment.
            environmentAppeared: { environment in leaseWatcher?.forgetNotFound(reason: "environment \(environment) registered") }
        )
        if let metrics {
            journal?.observeCommits { metrics.record(Metric.journalCommitDuration, duration: $0) }
            // Zero from the start, so "no production client" is a value an alert can see.
            for environment in configuration.answeringEnvironments { metrics.set(Metric.clients, environment, to: 0) }
        }
    }

    private static func leaseObserver(_ metrics: MetricsRegistry) -> @Sendable (LeaseWatcher.Event) -> Void {
        { event in
            switch event {
            case .hostsFileWritten:
                metrics.increment(Metric.hostsFileWrites)
            case .leaseStates(let states):
                for (state, count) in states { metrics.set(Metric.leases, state, to: Double(count)) }
            }
        }
    }

    /// Counts a finished admin call.
    func recordCall(method: String, outcome: String, duration: Duration) {
        hotMetrics?.calls.record(method, outcome: outcome, duration: duration)
    }

    /// Sets the clients gauge of `environment` to its registered count.
    private static func recordClients(of environment: String, _ clients: ConnectedClients, _ metrics: MetricsRegistry?) {
        metrics?.set(Metric.clients, environment, to: Double(clients.connections(environment: environment).count))
    }

    /// Checks the configuration, binds both sockets and serves until graceful shutdown (then
    /// drains, within a bound) or cancellation (then stops at once).
    ///
    /// The one place the gateway's long-running parts are put together: each is a `Service`
    /// of one `ServiceGroup`, started in this order and, on a graceful shutdown, stopped in the
    /// reverse one, each after the one before it has finished. So the servers drain first,
    /// then the lease watcher, memory upkeep, journal upkeep and the runner stop, and the
    /// journal's writer, which everything else writes through, is stopped last, after it
    /// committed what they left. The servers ending (both) shuts the rest down the same way.
    public func run() async throws {
        try configuration.validate()
        // Held until the gateway ends: a second gateway on this socket is refused up front.
        let instanceLock = try self.instanceLock ?? AdminSocket.lock(path: configuration.adminSocketPath)
        try AdminSocket.prepare(path: configuration.adminSocketPath)
        let serving = GatewayServing(gateway: self)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let journal {
            services.append(.init(service: JournalWriter(journal: journal), successTerminationBehavior: .ignore))
            if let runner {
                services.append(.init(service: RequestRunning(runner: runner), successTerminationBehavior: .ignore))
                services.append(.init(service: JournalUpkeep(gateway: self, journal: journal, runner: runner), successTerminationBehavior: .ignore))
            }
        }
        services.append(.init(service: FreedMemoryReturn(), successTerminationBehavior: .ignore))
        if let leaseWatcher {
            services.append(.init(service: LeaseWatching(gateway: self, watcher: leaseWatcher), successTerminationBehavior: .ignore))
        }
        services.append(.init(service: serving, successTerminationBehavior: .gracefullyShutdownGroup))
        try await ServiceGroup(configuration: .init(services: services, logger: logger)).run()
        // Only our own socket: a successor may already have bound a new one at this path.
        adminSocketFile.withLock { _ = $0?.removeIfOwned() }
        withExtendedLifetime(instanceLock) {}
        logger.info("gateway stopped", metadata: serving.report?.metadata ?? ["how": "cancelled: stopped at once"])
    }

    /// Marks the gateway listening on `streamPort`, with the admin socket it bound.
    func listening(onStreamPort streamPort: Int?) {
        adminSocketFile.withLock { $0 = OwnedPath(claiming: configuration.adminSocketPath) }
        boundStreamPort.withLock { $0 = streamPort }
        readiness.update { _ = $0.insert(.listening) }
    }

    var isShuttingDown: Bool { clients.isClosed }

    /// The environments that answer calls addressed to all, and whose "not found" a lookup
    /// needs (see ``Configuration/answeringEnvironments``). Newly added ones are asked again
    /// for the leases nobody else owned.
    public var answeringEnvironments: Set<String> {
        get { router.answeringEnvironments }
    }

    public func setAnsweringEnvironments(_ environments: Set<String>) {
        let added = environments.subtracting(router.answeringEnvironments)
        router.setAnsweringEnvironments(environments)
        logger.notice("answering environments set", metadata: ["environments": "\(environments.sorted().joined(separator: ","))"])
        if !added.isEmpty { leaseWatcher?.forgetNotFound(reason: "environment(s) \(added.sorted().joined(separator: ",")) configured") }
    }

    /// Returns once the gateway listens and, with a journal, has handed every unfinished row
    /// of an earlier run back to the runner: what `READY=1` means.
    public func waitUntilReady() async {
        let needed = readyConditions
        await readiness.wait { needed.isSubset(of: $0) }
    }

    /// Listening, and with a journal, recovered.
    var readyConditions: Set<StartupCondition> { journal == nil ? [.listening] : [.listening, .recovered] }

    /// Returns once the gateway listens: clients can register, though the journal may still
    /// be replaying.
    public func waitUntilServing() async {
        await readiness.wait { $0.contains(.listening) }
    }

    /// The port the stream server listens on, once ``waitUntilServing()`` has returned.
    public var streamPort: Int? { boundStreamPort.withLock { $0 } }

    /// Calls `method` on the environments with a typed request and returns its typed answer:
    /// through the journal when the gateway has one (recorded before it is sent, retried, and
    /// finished after a restart), straight through the fan-out otherwise. The winning answer
    /// is the first one the method's rule accepts.
    public func call<Request, Response>(
        _ method: RequestMethod<Request, Response>, _ request: Request,
        timeout: Duration? = nil, requestID: String? = nil, origin: String = "api"
    ) async -> MethodCallOutcome<Response> {
        await MethodCaller(router: router, runner: runner).call(
            method, request, requestID: requestID ?? RequestID.new(), origin: origin,
            timeout: timeout ?? configuration.defaultCallTimeout
        )
    }

    /// False while the journal is corrupt: the gateway stops its watchdog pings, so the
    /// supervisor (or systemd) restarts it, and the restart refuses the damaged file.
    public var isAlive: Bool { journal?.writeFailure?.code != .corrupt }

    /// False while the journal's writes fail: health says NOT_SERVING and STATUS says why.
    var journalHealthy: Bool { journal?.writeFailure == nil }

    /// One line for `STATUS=`: clients per environment, calls in flight, unfinished journal rows.
    public var statusLine: String {
        let connections = clients.connections()
        var perEnvironment: [String: Int] = [:]
        for connection in connections { perEnvironment[connection.identity.environment, default: 0] += 1 }
        let environments = perEnvironment.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        var line = "\(connections.count) client(s)\(environments.isEmpty ? "" : " (\(environments))"); \(router.pendingCount) call(s) in flight"
        if journal != nil && !readiness.value.contains(.recovered) { line = "recovering the journal; " + line }
        if let journal, let counts = try? journal.unfinishedCounts() {
            line += "; journal \(counts.pending) pending, \(counts.inFlight) in flight"
        }
        if let failure = journal?.writeFailure {
            line = "UNHEALTHY: journal writes failing (\(failure.code)): " + line
        }
        if let leaseWatcher {
            let status = leaseWatcher.status(withEntries: false)
            line += "; \(status.summary.active) lease(s), \(status.hostsEntries) named"
        }
        return line
    }


    /// Returns once the clients that reconnect after a (re)start have: after the first
    /// registration, when none came for the quiet period; at the latest after the settle time.
    func waitForClientsToSettle() async {
        let deadline = ContinuousClock.now + configuration.clientSettleTime
        let expected = router.answeringEnvironments
        if !expected.isEmpty {
            // The environments are known: wait for each of them (bounded), not for a quiet spell.
            while ContinuousClock.now < deadline && !Task.isCancelled && !clients.isClosed && !expected.isSubset(of: clients.environments) {
                let generation = clients.eligible(for: .all, method: "").generation
                if expected.isSubset(of: clients.environments) { return }
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.clients.waitForRegistration(after: generation) }
                    group.addTask { _ = await waitUntil(deadline) }
                    await group.next()
                    group.cancelAll()
                }
            }
            if !expected.isSubset(of: clients.environments) {
                logger.warning("not every configured environment registered within the settle time; lookups wait for them", metadata: [
                    "missing": "\(expected.subtracting(clients.environments).sorted().joined(separator: ","))",
                    "settle_time": "\(configuration.clientSettleTime)",
                ])
            }
            return
        }
        var seen = clients.eligible(for: .all, method: "").generation
        var anyRegistered = clients.count > 0
        while ContinuousClock.now < deadline && !Task.isCancelled && !clients.isClosed {
            let wait = anyRegistered ? min(configuration.clientQuietPeriod, deadline - .now) : deadline - .now
            let generation = seen
            let registered = await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    await self.clients.waitForRegistration(after: generation)
                    return !Task.isCancelled
                }
                group.addTask {
                    try? await Task.sleep(for: wait)
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            if !registered && anyRegistered { return }
            anyRegistered = anyRegistered || registered
            seen = clients.eligible(for: .all, method: "").generation
        }
    }
}

extension Gateway.Configuration {
    /// The stream port's endpoint and its limits.
    var streamEndpoint: RPCServer.Configuration {
        var endpoint = RPCServer.Configuration(address: .tcp(host: listenHost, port: listenPort), name: "the stream port")
        endpoint.maxMessageBytes = maxMessageBytes
        endpoint.maxConcurrentStreams = maxConcurrentStreams
        endpoint.maxHeaderListSize = maxHeaderListSize
        endpoint.maxConnections = maxConnections
        endpoint.idleTimeout = idleConnectionTimeout
        endpoint.keepaliveInterval = keepaliveInterval
        endpoint.keepaliveTimeout = keepaliveTimeout
        endpoint.minClientPingInterval = minClientPingInterval
        endpoint.tls = tls
        return endpoint
    }

    /// The admin socket's endpoint: the same limits; no keepalive (local, short calls).
    var adminEndpoint: RPCServer.Configuration {
        var endpoint = streamEndpoint
        endpoint.address = .unix(path: adminSocketPath)
        endpoint.name = "the admin socket"
        endpoint.keepaliveInterval = nil
        endpoint.tls = nil
        // Owner and group only, before anyone can connect: the admin API sends any request.
        endpoint.unixSocketMode = 0o660
        return endpoint
    }

    func validate() throws {
        func invalid(_ message: String) -> GatewayError { GatewayError(code: .invalidConfiguration, message: message) }
        if apiSecret.isEmpty {
            throw invalid("no API secret: set GATEWAY_API_SECRET or give --api-secret-file PATH (the secret every VPS-service instance sends in x-api-secret)")
        }
        if !(0...65535).contains(listenPort) { throw invalid("listen port \(listenPort) is out of range; expected 0-65535") }
        if adminSocketPath.utf8.count > 107 {
            throw invalid("admin socket path '\(adminSocketPath)' is \(adminSocketPath.utf8.count) bytes; a Unix socket path must be at most 107")
        }
        if registrationTimeout <= .zero || heartbeatInterval <= .zero || missedHeartbeatsBeforeEviction < 1 {
            throw invalid("registration timeout and heartbeat interval must be positive and missed heartbeats at least 1")
        }
        if sendQueueCapacity < 1 { throw invalid("send queue capacity must be at least 1, got \(sendQueueCapacity)") }
    }
}

/// The conditions that together make a gateway ready.
enum StartupCondition: Hashable, Sendable {
    case listening, recovered
    /// Not a start condition: set when the drain begins.
    case draining
}
