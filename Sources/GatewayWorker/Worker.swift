import AsyncPrimitives
import Foundation
// Public: a custom transport is a grpc-swift ClientTransport.
public import GRPCCore
import GatewayProtocol
// Public: the worker is a `Service` that a `ServiceGroup` runs and shuts down.
public import Logging
import RPCEndpoint
public import ServiceLifecycle
import Synchronization
public import Telemetry
import TextFormats

/// The VPS-service side: dials every configured gateway, registers, answers requests with
/// its handlers, and reconnects with backoff after any loss.
///
/// ```swift
/// var handlers = HandlerRegistry()
/// handlers.register(RequestMethods.findVPSByLease, FindVPSByLeaseHandler(inventory: inventory))
/// let worker = Worker(configuration: configuration, handlers: handlers, logger: logger)
/// try await ServiceGroup(services: [worker], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
public final class Worker: Service, Sendable {
    public let configuration: Configuration
    let handlers: HandlerRegistry
    let logger: Logger
    /// Shared by every stream, so a retry that arrives on another gateway's stream or after
    /// a reconnect is answered from it too.
    let responses: ResponseCache
    /// The requests running, across streams.
    let executions: RequestExecutions
    /// The gateways this worker is registered with now.
    private let registrations = WatchedState<Set<GatewayEndpoint>>([])

    /// Where requests and stream states are counted; nil records nothing.
    let metrics: MetricsRegistry?
    /// Requests answered by method and code, and their durations, resolved once per label set.
    let requestMetrics: OutcomeMetrics?
    let transport: Transport

    /// How the worker reaches its gateways.
    public enum Transport: Sendable {
        /// HTTP/2 over TCP, TLS for `https://` gateways: what a deployed worker uses.
        case network
        /// A client transport the caller makes for each gateway (a gateway in the same process
        /// on an in-memory listener, for tests).
        case custom(@Sendable (GatewayEndpoint) throws -> any ClientTransport)
    }

    public init(configuration: Configuration, handlers: HandlerRegistry, metrics: MetricsRegistry? = nil, transport: Transport = .network, logger: Logger) {
        self.configuration = configuration
        self.transport = transport
        self.metrics = metrics
        // Method names come from the gateway: a bounded set of series.
        self.requestMetrics = metrics.map { OutcomeMetrics($0, counts: Metric.workerRequests, durations: Metric.workerRequestDuration, nameLimit: 32) }
        self.handlers = handlers
        self.logger = logger
        self.responses = ResponseCache(capacity: configuration.responseCacheSize, lifetime: configuration.responseCacheLifetime)
        self.executions = RequestExecutions(responses: responses)
    }

    /// Keeps one stream per endpoint until graceful shutdown or cancellation.
    public func run() async throws {
        try configuration.validate()
        let abandoned = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.executions.run()
                return false
            }
            for endpoint in configuration.endpoints {
                group.addTask {
                    await self.maintainStream(to: endpoint)
                    return true
                }
            }
            // Once every stream loop has ended (shutdown), stop running requests too.
            var streams = configuration.endpoints.count
            var abandoned = 0
            while let isStream = await group.next() {
                if isStream { streams -= 1 }
                if isStream && streams == 0 {
                    abandoned = executions.count
                    group.cancelAll()
                }
            }
            return abandoned
        }
        // An abandoned request is retried by the gateway (with the same id) after its restart.
        logger.info("worker stopped", metadata: ["requests_abandoned": "\(abandoned)"])
    }

    /// Connects, serves, and reconnects after the configured backoff, forever.
    private func maintainStream(to endpoint: GatewayEndpoint) async {
        var backoff = Backoff(configuration.backoff)
        var logger = self.logger
        logger[metadataKey: "gateway"] = "\(endpoint)"
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            recordStream(endpoint, .connecting)
            let session = StreamSession(worker: self, endpoint: endpoint, logger: logger)
            let registeredFor: Duration?
            do {
                registeredFor = try await session.run()
                logger.info("gateway closed the stream")
            } catch {
                registeredFor = session.registeredDuration
                logger.warning("stream to the gateway failed", metadata: ["error": "\(Self.describe(error))"])
            }
            if Task.isCancelled || Task.isShuttingDownGracefully { break }
            if let registeredFor, registeredFor >= configuration.healthyConnectionDuration { backoff.reset() }
            let delay = backoff.next()
            recordStream(endpoint, .backoff)
            logger.info("reconnecting", metadata: ["delay_ms": "\(delay.wholeMilliseconds)"])
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) } } catch { break }
        }
    }

    func registered(with endpoint: GatewayEndpoint) {
        registrations.update { _ = $0.insert(endpoint) }
        recordStream(endpoint, .registered)
    }

    enum StreamState: String, CaseIterable { case connecting, registered, backoff }

    /// One series per state and gateway: 1 for the state the stream is in.
    private func recordStream(_ endpoint: GatewayEndpoint, _ current: StreamState) {
        guard let metrics else { return }
        for state in StreamState.allCases {
            metrics.set(Metric.workerStreams, endpoint.description, state.rawValue, to: state == current ? 1 : 0)
        }
    }

    func unregistered(from endpoint: GatewayEndpoint) {
        registrations.update { _ = $0.remove(endpoint) }
    }

    /// Returns once the worker is registered with a gateway (what `READY=1` means), or
    /// when the waiting task is cancelled.
    public func waitUntilRegistered() async {
        await registrations.wait { !$0.isEmpty }
    }

    /// Requests running right now, across streams.
    public var runningRequests: Int { executions.count }

    /// One line for `STATUS=`.
    public var statusLine: String {
        let registered = registrations.value.count
        return "\(configuration.environment): registered with \(registered) of \(configuration.endpoints.count) gateway(s); \(executions.count) request(s) running"
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? RPCError { return "\(error.code): \(error.message)" }
        if let status = error as? RPCStatus { return "\(status)" }
        return "\(error)"
    }
}
