package import AsyncPrimitives
public import Foundation
package import GatewayProtocol
import Synchronization

/// Identifies one stream for its whole life; never reused within a process, so a stream
/// that was replaced can never remove its successor.
package struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    package let rawValue: UInt64
    private static let next = Atomic<UInt64>(1)

    package static func make() -> ConnectionID {
        ConnectionID(rawValue: next.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    package var description: String { "#\(rawValue)" }
}

/// Who is on the other end of a stream, as its `register` message said.
public struct ClientIdentity: Sendable, Hashable {
    public var instanceID: String
    public var environment: String
    public var node: String
    public var version: String
    /// Methods the instance answers; empty for an old peer that does not say.
    public var methods: [String]
    public var remoteAddress: String
    public var connectedAt: Date

    package func answers(_ method: String) -> Bool {
        methods.isEmpty || methods.contains(method)
    }
}

/// Why the gateway ended a stream itself.
package enum CloseReason: Sendable, Equatable {
    case replaced
    case evicted
    case shuttingDown
}

/// One registered stream: its identity, its bounded send queue and its liveness.
///
/// Sending never blocks: a message that does not fit in the queue is refused at once, so a
/// client that stops reading only hurts its own requests.
package final class ClientConnection: Sendable {
    package let id: ConnectionID
    package let identity: ClientIdentity
    private let outbound: MessageQueue<GatewayMessage>
    private let counted: StreamMessageCounters?
    private let onClose: (@Sendable () -> Void)?
    private let state: Mutex<State>
    private let inFlight = Atomic<Int>(0)

    private struct State {
        var lastSeen: ContinuousClock.Instant
        var lastHeartbeat: Date?
        var draining = false
        var closeReason: CloseReason?
    }

    /// - Parameters:
    ///   - counted: counts the messages queued, by type.
    ///   - onClose: told when the gateway closes the stream (``close(_:)``).
    package init(
        identity: ClientIdentity,
        outbound: MessageQueue<GatewayMessage>,
        counted: StreamMessageCounters? = nil,
        onClose: (@Sendable () -> Void)? = nil,
        now: ContinuousClock.Instant = .now
    ) {
        self.id = .make()
        self.identity = identity
        self.outbound = outbound
        self.counted = counted
        self.onClose = onClose
        self.state = Mutex(State(lastSeen: now))
    }

    /// Queues a message; false when the queue is full or the stream has ended.
    package func send(_ message: GatewayMessage) -> Bool {
        guard outbound.enqueue(message) else { return false }
        counted?.count(message.messageType)
        return true
    }

    /// Ends the stream from the gateway's side. The first reason given wins.
    package func close(_ reason: CloseReason) {
        state.withLock { if $0.closeReason == nil { $0.closeReason = reason } }
        outbound.finish()
        onClose?()
    }

    package var closeReason: CloseReason? { state.withLock { $0.closeReason } }

    /// Records that the client said something (any message counts as a sign of life).
    package func touch(now: ContinuousClock.Instant = .now) {
        state.withLock { $0.lastSeen = now }
    }

    package func recordHeartbeat(at date: Date) {
        state.withLock { $0.lastHeartbeat = date }
    }

    package var lastSeen: ContinuousClock.Instant { state.withLock { $0.lastSeen } }
    package var lastHeartbeat: Date? { state.withLock { $0.lastHeartbeat } }

    /// A draining client gets no new requests; the ones it holds still complete.
    package func setDraining() { state.withLock { $0.draining = true } }
    package var isDraining: Bool { state.withLock { $0.draining } }

    package func requestStarted() { inFlight.add(1, ordering: .relaxed) }
    package func requestEnded() { inFlight.subtract(1, ordering: .relaxed) }
    package var inFlightCount: Int { inFlight.load(ordering: .relaxed) }

    /// `environment/instance`, the way logs and errors name a client.
    package var name: String { "\(identity.environment)/\(identity.instanceID)" }
}
