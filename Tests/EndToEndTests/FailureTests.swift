import AsyncPrimitives
import Foundation
import GRPCCore
import GatewayProtocol
import LeaseInventory
import SwiftProtobuf
import Testing

/// Processes killed, gateways restarted, clients that go silent or stop reading.
@Suite("Failures and recovery", .serialized, .timeLimit(.minutes(3)))
struct FailureTests {
    let vps = SampleInventory.Entry("vps-1", mac: "52:54:00:bb:00:01", ip: "10.2.0.1")

    @Test("a worker killed with SIGKILL mid-request: the call completes from another environment that knows the lease")
    func killedWorkerAnotherAnswers() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let slow = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--simulate-latency", "60s"])
            // Beta answers 10 s after the request: the window in which the test sees the
            // request in flight at production (polling the admin API) and kills it. With 4 s,
            // a machine running three suites at once let the window pass unseen.
            try cluster.startWorker(environment: "beta", inventory: try cluster.inventory("beta", [vps]), ["--simulate-latency", "10s"])
            try await cluster.waitForClients(["production-1", "beta-1"])
            async let lookup = cluster.lookup(mac: vps.mac, timeoutMs: 45_000)
            try await cluster.waitForRequestInFlight(at: "production-1")
            let started = ContinuousClock.now
            slow.signal(SIGKILL)
            let (response, owner) = try await lookup
            #expect(response.outcome == .ok)
            #expect(response.responderEnvironment == "beta")
            #expect(owner?.vpsID == "vps-1")
            // Beta's answer, not the 45 s deadline, ends the call.
            #expect(ContinuousClock.now - started < .seconds(30))
        }
    }

    @Test("without the journal, a worker killed with SIGKILL mid-request with nobody else to ask fails the call at once")
    func killedWorkerFailsAtOnce() async throws {
        try await Cluster.with { cluster in
            // The journal would retry it until the deadline; this is the fan-out's own behaviour.
            try await cluster.startGateway(["--journal", "off"])
            let slow = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--simulate-latency", "10s"])
            try await cluster.waitForClients(["production-1"])
            async let lookup = cluster.lookup(mac: vps.mac, timeoutMs: 60_000)
            try await cluster.waitForRequestInFlight(at: "production-1")
            let started = ContinuousClock.now
            slow.signal(SIGKILL)
            let (response, _) = try await lookup
            #expect(response.outcome == .failed)
            #expect(response.error.contains("production/production-1"))
            #expect(ContinuousClock.now - started < .seconds(30), "must not wait for the 60 s timeout")
        }
    }

    @Test("after the gateway is killed and restarted, workers reconnect with backoff and lookups work again")
    func gatewayRestart() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let worker = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            #expect(try await cluster.lookup(mac: vps.mac).response.outcome == .ok)

            gateway.signal(SIGKILL)
            await gateway.waitForExit()
            #expect(await poll(timeout: .seconds(20)) { worker.log.contains("reconnecting") })
            try await Task.sleep(for: .milliseconds(800))  // let a few reconnect attempts fail
            try await cluster.startGateway()
            try await cluster.waitForClients(["production-1"], timeout: .seconds(10))
            let (response, owner) = try await cluster.lookup(mac: vps.mac)
            #expect(response.outcome == .ok)
            #expect(owner?.vpsID == "vps-1")
            #expect(worker.isRunning)
        }
    }

    @Test("a stream silent for three heartbeat intervals is evicted; one that heartbeats stays")
    func silentStreamEvicted() async throws {
        try await Cluster.with { cluster in
            // One second, not less: with a shorter interval a machine running three suites at
            // once starved chatty's heartbeats past three intervals, and it was evicted too.
            let gateway = try await cluster.startGateway(["--heartbeat-interval", "1s", "--registration-timeout", "1s"])
            try await RawStream.with(port: cluster.port, secret: cluster.secret) { silent in
                try await RawStream.with(port: cluster.port, secret: cluster.secret) { chatty in
                    // Registration is confirmed on each stream itself (its `registered`), not by
                    // listing clients: on a busy machine the silent one may already be evicted
                    // (3 s) by the time a listing shows both. Chatty talks from its start.
                    // Both register at once (each stream has 1 s to), and chatty keeps
                    // talking from then on.
                    chatty.send(.register(.legacy(instance: "chatty")))
                    silent.send(.register(.legacy(instance: "silent")))
                    let heartbeats = Task {
                        // Bounded: 300 heartbeats 100 ms apart at most, well past the test's end.
                        for _ in 0..<300 where !Task.isCancelled {
                            chatty.send(.heartbeat())
                            _ = await waitUntil(.now + .milliseconds(100))
                        }
                    }
                    defer { heartbeats.cancel() }
                    #expect(await chatty.nextMessage(ofType: .registered) != nil)
                    #expect(await silent.nextMessage(ofType: .registered) != nil)
                    let ended = await silent.waitForEnd(timeout: .seconds(20))
                    #expect(ended.ended)
                    #expect(ended.error?.code == .unavailable)
                    #expect(gateway.log.contains("evicting a silent stream: nothing received for 3 heartbeat intervals"))
                    let clients = try await cluster.clients()
                    #expect(clients.map(\.instanceID) == ["chatty"])
                    #expect(clients.first?.hasLastHeartbeat == true)
                }
            }
        }
    }

    @Test("a client that stops reading cannot stall calls to the others: sends to it fail at once")
    func stuckClientDoesNotStallOthers() async throws {
        try await Cluster.with { cluster in
            // Without the journal the refusal is the call's answer; with it, it would be retried.
            try await cluster.startGateway(["--send-queue", "4", "--journal", "off"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await RawStream.with(port: cluster.port, secret: cluster.secret, reading: false) { stuck in
                stuck.send(.register(.with { $0.gatewayIpDhcp = "stuck"; $0.environment = "beta"; $0.methods = ["Ping"] }))
                try await cluster.waitForClients(["production-1", "stuck"])
                // Megabyte payloads fill the HTTP/2 window, then the 4-message queue (calls
                // with a short deadline, so filling it is quick).
                let big = Data(repeating: 0x61, count: 1_000_000)
                var full = false
                for _ in 0..<40 where !full {
                    let response = try await cluster.call(.with { $0.method = "Ping"; $0.instanceID = "stuck"; $0.payload = big; $0.timeoutMs = 100 })
                    full = response.outcome == .failed && response.error.contains("send queue is full")
                }
                #expect(full, "40 megabyte sends to a client that reads nothing never filled its queue")
                // With the queue full, a call with a long deadline is refused at once, not at
                // its deadline: far inside 20 s however busy the machine is.
                let sent = ContinuousClock.now
                let refused = try await cluster.call(.with { $0.method = "Ping"; $0.instanceID = "stuck"; $0.payload = big; $0.timeoutMs = 20_000 })
                #expect(refused.outcome == .failed && refused.error.contains("send queue is full"), "\(refused)")
                #expect(ContinuousClock.now - sent < .seconds(10))
                // The healthy worker is unaffected: answered within the lookup's 5 s deadline.
                let (response, owner) = try await cluster.lookup(mac: vps.mac, environment: "production")
                #expect(response.outcome == .ok)
                #expect(owner?.vpsID == "vps-1")
            }
        }
    }

    @Test("SIGTERM stops the gateway cleanly with exit 0 and the worker with exit 0")
    func gracefulStop() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let worker = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit(timeout: .seconds(15)) == 0)
            gateway.signal(SIGTERM)
            #expect(await gateway.waitForExit(timeout: .seconds(15)) == 0)
            #expect(worker.log.contains("draining"))
            #expect(gateway.log.contains("client disconnected"))
            #expect(!FileManager.default.fileExists(atPath: cluster.adminSocket), "the gateway removes its admin socket on exit")
        }
    }
}
