import AsyncPrimitives
import Foundation
import GatewayProtocol
@testable import GatewayServer

/// A registered client without a socket: the test reads what the gateway queued for it.
struct FakeClient {
    let connection: ClientConnection
    let sent: MessageQueue<GatewayMessage>
    private let received = ReceivedMessages()

    init(_ instance: String, environment: String = "production", methods: [String] = [], queue: Int = 16) {
        let sent = MessageQueue<GatewayMessage>(capacity: queue)
        self.sent = sent
        self.connection = ClientConnection(
            identity: ClientIdentity(
                instanceID: instance, environment: environment, node: "node", version: "1",
                methods: methods, remoteAddress: "test", connectedAt: Date()
            ),
            outbound: sent
        )
    }

    /// The next message the gateway queued for this client.
    func next() async -> GatewayMessage? {
        if let message = received.pop() { return message }
        guard let batch = await sent.nextBatch() else { return nil }
        received.push(batch)
        return received.pop()
    }
}

/// Messages taken from the queue in a batch but not yet looked at.
final class ReceivedMessages: @unchecked Sendable {
    private var messages: [GatewayMessage] = []
    func push(_ batch: [GatewayMessage]) { messages += batch }
    func pop() -> GatewayMessage? { messages.isEmpty ? nil : messages.removeFirst() }
}
