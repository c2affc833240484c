import Foundation
@testable import GatewayServer
import GatewayProtocol

/// A registered client without a socket: the test reads what the gateway queued for it.
struct FakeClient {
    let connection: ClientConnection
    let sent: AsyncStream<GatewayMessage>

    init(_ instance: String, environment: String = "production", methods: [String] = [], queue: Int = 16) {
        let (sent, continuation) = AsyncStream.makeStream(of: GatewayMessage.self, bufferingPolicy: .bufferingOldest(queue))
        self.sent = sent
        self.connection = ClientConnection(
            identity: ClientIdentity(
                instanceID: instance, environment: environment, node: "node", version: "1",
                methods: methods, remoteAddress: "test", connectedAt: Date()
            ),
            outbound: continuation
        )
    }

    /// The next message the gateway queued for this client.
    func next() async -> GatewayMessage? {
        var iterator = sent.makeAsyncIterator()
        return await iterator.next()
    }
}
