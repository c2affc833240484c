import AsyncPrimitives
import Foundation
import GRPCCore
import GatewayProtocol
import Logging
import NIOCore
import RPCEndpoint
import ServiceLifecycle
import SwiftProtobuf
import Synchronization

/// One stream to one gateway, from dial to its end.
final class StreamSession: Sendable {
    private let worker: Worker
    private let endpoint: GatewayEndpoint
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var registeredAt: ContinuousClock.Instant?
        var draining = false
    }

    init(worker: Worker, endpoint: GatewayEndpoint, logger: Logger) {
        self.worker = worker
        self.endpoint = endpoint
        self.logger = logger
    }

    private var configuration: Worker.Configuration { worker.configuration }

    /// How long the stream has been registered, or nil if it never was.
    var registeredDuration: Duration? {
        state.withLock { $0.registeredAt.map { ContinuousClock.now - $0 } }
    }

    /// Dials, registers and serves until the gateway ends the stream (returns how long it was
    /// registered) or something fails (throws).
    func run() async throws -> Duration? {
        // Answers are bounded by the in-flight limit; the margin covers heartbeats and refusals.
        let outbound = MessageQueue<GatewayMessage>(capacity: configuration.maxConcurrentRequests * 4 + 64)
        let registration = GatewayRegistration.with {
            $0.gatewayID = endpoint.node ?? configuration.node
            $0.gatewayIpDhcp = configuration.instanceID
            $0.version = configuration.version
            $0.environment = configuration.environment
            $0.methods = worker.handlers.methods
        }
        defer { worker.unregistered(from: endpoint) }
        switch worker.transport {
        case .network: try await serveNetwork(registration: registration, outbound: outbound)
        case .custom(let make): try await serve(over: try make(endpoint), registration: registration, outbound: outbound)
        }
        return registeredDuration
    }

    /// Registers on one stream over `transport` and serves it until it ends.
    private func serve(over transport: some ClientTransport, registration: GatewayRegistration, outbound: MessageQueue<GatewayMessage>) async throws {
        try await withGRPCClient(transport: transport) { client in
            let service = VPSGatewayService.Client(wrapping: client)
            try await service.registerGateway(
                metadata: [GatewayMetadataKey.apiSecret: .string(configuration.apiSecret)],
                requestProducer: { writer in
                    try await writer.write(.register(registration))
                    while let batch = await outbound.nextBatch() { try await writer.write(contentsOf: batch) }
                },
                onResponse: { response in
                    defer { outbound.finish() }
                    try await self.serve(outbound: outbound) {
                        for try await message in response.messages { self.receive(message, outbound: outbound) }
                    }
                }
            )
        }
    }

    /// Registers on one stream of `RPCStreamClient` and serves it until it ends: the gateway's
    /// messages are decoded and dispatched on the connection's event loop as they arrive
    /// (`receive` starts work, answers what it can at once and queues answers), and the send
    /// queue's batches go out as one DATA frame each, written from the loop.
    private func serveNetwork(registration: GatewayRegistration, outbound: MessageQueue<GatewayMessage>) async throws {
        let tls = configuration.tls
        let target = RPCStreamClient.Target(
            host: endpoint.host, port: endpoint.port,
            tls: endpoint.usesTLS ? .init(trustRoots: tls.trustRoots, certificateChain: tls.certificateChain, privateKey: tls.privateKey) : nil
        )
        let settings = RPCStreamClient.Settings(keepaliveInterval: configuration.keepaliveInterval, keepaliveTimeout: configuration.keepaliveTimeout)
        try await RPCStreamClient.withStream(
            to: target, method: RPCMethods.registerGateway, metadata: [(GatewayMetadataKey.apiSecret, configuration.apiSecret)], settings: settings,
            onMessage: { bytes in
                let message: GatewayMessage
                do {
                    message = try GatewayMessage(serializedBytes: Array(bytes.readableBytesView))
                } catch {
                    throw RPCStatus(.internal, "the gateway sent bytes that are not a GatewayMessage: \(error)")
                }
                self.receive(message, outbound: outbound)
            }
        ) { stream in
            // The send queue is written from the connection's event loop as it fills: an
            // answer made while reading goes out in the same loop turn, with no task between.
            outbound.enqueue(.register(registration))
            stream.send(from: outbound) { try $0.serializedBytes() }
            defer { outbound.finish() }
            try await self.serve(outbound: outbound) { try await stream.ended() }
        }
    }

    /// Reads the gateway's messages (`reading` returns when the gateway ends the stream);
    /// sends heartbeats; and on graceful shutdown drains. The first of these to end ends the
    /// stream. Requests run on the worker, not here: they outlive a dropped stream.
    private func serve(outbound: MessageQueue<GatewayMessage>, reading: @escaping @Sendable () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await reading() }
            group.addTask {
                try await Task.sleep(for: self.configuration.registrationTimeout)
                guard self.registeredDuration != nil else {
                    throw RPCError(code: .deadlineExceeded, message: "the gateway did not answer 'register' within \(self.configuration.registrationTimeout)")
                }
                while true {
                    try await Task.sleep(for: self.configuration.heartbeatInterval)
                    outbound.enqueue(.heartbeat())
                }
            }
            group.addTask {
                try await gracefulShutdown()
                try await self.drain(outbound)
            }
            try await group.next()
            group.cancelAll()
        }
    }

    private func receive(_ message: GatewayMessage, outbound: MessageQueue<GatewayMessage>) {
        switch message.messageType {
        case .registered:
            state.withLock { $0.registeredAt = .now }
            worker.registered(with: endpoint)
            outbound.enqueue(.heartbeat())
            logger.info("registered with the gateway", metadata: [
                "instance": "\(configuration.instanceID)", "environment": "\(configuration.environment)",
                "methods": "\(worker.handlers.methods.joined(separator: ","))",
            ])
        case .request:
            let request = message.request
            if let answered = worker.responses.response(for: request.requestID) {
                logger.debug("answered a repeated request id from the response cache", metadata: [
                    "request_id": "\(request.requestID)", "attempt": "\(request.attempt)",
                ])
                outbound.enqueue(.response(answered))
                return
            }
            if let refusal = refusal(for: request) {
                outbound.enqueue(.response(refusal))
                return
            }
            let started = worker.executions.start(
                request, replyTo: outbound,
                answerAtOnce: { [worker] request, run in worker.answerAtOnce(request, run) },
                execute: { [worker] request, run in await worker.execute(request, run) }
            )
            if !started {
                logger.debug("joined a run of the same request id", metadata: ["request_id": "\(request.requestID)"])
            }
        case .cancel:
            worker.executions.cancel(message.request.requestID, replyTo: outbound)
        case .drain:
            logger.info("the gateway is draining; it will close the stream")
        case .heartbeat:
            break
        case .register, .response, nil:
            logger.debug("ignored a message of a type the worker does not take", metadata: ["type": "\(message.type.prefix(64))"])
        }
    }

    /// An immediate answer for a request the worker will not run, or nil.
    private func refusal(for request: GatewayRequest) -> GatewayResponse? {
        if request.requestID.isEmpty {
            logger.warning("ignored a request without a request id")
            return nil
        }
        if state.withLock({ $0.draining }) {
            return .failure(requestID: request.requestID, code: .unavailable, error: "worker \(configuration.instanceID) is draining")
        }
        if worker.executions.count >= configuration.maxConcurrentRequests {
            return .failure(
                requestID: request.requestID, code: .unavailable,
                error: "worker \(configuration.instanceID) is busy (\(configuration.maxConcurrentRequests) requests in flight)"
            )
        }
        if worker.handlers.handler(for: request.method) == nil {
            return .failure(
                requestID: request.requestID, code: .unimplemented,
                error: "method '\(request.method.prefix(128))' is not implemented by this worker; it answers \(worker.handlers.methods.joined(separator: ", "))"
            )
        }
        return nil
    }

    /// Tells the gateway to send nothing new, lets the requests in flight finish within the
    /// grace period, then closes this side of the stream.
    private func drain(_ outbound: MessageQueue<GatewayMessage>) async throws {
        let deadline = ContinuousClock.now + configuration.shutdownGracePeriod
        state.withLock { $0.draining = true }
        outbound.enqueue(.drain)
        logger.info("draining", metadata: ["in_flight": "\(worker.executions.count)", "grace": "\(configuration.shutdownGracePeriod)"])
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.worker.executions.waitUntilEmpty() }
            group.addTask { _ = await waitUntil(deadline) }
            await group.next()
            group.cancelAll()
            self.worker.executions.releaseWaiters()
        }
        outbound.finish()
        // The gateway ends the stream once it sees our side closed (the reader then ends the
        // session first); a gateway that does not is left after the close timeout.
        _ = await waitUntil(.now + configuration.streamCloseTimeout)
    }
}
