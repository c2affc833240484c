import Foundation
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
    private let shuttingDown = Atomic<Bool>(false)

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.router = CallRouter(clients: clients, logger: logger)
        self.secretCheck = SecretCheck(secret: configuration.apiSecret)
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
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do { try await streamServer.serve() } catch {
                    throw GatewayError(
                        code: .listenFailed,
                        message: "cannot serve on \(self.configuration.listenHost):\(self.configuration.listenPort); is another gateway running, or is the port taken?",
                        cause: error
                    )
                }
            }
            group.addTask {
                do { try await adminServer.serve() } catch {
                    throw GatewayError(
                        code: .adminSocketFailed,
                        message: "cannot serve the admin API on \(self.configuration.adminSocketPath)",
                        cause: error
                    )
                }
            }
            group.addTask {
                let streamAddress = try await streamServer.listeningAddress
                _ = try await adminServer.listeningAddress
                try AdminSocket.restrictPermissions(path: self.configuration.adminSocketPath)
                self.logger.info("gateway listening", metadata: [
                    "address": "\(streamAddress.map { "\($0)" } ?? "?")",
                    "admin_socket": "\(self.configuration.adminSocketPath)",
                    "version": "\(self.configuration.version)",
                ])
                // Cancellation (not a graceful shutdown) stops the servers without draining.
                do { try await gracefulShutdown() } catch { return }
                await self.drain(adminServer: adminServer)
                streamServer.beginGracefulShutdown()
            }
            try await group.waitForAll()
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
