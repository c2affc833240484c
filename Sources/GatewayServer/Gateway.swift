import CMalloc
import DHCPLeases
import Foundation
// Public: the gateway is given its journal.
public import GatewayJournal
import GatewayProtocol
#if canImport(Glibc)
import Glibc
#endif
import GRPCCore
import GRPCNIOTransportHTTP2Posix
// Public: the gateway is a `Service` that a `ServiceGroup` runs and shuts down.
public import Logging
public import ServiceLifecycle
import Synchronization

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
    let clients = ConnectedClients()
    let router: CallRouter
    let secretCheck: SecretCheck
    /// Nil when the gateway runs with `--journal off`.
    let journal: RequestJournal?
    let runner: RequestRunner?
    /// Nil when the gateway runs without a lease file.
    let leaseWatcher: LeaseWatcher?
    private let shuttingDown = Atomic<Bool>(false)
    /// What READY=1 waits for: listening, and with a journal, its unfinished rows handed back.
    private let readiness = WatchedState<Set<StartupCondition>>([])

    /// - Parameters:
    ///   - journal: the opened and migrated request journal, or nil to run without one
    ///     (calls are then neither recorded nor retried).
    public init(configuration: Configuration, journal: RequestJournal?, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let router = CallRouter(clients: clients, logger: logger)
        self.router = router
        self.secretCheck = SecretCheck(secret: configuration.apiSecret)
        self.journal = journal
        let runner = journal.map { RequestRunner(journal: $0, router: router, configuration: configuration, logger: logger) }
        self.runner = runner
        let lookups = LeaseLookups(router: router, runner: runner, timeout: configuration.leaseLookupTimeout)
        self.leaseWatcher = configuration.dhcp.map { dhcp in
            LeaseWatcher(configuration: dhcp, lookup: { lease, requestID in await lookups(lease, requestID) }, logger: logger)
        }
    }

    /// Checks the configuration, binds both sockets and serves until graceful shutdown (then
    /// drains) or cancellation.
    public func run() async throws {
        try configuration.validate()
        try AdminSocket.prepare(path: configuration.adminSocketPath)
        let streamServer = GRPCServer(
            transport: .http2NIOPosix(
                address: configuration.listenAddress,
                transportSecurity: .plaintext,
                config: .defaults {
                    $0.connection.keepalive = .init(
                        time: configuration.keepaliveInterval,
                        timeout: configuration.keepaliveTimeout,
                        clientBehavior: .init(
                            minPingIntervalWithoutCalls: configuration.minClientPingInterval,
                            allowWithoutCalls: true
                        )
                    )
                    $0.rpc.maxRequestPayloadSize = configuration.maxMessageBytes
                    $0.connection.flushCoalescing = nil
                }
            ),
            services: [StreamService(gateway: self)]
        )
        let adminServer = GRPCServer(
            transport: .http2NIOPosix(
                address: .unixDomainSocket(path: configuration.adminSocketPath),
                transportSecurity: .plaintext,
                config: .defaults {
                    $0.rpc.maxRequestPayloadSize = configuration.maxMessageBytes
                    $0.connection.flushCoalescing = nil
                }
            ),
            services: [AdminService(gateway: self)]
        )
        try await withThrowingTaskGroup(of: Part.self) { group in
            group.addTask {
                do { try await streamServer.serve() } catch {
                    throw GatewayError(
                        code: .listenFailed,
                        message: "cannot serve on \(self.configuration.listenHost):\(self.configuration.listenPort); is another gateway running, or is the port taken?",
                        cause: error
                    )
                }
                return .server
            }
            group.addTask {
                do { try await adminServer.serve() } catch {
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
                    try await journal.run()
                    return .background
                }
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
                let streamAddress = try await streamServer.listeningAddress
                _ = try await adminServer.listeningAddress
                try AdminSocket.restrictPermissions(path: self.configuration.adminSocketPath)
                self.readiness.update { _ = $0.insert(.listening) }
                self.logger.info("gateway listening", metadata: [
                    "address": "\(streamAddress.map { "\($0)" } ?? "?")",
                    "admin_socket": "\(self.configuration.adminSocketPath)",
                    "journal": "\(self.journal?.path ?? "off")",
                    "version": "\(self.configuration.version)",
                ])
                // Cancellation (not a graceful shutdown) stops the servers without draining.
                do { try await gracefulShutdown() } catch { return .background }
                await self.drain(adminServer: adminServer)
                streamServer.beginGracefulShutdown()
                return .background
            }
            // Both servers ending means shutdown: stop the journal's writer, runner and upkeep too.
            var serversRunning = 2
            while let part = try await group.next() {
                if part == .server { serversRunning -= 1 }
                if serversRunning == 0 { group.cancelAll() }
            }
        }
        // The socket is ours (prepare() refused a live one); do not leave it for the next start.
        unlink(configuration.adminSocketPath)
        logger.info("gateway stopped")
    }

    /// Stops taking calls, tells every client to drain, lets in-flight calls finish within
    /// the grace period, then ends every stream so the server can stop.
    private func drain(adminServer: GRPCServer<HTTP2ServerTransport.Posix>) async {
        shuttingDown.store(true, ordering: .sequentiallyConsistent)
        let connections = clients.connections()
        logger.info("gateway draining", metadata: [
            "clients": "\(connections.count)", "calls_in_flight": "\(router.pendingCount)",
        ])
        adminServer.beginGracefulShutdown()
        for connection in connections {
            connection.setDraining()
            _ = connection.send(.drain)
        }
        await router.waitUntilIdle(timeout: configuration.shutdownGracePeriod)
        for connection in clients.connections() { connection.close(.shuttingDown) }
    }

    var isShuttingDown: Bool { shuttingDown.load(ordering: .sequentiallyConsistent) }

    /// Returns once the gateway listens and, with a journal, has handed every unfinished row
    /// of an earlier run back to the runner: what `READY=1` means.
    public func waitUntilReady() async {
        let needed: Set<StartupCondition> = journal == nil ? [.listening] : [.listening, .recovered]
        await readiness.wait { needed.isSubset(of: $0) }
    }

    /// Returns once the gateway listens: clients can register, though the journal may still
    /// be replaying.
    public func waitUntilServing() async {
        await readiness.wait { $0.contains(.listening) }
    }

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
        if let leaseWatcher {
            let status = leaseWatcher.status(withEntries: false)
            line += "; \(status.summary.active) lease(s), \(status.hostsEntries) named"
        }
        return line
    }

    /// The parts of a running gateway, so `run()` knows when both servers have stopped.
    private enum Part: Sendable { case server, background }

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
        var seen = clients.eligible(for: .all, method: "").generation
        var anyRegistered = clients.count > 0
        while ContinuousClock.now < deadline && !Task.isCancelled {
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
            } catch {
                logger.error("journal upkeep failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

extension Gateway.Configuration {
    var listenAddress: GRPCNIOTransportCore.SocketAddress {
        listenHost.contains(":")
            ? .ipv6(host: listenHost, port: listenPort)
            : .ipv4(host: listenHost, port: listenPort)
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
enum StartupCondition: Hashable, Sendable { case listening, recovered }
