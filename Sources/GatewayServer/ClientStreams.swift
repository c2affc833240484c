import AsyncPrimitives
import DHCPLeases
import Foundation
package import GatewayProtocol
import Logging
package import RPCEndpoint
import SwiftProtobuf
import Synchronization
import Telemetry
import TextFormats

/// The gateway's side of client streams, shared by every ``ClientStream``: registration,
/// the messages a registered stream sends, heartbeats and eviction, and the cleanup when a
/// stream ends, with what they need handed in rather than reached for in the gateway.
struct ClientStreams: Sendable {
    /// The settings a stream session uses, from the gateway's configuration.
    struct Settings: Sendable {
        var sendQueueCapacity: Int
        var registrationTimeout: Duration
        var heartbeatInterval: Duration
        var missedHeartbeatsBeforeEviction: Int
        var evictionSilence: Duration

        init(_ gateway: Gateway.Configuration) {
            sendQueueCapacity = gateway.sendQueueCapacity
            registrationTimeout = gateway.registrationTimeout
            heartbeatInterval = gateway.heartbeatInterval
            missedHeartbeatsBeforeEviction = gateway.missedHeartbeatsBeforeEviction
            evictionSilence = gateway.evictionSilence
        }
    }

    let settings: Settings
    let clients: ConnectedClients
    let router: CallRouter
    let metrics: HotMetrics?
    let logger: Logger
    /// Told after an environment's set of registered clients changed.
    let clientsChanged: @Sendable (_ environment: String) -> Void
    /// Told when the first client of an environment registers ("not found" said without it
    /// is worth asking again).
    let environmentAppeared: @Sendable (_ environment: String) -> Void
    /// Registrations over the client limit, one log line per peer and minute.
    private let refusedRegistrations: RefusalLog
    /// Streams replacing a stream of the same instance id that was only just registered.
    private let duplicateInstances: RefusalLog

    init(
        settings: Settings, clients: ConnectedClients, router: CallRouter, metrics: HotMetrics?, logger: Logger,
        clientsChanged: @escaping @Sendable (String) -> Void, environmentAppeared: @escaping @Sendable (String) -> Void
    ) {
        self.settings = settings
        self.clients = clients
        self.router = router
        self.metrics = metrics
        self.logger = logger
        self.clientsChanged = clientsChanged
        self.environmentAppeared = environmentAppeared
        self.refusedRegistrations = RefusalLog(logger: logger, message: "refused a registration: the gateway has as many clients as --max-clients allows")
        self.duplicateInstances = RefusalLog(logger: logger, message: "a stream replaced one of the same instance id registered moments before")
    }

    /// Validates the first message and registers the stream. `onClose` is told when the
    /// gateway closes it (replaced, evicted, shutting down).
    fileprivate func accept(
        _ first: GatewayMessage,
        remoteAddress: String,
        wireProtocol: RPCContext.WireProtocol,
        outbound: MessageQueue<GatewayMessage>,
        onClose: @escaping @Sendable () -> Void
    ) throws(RPCStatus) -> ClientConnection {
        guard first.messageType == .register else {
            throw RPCStatus(.failedPrecondition, "the first message must be 'register', got '\(first.type.prefix(64))'")
        }
        let identity = try ClientIdentity(registration: first.registration, remoteAddress: remoteAddress)
        // Refused before `registered` is sent; the registry refuses again if the drain
        // begins in between.
        if clients.isClosed { throw refuseRegistration(of: identity) }
        // Checked before `registered` is queued too, so the refusal is the stream's only answer
        // (a registration racing this one can still fill the last place: `register` decides).
        if clients.isFull(for: identity.instanceID) { throw refuseAsFull(identity, remoteAddress: remoteAddress) }
        let connection = ClientConnection(identity: identity, outbound: outbound, counted: metrics?.streamOut, onClose: onClose)
        guard connection.send(.registered) else {
            throw RPCStatus(.internal, "could not queue 'registered'")
        }
        switch clients.register(connection) {
        case .refused:
            throw refuseRegistration(of: identity)
        case .full:
            throw refuseAsFull(identity, remoteAddress: remoteAddress)
        case .registered(let replaced, let newEnvironment):
            if let replaced {
                let metadata: Logger.Metadata = [
                    "instance": "\(identity.instanceID)", "environment": "\(identity.environment)",
                    "old_remote_address": "\(replaced.identity.remoteAddress)", "remote_address": "\(remoteAddress)",
                ]
                // A reconnect replaces a stream that has been up a while; two live instances
                // configured with one id replace each other within seconds, over and over.
                if identity.connectedAt.timeIntervalSince(replaced.identity.connectedAt) < 60 {
                    duplicateInstances.record(peer: remoteAddress, key: identity.instanceID, what: "\(identity.environment)/\(identity.instanceID)", why: "replaced a stream \(replaced.identity.remoteAddress) registered less than 60 s before; are two instances configured with this id?")
                } else {
                    logger.info("stream replaced by a newer one with the same instance id", metadata: metadata)
                }
                replaced.close(.replaced)
            }
            clientsChanged(identity.environment)
            if newEnvironment { environmentAppeared(identity.environment) }
        }
        let configured = router.answeringEnvironments
        if !configured.isEmpty && !configured.contains(identity.environment) {
            logger.warning("a client registered in an environment this gateway is not configured for; it gets only calls addressed to it", metadata: [
                "instance": "\(identity.instanceID)", "environment": "\(identity.environment)",
                "configured": "\(configured.sorted().joined(separator: ","))", "remote_address": "\(remoteAddress)",
            ])
        }
        logger.info("client registered", metadata: [
            "instance": "\(identity.instanceID)", "environment": "\(identity.environment)",
            "node": "\(identity.node)", "version": "\(identity.version)",
            "methods": "\(identity.methods.joined(separator: ","))", "remote_address": "\(remoteAddress)",
            "protocol": "\(wireProtocol.rawValue)",
        ])
        return connection
    }

    static let shuttingDownRefusal = RPCStatus(.unavailable, "the gateway is shutting down; reconnect later")

    private func refuseAsFull(_ identity: ClientIdentity, remoteAddress: String) -> RPCStatus {
        refusedRegistrations.record(peer: remoteAddress, what: "\(identity.environment)/\(identity.instanceID)", why: "\(clients.limit) clients registered")
        return RPCStatus(.resourceExhausted, "the gateway has \(clients.limit) registered clients, its --max-clients; a new instance id is refused until one leaves")
    }

    private func refuseRegistration(of identity: ClientIdentity) -> RPCStatus {
        logger.info("refused a registration: the gateway is shutting down", metadata: [
            "instance": "\(identity.instanceID)", "environment": "\(identity.environment)", "remote_address": "\(identity.remoteAddress)",
        ])
        return Self.shuttingDownRefusal
    }

    fileprivate func handle(_ message: GatewayMessage, from connection: ClientConnection) {
        connection.touch()
        let type = message.messageType
        metrics?.streamIn.count(type)
        switch type {
        case .heartbeat:
            connection.recordHeartbeat(at: message.hasHeartbeat ? message.heartbeat.date : Date())
        case .response:
            router.deliver(message.response, from: connection)
        case .drain:
            connection.setDraining()
            logger.info("client is draining: no new requests go to it", metadata: ["instance": "\(connection.identity.instanceID)"])
        case .register:
            logger.warning("ignored a second 'register' on a registered stream", metadata: ["instance": "\(connection.identity.instanceID)"])
        case .registered, .request, .cancel, nil:
            logger.debug("ignored a message of a type the gateway does not take from clients", metadata: [
                "instance": "\(connection.identity.instanceID)", "type": "\(message.type.prefix(64))",
            ])
        }
    }

    /// Sends a heartbeat every interval and evicts the stream as soon as it has been silent
    /// for the configured number of intervals (not at the next heartbeat after that).
    fileprivate func keepAlive(_ connection: ClientConnection) async throws {
        let silenceLimit = settings.evictionSilence
        var nextHeartbeat = ContinuousClock.now
        while true {
            let now = ContinuousClock.now
            let silence = now - connection.lastSeen
            if silence >= silenceLimit {
                logger.warning("evicting a silent stream: nothing received for \(settings.missedHeartbeatsBeforeEviction) heartbeat intervals", metadata: [
                    "instance": "\(connection.identity.instanceID)", "environment": "\(connection.identity.environment)",
                    "silent_for": "\(silence)", "limit": "\(silenceLimit)",
                ])
                connection.close(.evicted)
                return
            }
            if now >= nextHeartbeat {
                _ = connection.send(.heartbeat())
                nextHeartbeat = now + settings.heartbeatInterval
            }
            try await Task.sleep(until: min(nextHeartbeat, connection.lastSeen + silenceLimit), clock: .continuous)
        }
    }

    fileprivate func streamEnded(_ connection: ClientConnection) {
        let removed = clients.remove(connection)
        clientsChanged(connection.identity.environment)
        let reason = connection.closeReason.map { "stream closed (\($0))" } ?? "stream closed"
        router.connectionClosed(connection, reason: "unavailable: \(reason) before it answered")
        logger.info("client disconnected", metadata: [
            "instance": "\(connection.identity.instanceID)", "environment": "\(connection.identity.environment)",
            "reason": "\(connection.closeReason.map { "\($0)" } ?? "client closed or connection lost")",
            "was_current": "\(removed)",
        ])
    }
}

/// One client stream, from `register` to its end, as a session of the endpoint: its
/// messages are handed to it where they are read (the connection's event loop, for a
/// socket) and what the gateway queues for it is sent from there, so a request and its
/// answer cost the stream no task hop. ``run()`` keeps the registration deadline, the
/// heartbeats and the eviction, and ends the stream when the client ends its side, breaks
/// it, or the gateway closes it.
final class ClientStream: RPCSession {
    let outbound: MessageQueue<GatewayMessage>
    private let streams: ClientStreams
    private let remoteAddress: String
    private let wireProtocol: RPCContext.WireProtocol
    private let registered = Mutex<ClientConnection?>(nil)
    /// The client's input ended (with its error, if any), or the gateway closed the stream.
    private let ended = FirstOutcome<RPCStatus?>()

    init(streams: ClientStreams, context: RPCContext) {
        self.streams = streams
        self.remoteAddress = context.remoteAddress
        self.wireProtocol = context.wireProtocol
        self.outbound = MessageQueue(capacity: streams.settings.sendQueueCapacity)
    }

    private var connection: ClientConnection? { registered.withLock { $0 } }

    func receive(_ message: GatewayMessage) throws(RPCStatus) {
        if let connection { return streams.handle(message, from: connection) }
        let ended = self.ended
        let connection = try streams.accept(message, remoteAddress: remoteAddress, wireProtocol: wireProtocol, outbound: outbound) {
            ended.decide(nil)
        }
        registered.withLock { $0 = connection }
    }

    func inputEnded(_ error: RPCStatus?) {
        if let error, let connection {
            // What the client sent broke the stream (a message over the size limit, bytes
            // that are not a GatewayMessage): the client gets the status, the log says why.
            streams.logger.warning("ended a stream: the client sent what the gateway cannot take", metadata: [
                "instance": "\(connection.identity.instanceID)", "environment": "\(connection.identity.environment)",
                "code": "\(error.code)", "error": "\(Printable.escaped(error.message))", "remote_address": "\(remoteAddress)",
            ])
        }
        ended.decide(error)
    }

    func run() async throws {
        defer {
            outbound.finish()
            if let connection { streams.streamEnded(connection) }
        }
        // Cancelled (and waited for) when the stream ends.
        async let _ = keepTime()
        if let error = await ended.wait() { throw error }
        switch connection?.closeReason {
        case .replaced?:
            throw RPCStatus(.aborted, "replaced by a newer stream with the same instance id")
        case .evicted?:
            throw RPCStatus(.unavailable, "evicted: no message for \(streams.settings.evictionSilence)")
        case .shuttingDown?:
            throw ClientStreams.shuttingDownRefusal
        case nil:
            return
        }
    }

    /// The registration deadline, then heartbeats and eviction until the stream ends.
    private func keepTime() async {
        do {
            try await Task.sleep(for: streams.settings.registrationTimeout)
        } catch {
            return
        }
        guard let connection else {
            ended.decide(RPCStatus(.deadlineExceeded, "no 'register' message within \(streams.settings.registrationTimeout); send it first"))
            return
        }
        // Returns once it evicted the stream (closing it decides `ended`), or when cancelled.
        try? await streams.keepAlive(connection)
    }
}

extension ClientIdentity {
    /// Reads a `register` message. The instance id travels in `gateway_ip_dhcp` (field 7);
    /// an old peer that leaves it empty is known by its node name instead.
    package init(registration: GatewayRegistration, remoteAddress: String) throws(RPCStatus) {
        let instance = registration.gatewayIpDhcp.isEmpty ? registration.gatewayID : registration.gatewayIpDhcp
        try Self.check(instance, field: "gateway_ip_dhcp (the instance id)", allowEmpty: false)
        try Self.check(registration.environment, field: "environment", allowEmpty: true)
        try Self.check(registration.gatewayID, field: "gateway_id (the node name)", allowEmpty: true)
        try Self.check(registration.version, field: "version", allowEmpty: true)
        // Bounded, so ListClients and the registration's log line stay small (one client
        // could otherwise carry 64 KB of method names).
        guard registration.methods.count <= 64 else {
            throw RPCStatus(.invalidArgument, "registration lists \(registration.methods.count) methods; at most 64 are accepted")
        }
        let size = (try? registration.serializedBytes() as [UInt8])?.count ?? .max
        guard size <= 4096 else {
            throw RPCStatus(.invalidArgument, "the registration is \(size) bytes; at most 4096 are accepted")
        }
        for method in registration.methods { try Self.check(method, field: "methods", allowEmpty: false) }
        self.init(
            instanceID: instance,
            environment: registration.environment.isEmpty ? "default" : registration.environment,
            node: registration.gatewayID,
            version: registration.version,
            methods: registration.methods,
            remoteAddress: remoteAddress,
            connectedAt: Date()
        )
    }

    private static func check(_ value: String, field: String, allowEmpty: Bool) throws(RPCStatus) {
        if value.isEmpty && !allowEmpty {
            throw RPCStatus(.invalidArgument, "registration field \(field) is empty; expected a non-empty name")
        }
        if value.utf8.count > 256 || value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw RPCStatus(.invalidArgument, "registration field \(field) must be at most 256 bytes of printable text")
        }
    }
}
