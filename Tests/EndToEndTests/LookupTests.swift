import Foundation
import GatewayProtocol
import LeaseInventory
import SwiftProtobuf
import Testing

/// Lookups through a real gateway and real worker processes over loopback.
@Suite("Lookups through gateway and workers", .serialized, .timeLimit(.minutes(5)))
struct LookupTests {
    let productionVPS = SampleInventory.Entry("vps-prod-1", mac: "52:54:00:aa:00:01", ip: "10.1.0.1", organization: "org-prod")

    @Test("a lookup finds the VPS in the one environment of three that knows the MAC, and the others get cancel")
    func foundInOneOfThree() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [productionVPS]))
            // Slow environments: still working on it when production answers, so they must be
            // cancelled. 30 s, so that "did not wait" holds with room on a busy machine.
            let beta = try cluster.startWorker(environment: "beta", inventory: try cluster.inventory("beta"), ["--simulate-latency", "30s", "--log-level", "debug"])
            let dev = try cluster.startWorker(environment: "dev", inventory: try cluster.inventory("dev"), ["--simulate-latency", "30s", "--log-level", "debug"])
            try await cluster.waitForClients(["production-1", "beta-1", "dev-1"])

            let started = ContinuousClock.now
            let (response, owner) = try await cluster.lookup(mac: "52:54:00:AA:00:01", timeoutMs: 60_000, requestID: "find-1")
            #expect(response.outcome == .ok)
            #expect(owner?.vpsID == "vps-prod-1")
            #expect(owner?.organizationID == "org-prod")
            #expect(response.responderEnvironment == "production")
            #expect(response.responderInstance == "production-1")
            #expect(ContinuousClock.now - started < .seconds(15), "the answer must not wait for the slow environments' 30 s")

            for worker in [beta, dev] {
                let cancelled = await poll(timeout: .seconds(20)) {
                    worker.log.contains("request_id=find-1") && worker.log.contains("code=cancelled")
                }
                #expect(cancelled, "\(worker.name) should have been cancelled:\n\(worker.log)")
            }
        }
    }

    @Test("a MAC nobody knows is not_found once every environment has answered")
    func notFound() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            for environment in ["production", "beta", "dev"] {
                try cluster.startWorker(environment: environment, inventory: try cluster.inventory(environment, environment == "production" ? [productionVPS] : []))
            }
            try await cluster.waitForClients(["production-1", "beta-1", "dev-1"])
            let started = ContinuousClock.now
            let (response, _) = try await cluster.lookup(mac: "52:54:00:ff:ff:ff", timeoutMs: 60_000)
            #expect(response.outcome == .notFound)
            #expect(response.error.contains("beta/beta-1") && response.error.contains("dev/dev-1") && response.error.contains("production/production-1"))
            #expect(ContinuousClock.now - started < .seconds(30), "not_found must not wait for the 60 s deadline")
        }
    }

    @Test("a MAC the inventory does not know falls back to the lease with the same IP")
    func lookupFallsBackToInstanceAndIP() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let inventory = try cluster.inventory("production", [productionVPS])
            try cluster.startWorker(environment: "production", inventory: inventory)
            try await cluster.waitForClients(["production-1"])
            let (byIP, byIPOwner) = try await cluster.lookup(mac: "52:54:00:00:00:99", ip: "10.1.0.1")
            #expect(byIP.outcome == .ok)
            #expect(byIPOwner?.vpsID == "vps-prod-1")
        }
    }

    @Test("with no receiver connected the call waits for one until its deadline, then says no_receivers")
    func noReceivers() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let started = ContinuousClock.now
            let (response, _) = try await cluster.lookup(mac: "52:54:00:aa:00:01", timeoutMs: 700)
            let elapsed = ContinuousClock.now - started
            #expect(response.outcome == .noReceivers)
            // The lower bound is the claim; the upper one only says it did not hang.
            #expect(elapsed >= .milliseconds(650) && elapsed < .seconds(20))
        }
    }

    @Test("a call waiting for a receiver completes as soon as one registers")
    func waitsForReceiver() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let inventory = try cluster.inventory("production", [productionVPS])
            async let lookup = cluster.lookup(mac: "52:54:00:aa:00:01", timeoutMs: 15_000)
            try await Task.sleep(for: .milliseconds(300))
            try cluster.startWorker(environment: "production", inventory: inventory)
            let (response, owner) = try await lookup
            #expect(response.outcome == .ok)
            #expect(owner?.vpsID == "vps-prod-1")
        }
    }

    @Test("a handler slower than the deadline ends the call deadline_exceeded at the deadline")
    func deadlineExceeded() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [productionVPS]), ["--simulate-latency", "60s"])
            try await cluster.waitForClients(["production-1"])
            let started = ContinuousClock.now
            let (response, _) = try await cluster.lookup(mac: "52:54:00:aa:00:01", timeoutMs: 800)
            let elapsed = ContinuousClock.now - started
            #expect(response.outcome == .deadlineExceeded)
            #expect(response.error.contains("production/production-1"))
            // At the deadline, not at the handler's 60 s.
            #expect(elapsed >= .milliseconds(750) && elapsed < .seconds(20))
        }
    }

    @Test("an unknown method is answered unimplemented by the workers, at once")
    func unknownMethod() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production"))
            try await cluster.waitForClients(["production-1"])
            let started = ContinuousClock.now
            let response = try await cluster.call(.with { $0.method = "NoSuchMethod"; $0.timeoutMs = 60_000 })
            #expect(response.outcome == .failed)
            #expect(response.error.contains("unimplemented"))
            #expect(ContinuousClock.now - started < .seconds(30), "not at the 60 s deadline")
        }
    }

    @Test("malformed payload bytes are invalid_argument and the worker keeps serving")
    func malformedPayload() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let worker = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [productionVPS]))
            try await cluster.waitForClients(["production-1"])
            // A length-delimited field that claims 16 bytes and carries 2.
            let response = try await cluster.call(.with {
                $0.method = RequestMethods.findVPSByLease.name
                $0.payload = Data([0x0a, 0x10, 0x61, 0x62])
                $0.timeoutMs = 5000
            })
            #expect(response.outcome == .failed)
            #expect(response.error.contains("invalid_argument"))
            let badMAC = try await cluster.lookup(mac: "not-a-mac")
            #expect(badMAC.response.outcome == .failed)
            #expect(badMAC.response.error.contains("invalid_argument"))
            #expect(worker.isRunning)
            let (after, owner) = try await cluster.lookup(mac: "52:54:00:aa:00:01")
            #expect(after.outcome == .ok)
            #expect(owner?.vpsID == "vps-prod-1")
        }
    }
}
