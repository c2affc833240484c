import AsyncPrimitives
import GatewayJournal
import GatewayProtocol
import Logging
import NIOCore
import RPCEndpoint
import ServiceLifecycle
import Synchronization

/// The gateway's two servers (the stream port and the admin socket) as one service: serves
/// until a graceful shutdown, then drains (within the grace period), gives the peers the
/// close timeout, cuts the connections still open, and returns once both servers have
/// stopped. Cancelled instead, it stops at once without a drain.
final class GatewayServing: Service, Sendable {
    let gateway: Gateway
    let stream: RPCServer
    let admin: RPCServer
    private let drained = Mutex<DrainReport?>(nil)

    init(gateway: Gateway) {
        self.gateway = gateway
        var streamRoutes = RPCRouter()
        gateway.registerStreamService(on: &streamRoutes)
        gateway.registerHealthService(on: &streamRoutes)
        var adminRoutes = RPCRouter()
        AdminService(gateway: gateway).register(on: &adminRoutes)
        let configuration = gateway.configuration
        var streamEndpoint = configuration.streamEndpoint
        if let listener = gateway.streamListener { streamEndpoint.address = .inMemory(listener) }
        stream = RPCServer(configuration: streamEndpoint, router: streamRoutes, logger: gateway.logger)
        admin = RPCServer(configuration: configuration.adminEndpoint, router: adminRoutes, logger: gateway.logger)
    }

    /// What the drain left behind; nil when the servers were cancelled without one.
    var report: DrainReport? { drained.withLock { $0 } }

    private var configuration: Gateway.Configuration { gateway.configuration }
    private var logger: Logger { gateway.logger }

    /// The parts of a running server pair, so `run` knows when both servers have stopped.
    private enum Part: Sendable {
        case server
        case listening
        /// The drain ended (with its report): the servers get the close timeout, then their
        /// connections are cut, then (another close timeout later) they are cancelled.
        case drained(DrainReport)
        case closeTimeout
        case cutTimeout
    }

    func run() async throws {
        let (stream, admin, gateway, configuration, logger) = (self.stream, self.admin, self.gateway, self.configuration, self.logger)
        try await withThrowingTaskGroup(of: Part.self) { group in
            group.addTask {
                do { try await stream.run() } catch let error as RPCServerError {
                    throw GatewayError(code: .invalidConfiguration, message: error.message)
                } catch where !Task.isCancelled {
                    throw GatewayError(
                        code: .listenFailed,
                        message: "cannot serve on \(configuration.listenHost):\(configuration.listenPort); is another gateway running, or is the port taken?",
                        cause: error
                    )
                }
                return .server
            }
            group.addTask {
                do { try await admin.run() } catch where !Task.isCancelled {
                    throw GatewayError(
                        code: .adminSocketFailed,
                        message: "cannot serve the admin API on \(configuration.adminSocketPath)",
                        cause: error
                    )
                }
                return .server
            }
            group.addTask {
                // Nil when binding failed: that server's task ends the gateway with its error.
                guard await stream.isServing, await admin.isServing else { return .listening }
                let streamAddress = await stream.listeningAddress
                gateway.listening(onStreamPort: streamAddress?.port)
                logger.info("gateway listening", metadata: [
                    "address": "\(streamAddress.map { "\($0)" } ?? gateway.streamListener?.description ?? "none")",
                    "admin_socket": "\(configuration.adminSocketPath)",
                    "journal": "\(gateway.journal?.path ?? "off")",
                    "event_loops": "\(EventLoopThreads.count)",
                    "version": "\(configuration.version)",
                ])
                // Cancellation (not a graceful shutdown) stops the servers without draining.
                do { try await gracefulShutdown() } catch { return .listening }
                return .drained(await self.drain())
            }
            var serversRunning = 2
            while let part = try await group.next() {
                switch part {
                case .server:
                    serversRunning -= 1
                    // Both servers ended: so does this service (the group then stops the rest).
                    if serversRunning == 0 { group.cancelAll() }
                case .drained(let report):
                    self.drained.withLock { $0 = report }
                    group.addTask {
                        _ = await waitUntil(.now + configuration.connectionCloseTimeout)
                        return .closeTimeout
                    }
                case .closeTimeout where serversRunning > 0:
                    // Peers that did not close their connections (silent, half-open, stopped)
                    // are cut from this side; then the servers are stopped, done or not.
                    let cut = stream.closeConnections() + admin.closeConnections()
                    self.drained.withLock { $0?.connectionsCut = cut }
                    logger.notice("cut the connections still open after the grace period", metadata: [
                        "connections": "\(cut)", "close_timeout": "\(configuration.connectionCloseTimeout)",
                    ])
                    group.addTask {
                        _ = await waitUntil(.now + configuration.connectionCloseTimeout)
                        return .cutTimeout
                    }
                case .cutTimeout where serversRunning > 0:
                    logger.warning("the servers did not stop after their connections were cut; cancelling them")
                    group.cancelAll()
                case .closeTimeout, .cutTimeout, .listening:
                    break
                }
            }
        }
    }

    /// Stops taking registrations and calls, tells every client to drain, hands calls still
    /// waiting for a receiver back to the journal, lets calls in flight finish within the
    /// grace period, then interrupts the rest (they stay unfinished in the journal) and ends
    /// every stream. Returns within the grace period.
    private func drain() async -> DrainReport {
        let clients = gateway.clients, router = gateway.router
        // From here on no stream registers, no call is taken, and a call without a receiver
        // is handed back.
        clients.close()
        gateway.readiness.update { _ = $0.insert(.draining) }
        let connections = clients.connections()
        logger.info("gateway draining", metadata: [
            "clients": "\(connections.count)", "calls_in_flight": "\(router.pendingCount)",
            "grace": "\(configuration.shutdownGracePeriod)",
        ])
        admin.beginGracefulShutdown()
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
        stream.beginGracefulShutdown()
        return report
    }
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
