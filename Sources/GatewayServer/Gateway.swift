import AsyncPrimitives
import CMalloc
import DHCPLeases
import Foundation
// Public: the gateway is given its journal.
public import GatewayJournal
// Public: the gateway is given the request methods it knows.
public import GatewayProtocol
#if canImport(Glibc)
import Glibc
#endif
// Public: the gateway is a `Service` that a `ServiceGroup` runs and shuts down.
public import Logging
import NIOCore
// Public: the gateway is given the lock on its admin socket.
public import ProcessLifecycle
import RPCEndpoint
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
    /// Method names as metric labels: a bounded set, so a caller cannot grow the exposition.
    let methodLabels: MetricLabels
    /// Repeated refusals of unauthenticated streams, one log line per peer and minute.
    let refusedStreams: RefusalLog
    /// The client streams, each from `register` to its end.
    let streams: ClientStreams

    /// Held for the gateway's life: one gateway per admin socket.
    private let instanceLock: InstanceLock?

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
    public init(
        configuration: Configuration, journal: RequestJournal?, methods: [AnyRequestMethod] = RequestMethods.all,
        instanceLock: InstanceLock? = nil, metrics: MetricsRegistry? = nil, logger: Logger
    ) {
        let methods = RequestMethods.byName(methods)
        self.methodMessages = MethodMessages(methods: methods)
        self.instanceLock = instanceLock
        self.metrics = metrics
        self.methodLabels = MetricLabels(limit: 32)
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
            settings: .init(configuration), clients: clients, router: router, metrics: metrics, logger: logger,
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
        guard let metrics else { return }
        let method = methodLabels.label(for: method)
        metrics.increment(Metric.calls, method, outcome)
        metrics.record(Metric.callDuration, method, duration: duration)
    }

    /// Sets the clients gauge of `environment` to its registered count.
    private static func recordClients(of environment: String, _ clients: ConnectedClients, _ metrics: MetricsRegistry?) {
        metrics?.set(Metric.clients, environment, to: Double(clients.connections(environment: environment).count))
    }

    /// Checks the configuration, binds both sockets and serves until graceful shutdown (then
    /// drains, within a bound) or cancellation (then stops at once).
    public func run() async throws {
        try configuration.validate()
        // Held until the gateway ends: a second gateway on this socket is refused up front.
        let instanceLock = try self.instanceLock ?? AdminSocket.lock(path: configuration.adminSocketPath)
        try AdminSocket.prepare(path: configuration.adminSocketPath)
        var streamRoutes = RPCRouter()
        registerStreamService(on: &streamRoutes)
        registerHealthService(on: &streamRoutes)
        var adminRoutes = RPCRouter()
        AdminService(gateway: self).register(on: &adminRoutes)
        let servers = Servers(
            stream: RPCServer(configuration: configuration.streamEndpoint, router: streamRoutes, logger: logger),
            admin: RPCServer(configuration: configuration.adminEndpoint, router: adminRoutes, logger: logger)
        )
        let report: DrainReport?
        if let journal {
            // The writer outlives everything that writes to it, and commits what they left
            // (final rows, requests handed back) before it ends.
            report = try await withThrowingTaskGroup(of: Void.self) { writer in
                writer.addTask { try await journal.run() }
                let report = try await serve(servers)
                journal.finishWriting()
                try await writer.waitForAll()
                return report
            }
        } else {
            report = try await serve(servers)
        }
        // Only our own socket: a successor may already have bound a new one at this path.
        adminSocketFile.withLock { _ = $0?.removeIfOwned() }
        withExtendedLifetime(instanceLock) {}
        logger.info("gateway stopped", metadata: report?.metadata ?? ["how": "cancelled: stopped at once"])
    }

    /// The two servers of a gateway: the stream port and the admin socket.
    private struct Servers: Sendable {
        let stream: RPCServer
        let admin: RPCServer
    }

    /// Runs the servers and the gateway's background parts until both servers have stopped;
    /// returns what the drain left behind (nil when cancelled without a drain).
    private func serve(_ servers: Servers) async throws -> DrainReport? {
        try await withThrowingTaskGroup(of: Part.self) { group in
            group.addTask {
                do { try await servers.stream.run() } catch let error as RPCServerError {
                    throw GatewayError(code: .invalidConfiguration, message: error.message)
                } catch where !Task.isCancelled {
                    throw GatewayError(
                        code: .listenFailed,
                        message: "cannot serve on \(self.configuration.listenHost):\(self.configuration.listenPort); is another gateway running, or is the port taken?",
                        cause: error
                    )
                }
                return .server
            }
            group.addTask {
                do { try await servers.admin.run() } catch where !Task.isCancelled {
                    throw GatewayError(
                        code: .adminSocketFailed,
                        message: "cannot serve the admin API on \(self.configuration.adminSocketPath)",
                        cause: error
                    )
                }
                return .server
            }
            if let journal, let runner {
                group.addTask {
                    await runner.run()
                    return .background
                }
                group.addTask {
                    try await self.recover(journal, runner)
                    await self.maintain(journal)
                    return .background
                }
            }
            group.addTask {
                await self.returnFreedMemory()
                return .background
            }
            if let leaseWatcher {
                group.addTask {
                    // Looking leases up before the environments are back would cache wrong
                    // "not found" answers from whichever connected first.
                    await self.waitForClientsToSettle()
                    await leaseWatcher.run()
                    return .background
                }
            }
            group.addTask {
                // Nil when binding failed: that server's task ends the gateway with its error.
                guard let streamAddress = await servers.stream.listeningAddress,
                      await servers.admin.listeningAddress != nil else { return .background }
                self.adminSocketFile.withLock { $0 = OwnedPath(claiming: self.configuration.adminSocketPath) }
                self.boundStreamPort.withLock { $0 = streamAddress.port }
                self.readiness.update { _ = $0.insert(.listening) }
                self.logger.info("gateway listening", metadata: [
                    "address": "\(streamAddress)",
                    "admin_socket": "\(self.configuration.adminSocketPath)",
                    "journal": "\(self.journal?.path ?? "off")",
                    "version": "\(self.configuration.version)",
                ])
                // Cancellation (not a graceful shutdown) stops the servers without draining.
                do { try await gracefulShutdown() } catch { return .background }
                return .drained(await self.drain(servers))
            }
            var serversRunning = 2
            var report: DrainReport?
            while let part = try await group.next() {
                switch part {
                case .server:
                    serversRunning -= 1
                    // Both servers ending means shutdown: stop the runner, upkeep and watcher too.
                    if serversRunning == 0 { group.cancelAll() }
                case .drained(let drained):
                    report = drained
                    group.addTask {
                        _ = await waitUntil(.now + self.configuration.connectionCloseTimeout)
                        return .closeTimeout
                    }
                case .closeTimeout where serversRunning > 0:
                    // Peers that did not close their connections (silent, half-open, stopped)
                    // are cut from this side; then the servers are stopped, done or not.
                    let cut = servers.stream.closeConnections() + servers.admin.closeConnections()
                    report?.connectionsCut = cut
                    logger.notice("cut the connections still open after the grace period", metadata: [
                        "connections": "\(cut)", "close_timeout": "\(configuration.connectionCloseTimeout)",
                    ])
                    group.addTask {
                        _ = await waitUntil(.now + self.configuration.connectionCloseTimeout)
                        return .cutTimeout
                    }
                case .cutTimeout where serversRunning > 0:
                    logger.warning("the servers did not stop after their connections were cut; cancelling them")
                    group.cancelAll()
                case .closeTimeout, .cutTimeout, .background:
                    break
                }
            }
            return report
        }
    }

    /// Stops taking registrations and calls, tells every client to drain, hands calls still
    /// waiting for a receiver back to the journal, lets calls in flight finish within the
    /// grace period, then interrupts the rest (they stay unfinished in the journal) and ends
    /// every stream. Returns within the grace period.
    private func drain(_ servers: Servers) async -> DrainReport {
        // From here on no stream registers, no call is taken, and a call without a receiver
        // is handed back.
        clients.close()
        readiness.update { _ = $0.insert(.draining) }
        let connections = clients.connections()
        logger.info("gateway draining", metadata: [
            "clients": "\(connections.count)", "calls_in_flight": "\(router.pendingCount)",
            "grace": "\(configuration.shutdownGracePeriod)",
        ])
        servers.admin.beginGracefulShutdown()
        for connection in connections {
            connection.setDraining()
            _ = connection.send(.drain)
        }
        await router.waitUntilIdle(timeout: configuration.shutdownGracePeriod)
        var report = DrainReport()
        report.interruptedCalls = router.interruptAll()
        let open = clients.connections()
        report.closedStreams = open.count
        for connection in open { connection.close(.shuttingDown) }
        servers.stream.beginGracefulShutdown()
        return report
    }

    /// What a drain left behind, for the gateway's last log line.
    struct DrainReport: Sendable {
        /// Calls still unanswered at the end of the grace period, left to the journal.
        var interruptedCalls = 0
        /// Streams the gateway ended itself.
        var closedStreams = 0
        /// Connections that did not close within the close timeout and were cut.
        var connectionsCut = 0

        var metadata: Logger.Metadata {
            [
                "calls_interrupted": "\(interruptedCalls)", "streams_closed": "\(closedStreams)",
                "connections_cut": "\(connectionsCut)",
            ]
        }
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

    /// The parts of a running gateway, so `serve` knows when both servers have stopped.
    private enum Part: Sendable {
        case server
        case background
        /// The drain ended (with its report): the servers get the close timeout, then their
        /// connections are cut, then (another close timeout later) they are cancelled.
        case drained(DrainReport)
        case closeTimeout
        case cutTimeout
    }

    /// Picks up what the journal holds unfinished from an earlier run: rows past their
    /// deadline become expired, the rest are retried with their own request ids.
    private func recover(_ journal: RequestJournal, _ runner: RequestRunner) async throws {
        let expired = try await journal.expireOverdue()
        let pending = try journal.unfinishedCounts()
        // Retried before the workers are back, a request would end "not found" by whichever
        // environment reconnected first. With nothing to retry, there is nothing to wait for.
        if pending.pending + pending.inFlight > 0 { await waitForClientsToSettle() }
        let unfinished = try journal.unfinished()
        for record in unfinished { runner.submit(record) }
        readiness.update { _ = $0.insert(.recovered) }
        if expired > 0 || !unfinished.isEmpty {
            logger.notice("journal recovered", metadata: [
                "message_id": "\(LogEventID.requestRecovered)",
                "retrying": "\(unfinished.count)", "expired": "\(expired)", "journal": "\(journal.path)",
            ])
        }
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

    /// Hands freed heap back to the kernel once a minute. glibc gives back only the top of an
    /// arena by itself: after 1,000 clients had disconnected, 70 MB stayed resident while
    /// 1.7 MB was in use. `malloc_trim` also releases the free pages inside the arenas.
    private func returnFreedMemory() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(60)) } catch { return }
            malloc_trim(0)
        }
    }

    /// Prunes old finished rows and checkpoints the WAL, forever (until cancelled).
    private func maintain(_ journal: RequestJournal) async {
        var sinceCheckpoint = Duration.zero
        var sincePrune = configuration.pruneInterval  // prune once soon after start
        let tick = min(configuration.checkpointInterval, configuration.pruneInterval)
        while !Task.isCancelled {
            do { try await Task.sleep(for: tick) } catch { return }
            sinceCheckpoint += tick
            sincePrune += tick
            do {
                if sincePrune >= configuration.pruneInterval {
                    sincePrune = .zero
                    let cutoff = JournalClock.now() - Int64(configuration.journalRetention.secondsValue * 1000)
                    var deleted = 0
                    // Bounded: at most 100 batches per round; the rest waits for the next one.
                    for _ in 0..<100 {
                        let batch = try await journal.pruneBatch(olderThan: cutoff)
                        deleted += batch
                        if batch == 0 || Task.isCancelled { break }
                    }
                    if deleted > 0 { logger.info("journal pruned", metadata: ["deleted": "\(deleted)"]) }
                }
                if sinceCheckpoint >= configuration.checkpointInterval {
                    sinceCheckpoint = .zero
                    try await journal.checkpoint()
                }
                if let problem = journal.checkFile() {
                    logger.error("journal file lost", metadata: ["error": "\(problem.message)"])
                }
                if let metrics {
                    let counts = try journal.stats().countsByState
                    for state in ["pending", "in_flight", "completed", "failed", "expired"] {
                        metrics.set(Metric.journalRows, state, to: Double(counts[state] ?? 0))
                    }
                }
            } catch {
                logger.error("journal upkeep failed", metadata: ["error": "\(error)"])
            }
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

/// Label values from outside (method names), at most `limit` distinct ones; the rest are
/// counted as `other`.
final class MetricLabels: Sendable {
    private let seen = Mutex<Set<String>>([])
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func label(for value: String) -> String {
        seen.withLock { seen in
            if seen.contains(value) { return value }
            guard seen.count < limit, value.utf8.count <= 64, !value.isEmpty else { return "other" }
            seen.insert(value)
            return value
        }
    }
}
