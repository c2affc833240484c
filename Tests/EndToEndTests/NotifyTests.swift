import Foundation
import LeaseInventory
import Testing

/// What the roles tell their service manager through `$NOTIFY_SOCKET` (systemd's protocol,
/// read here from a socket the test owns).
@Suite("Service manager notifications", .serialized, .timeLimit(.minutes(5)))
struct NotifyTests {
    @Test("the gateway says READY=1 once it listens, keeps STATUS current, pings the watchdog and says STOPPING=1 on SIGTERM")
    func gatewayLifecycle() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/notify.sock")
            let gateway = try await cluster.startGateway(environment: [
                "GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000",
            ])
            #expect(await notify.waitFor("READY=1"))
            #expect(notify.messages.contains { $0.contains("STATUS=gateway: 0 client(s)") })
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production"))
            #expect(await notify.waitFor("STATUS=gateway: 1 client(s) (production 1)"))
            let pings = notify.messages.filter { $0 == "WATCHDOG=1" }.count
            #expect(pings >= 2, "a 1 s watchdog wants a ping every 0.5 s")
            gateway.signal(SIGTERM)
            #expect(await gateway.waitForExit() == 0)
            #expect(notify.messages.contains { $0.hasPrefix("STOPPING=1") })
        }
    }

    @Test("a worker says READY=1 only once it is registered with a gateway")
    func workerReadiness() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/notify.sock")
            try cluster.spawn(
                name: "worker",
                arguments: ["worker", "--env", "beta", "--instance-id", "b1", "--gateway-url", cluster.gatewayURL,
                            "--inventory", "sqlite:\(try cluster.inventory("beta"))", "--backoff-initial", "100ms", "--backoff-max", "300ms"],
                environment: ["VPS_GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": notify.path]
            )
            try await Task.sleep(for: .milliseconds(800))
            #expect(!notify.messages.contains { $0.contains("READY=1") }, "no gateway yet, so not ready")
            try await cluster.startGateway()
            #expect(await notify.waitFor("READY=1"))
            #expect(notify.messages.contains { $0.contains("STATUS=worker beta: registered with 1 of 1 gateway(s)") })
        }
    }
}
