import Foundation
import GatewayProtocol
import LeaseInventory
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The platform's own kind of client: a VPS-service instance speaking the Connect protocol,
/// here PyPI `connectrpc` (on pyqwest, HTTP/2 with prior knowledge), and the same client over
/// gRPC. One session behind both protocols.
@Suite("Connect clients", .serialized, .timeLimit(.minutes(3)))
struct ConnectClientTests {
    let lease = (mac: "52:54:00:c0:00:01", ip: "10.6.0.1", vps: "vps-connect")

    @Test("a Connect client that gzips what it sends registers, answers a lookup by MAC and one by IP, and is listed", arguments: [true, false])
    func answersLookups(gzip: Bool) async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let client = try cluster.startConnectWorker(instance: "py-1", environment: "production", leases: [lease], gzip: gzip)
            try await cluster.waitForClients(["py-1"])
            #expect(gateway.log.contains("client registered environment=production instance=py-1"))
            #expect(gateway.log.contains("protocol=connect"))
            let byMAC = try await cluster.lookup(mac: lease.mac)
            #expect(byMAC.response.outcome == .ok)
            #expect(byMAC.owner?.vpsID == lease.vps)
            #expect(byMAC.response.responderInstance == "py-1")
            let byIP = try await cluster.lookup(mac: "52:54:00:c0:00:99", ip: lease.ip)
            #expect(byIP.owner?.vpsID == lease.vps)
            let missing = try await cluster.lookup(mac: "52:54:00:c0:00:98")
            #expect(missing.response.outcome == .notFound)
            #expect(await client.waitForEvent("answered") != nil)
        }
    }

    @Test("a Connect client with a wrong secret is refused with unauthenticated, in Connect's own form, and nothing registers")
    func wrongSecret() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let client = try cluster.startConnectWorker(instance: "intruder", environment: "production", secret: "not-the-secret")
            let end = try #require(await client.waitForEvent("end"), "\(client.log)")
            #expect(end["code"] == "unauthenticated")
            #expect(end["message"]?.contains("x-api-secret") == true)
            #expect(try await cluster.clients().isEmpty)
            #expect(gateway.log.contains("refused a stream: missing or wrong API secret"))
        }
    }

    @Test("a Connect client and a Swift gRPC worker race in one fan-out: the first answer wins, the slower one gets cancel", arguments: [true, false])
    func raceWithSwiftWorker(connectIsFaster: Bool) async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let inventory = try cluster.inventory("beta", [SampleInventory.Entry("vps-swift", mac: lease.mac, ip: lease.ip)])
            let client = try cluster.startConnectWorker(
                instance: "py-race", environment: "production", leases: [lease], delay: connectIsFaster ? .zero : .seconds(20)
            )
            // The slower side is 20 s slow, so which one wins does not depend on how busy the machine is.
            try cluster.startWorker(environment: "beta", inventory: inventory, connectIsFaster ? ["--simulate-latency", "20s"] : [])
            try await cluster.waitForClients(["py-race", "beta-1"])
            let (response, owner) = try await cluster.lookup(mac: lease.mac, timeoutMs: 60_000)
            #expect(response.outcome == .ok)
            if connectIsFaster {
                #expect(response.responderInstance == "py-race")
                #expect(owner?.vpsID == lease.vps)
            } else {
                #expect(response.responderInstance == "beta-1")
                #expect(owner?.vpsID == "vps-swift")
                let cancel = await client.waitForEvent("cancel") { $0["request_id"] == response.requestID }
                #expect(cancel?["was_running"] == "1", "the request was still running at the cancel: \(client.log)")
            }
        }
    }

    @Test("the same client over gRPC and over Connect, side by side, both answer")
    func bothProtocols() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let lease2 = (mac: "52:54:00:c0:00:02", ip: "10.6.0.2", vps: "vps-grpc")
            try cluster.startConnectWorker(instance: "py-connect", environment: "production", leases: [lease])
            try cluster.startConnectWorker(instance: "py-grpc", environment: "beta", leases: [lease2], grpc: true)
            try await cluster.waitForClients(["py-connect", "py-grpc"])
            #expect(gateway.log.contains("instance=py-grpc") && gateway.log.contains("protocol=grpc"))
            #expect(try await cluster.lookup(mac: lease.mac).owner?.vpsID == lease.vps)
            #expect(try await cluster.lookup(mac: lease2.mac).owner?.vpsID == lease2.vps)
        }
    }

    @Test("when the gateway stops, a Connect client sees a clean end of stream (unavailable, shutting down), not a broken one")
    func cleanEndOnStop() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let client = try cluster.startConnectWorker(instance: "py-stop", environment: "production", leases: [lease])
            try await cluster.waitForClients(["py-stop"])
            gateway.signal(SIGTERM)
            #expect(await gateway.waitForExit() == 0)
            let end = try #require(await client.waitForEvent("end"), "\(client.log)")
            #expect(end["code"] == "unavailable")
            #expect(end["message"]?.contains("shutting down") == true, "\(client.log)")
            #expect(client.events.contains { $0.name == "message" && $0["type"] == "drain" })
        }
    }

    @Test("a Connect client that half-closes ends its stream cleanly; the gateway removes it")
    func clientHalfCloses() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let client = try cluster.startConnectWorker(instance: "py-leaves", environment: "production", leases: [lease], stopAfter: .seconds(1))
            #expect(await client.waitForEvent("registered") != nil)
            let end = try #require(await client.waitForEvent("end"), "\(client.log)")
            #expect(end["code"] == "ok", "\(client.log)")
            try await cluster.waitForClients([])
        }
    }
}
