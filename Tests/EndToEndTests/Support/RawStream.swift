import Foundation
import GatewayProtocol
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import Synchronization

/// A hand-driven `RegisterGateway` stream over real loopback gRPC, the way a client written
/// against the original .proto (or a misbehaving one) would talk: the test decides every
/// message sent and reads every message received.
final class RawStream: Sendable {
    enum Event: Sendable {
        case message(GatewayMessage)
        /// The RPC ended; nil for status OK.
        case ended(RPCError?)
    }

    private let outbound: AsyncStream<GatewayMessage>.Continuation
    /// Everything received, in order; ``next(timeout:)`` takes from the front.
    private let received = Mutex<[Event]>([])

    private init(outbound: AsyncStream<GatewayMessage>.Continuation) {
        self.outbound = outbound
    }

    func send(_ message: GatewayMessage) { outbound.yield(message) }

    /// Half-closes the client side.
    func finish() { outbound.finish() }

    fileprivate func record(_ event: Event) { received.withLock { $0.append(event) } }

    /// The next event, or nil after `timeout`. The waits here end as soon as what they wait
    /// for arrives, so their defaults are long: on a busy machine ten seconds did not cover a
    /// gateway's first answer. A test that expects nothing passes its own short limit.
    func next(timeout: Duration = .seconds(30)) async -> Event? {
        let box = EventBox()
        _ = await poll(timeout: timeout) {
            self.received.withLock { events in
                guard !events.isEmpty else { return false }
                box.event = events.removeFirst()
                return true
            }
        }
        return box.event
    }

    /// The next message of `type`, skipping heartbeats; nil after `timeout` or at the end.
    func nextMessage(ofType type: MessageType, timeout: Duration = .seconds(30)) async -> GatewayMessage? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            switch await next(timeout: deadline - .now) {
            case .message(let message) where message.messageType == type: return message
            case .message: continue
            case .ended, nil: return nil
            }
        }
        return nil
    }

    /// Skips messages until the stream ends; the end's error, or nil after `timeout`.
    func waitForEnd(timeout: Duration = .seconds(30)) async -> (ended: Bool, error: RPCError?) {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            switch await next(timeout: deadline - .now) {
            case .ended(let error): return (true, error)
            case .message: continue
            case nil: return (false, nil)
            }
        }
        return (false, nil)
    }

    /// Opens a stream to `port` with `secret` (nil: no header), runs `body`, then closes it.
    /// With `reading` false the client never reads what the gateway sends, like a stuck peer.
    static func with<Result: Sendable>(
        port: Int,
        secret: String?,
        reading: Bool = true,
        _ body: @Sendable (RawStream) async throws -> Result
    ) async throws -> Result {
        let (outbound, outboundContinuation) = AsyncStream.makeStream(of: GatewayMessage.self)
        let stream = RawStream(outbound: outboundContinuation)
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            try await withThrowingTaskGroup(of: Result?.self) { group in
                group.addTask {
                    let service = VPSGatewayService.Client(wrapping: client)
                    var metadata: Metadata = [:]
                    if let secret { metadata.addString(secret, forKey: GatewayMetadataKey.apiSecret) }
                    do {
                        try await service.registerGateway(
                            metadata: metadata,
                            requestProducer: { writer in
                                for await message in outbound { try await writer.write(message) }
                            },
                            onResponse: { response in
                                guard reading else {
                                    try await Task.sleep(for: .seconds(3600))
                                    return
                                }
                                for try await message in response.messages { stream.record(.message(message)) }
                            }
                        )
                        stream.record(.ended(nil))
                    } catch let error as RPCError {
                        stream.record(.ended(error))
                    }
                    return nil
                }
                let result = try await body(stream)
                outboundContinuation.finish()
                group.cancelAll()
                return result
            }
        }
    }
}

private final class EventBox: @unchecked Sendable {
    var event: RawStream.Event?
}

extension GatewayRegistration {
    /// A registration using only the original .proto's fields, as an old client sends it.
    static func legacy(instance: String, node: String = "node-a") -> Self {
        .with {
            $0.gatewayID = node
            $0.version = "legacy-1.0"
            $0.gatewayIpDhcp = instance
        }
    }
}
