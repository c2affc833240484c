import Foundation
import GatewayProtocol
import LeaseInventory
import Testing

/// Keepalive and multi-gateway dialing, with real processes.
@Suite("Connections", .serialized, .timeLimit(.minutes(5)))
struct ConnectionTests {
    @Test("an idle stream whose client pings at the permitted interval is kept; a faster pinger is sent away and reconnects")
    func keepalivePolicing() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway(["--min-client-ping-interval", "1s"])
            let polite = try cluster.startWorker(environment: "production", instance: "polite", inventory: try cluster.inventory("production"), ["--keepalive-interval", "1500ms"])
            let pushy = try cluster.startWorker(environment: "beta", instance: "pushy", inventory: try cluster.inventory("beta"), ["--keepalive-interval", "200ms"])
            try await cluster.waitForClients(["polite", "pushy"])
            let connectedAt = try await cluster.clients().first { $0.instanceID == "polite" }?.connectedAt
            // Idle for several of the polite client's ping intervals.
            #expect(await poll(timeout: .seconds(15)) { pushy.log.contains("reconnecting") }, "the fast pinger should have been sent GOAWAY:\n\(pushy.log)")
            try await Task.sleep(for: .seconds(5))
            let later = try await cluster.clients().first { $0.instanceID == "polite" }
            #expect(later?.connectedAt == connectedAt, "the polite stream must be the same one")
            #expect(!polite.log.contains("reconnecting"))
        }
    }

    @Test("a worker given several node gateways registers with each under that node's name")
    func severalGateways() async throws {
        try await Cluster.with { first in
            try await Cluster.with { second in
                try await first.startGateway()
                try await second.startGateway(environment: ["GATEWAY_API_SECRET": first.secret])
                let inventory = try first.inventory("production", [SampleInventory.Entry("vps-9", mac: "52:54:00:cc:00:09", ip: "10.9.0.9")])
                try first.spawn(
                    name: "worker-multi",
                    arguments: ["worker", "--env", "production", "--instance-id", "multi", "--inventory", "sqlite:\(inventory)"],
                    environment: [
                        "VPS_GATEWAY_API_SECRET": first.secret,
                        "VPS_NODE_GATEWAY_ENDPOINTS": "node1:\(first.gatewayURL),node2:\(second.gatewayURL)",
                    ]
                )
                try await first.waitForClients(["multi"])
                try await second.waitForClients(["multi"])
                #expect(try await first.clients().first?.node == "node1")
                #expect(try await second.clients().first?.node == "node2")
                #expect(try await second.lookup(mac: "52:54:00:cc:00:09").owner?.vpsID == "vps-9")
            }
        }
    }
}
