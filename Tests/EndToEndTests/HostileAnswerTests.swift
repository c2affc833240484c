import Foundation
import GatewayJournal
import GatewayProtocol
import GRPCCore
import LeaseInventory
import Logging
import SwiftProtobuf
import Testing

/// Instances that hold the secret but answer what they should not: names that would inject
/// records into dnsmasq's hosts file, environments the node does not serve, and a "not found"
/// said without everyone who should answer.
@Suite("Hostile answers", .serialized, .timeLimit(.minutes(3)))
struct HostileAnswerTests {
    let vps = SampleInventory.Entry("vps-real", mac: "52:54:00:ab:00:01", ip: "10.9.0.1")

    /// Registers a hand-driven instance and answers every request with `vpsID`.
    func rogue(_ stream: RawStream, instance: String, environment: String, vpsID: String) async {
        stream.send(.register(.with { $0.gatewayIpDhcp = instance; $0.environment = environment; $0.methods = [RequestMethods.findVPSByLease.name] }))
        _ = await stream.nextMessage(ofType: .registered)
    }

    func answer(_ stream: RawStream, _ request: GatewayMessage, vpsID: String) {
        stream.send(.response(.with {
            $0.requestID = request.request.requestID
            $0.success = true
            $0.code = "ok"
            $0.payload = try! FindVPSByLeaseResponse.with { $0.vpsID = vpsID; $0.organizationID = "org-x" }.serializedBytes()
        }))
    }

    @Test("an answer whose vps_id is not a DNS label is refused and logged with its instance; the real owner's answer wins")
    func injectedNameRefused() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--journal", "off"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--simulate-latency", "20s"])
            try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                await rogue(stream, instance: "rogue", environment: "beta", vpsID: "")
                try await cluster.waitForClients(["rogue", "production-1"])
                async let lookup = cluster.lookup(mac: vps.mac, timeoutMs: 60_000)
                let request = try #require(await stream.nextMessage(ofType: .request))
                answer(stream, request, vpsID: "vps-x\n10.9.9.9 www.bank.example")
                let (response, owner) = try await lookup
                #expect(response.outcome == .ok)
                #expect(owner?.vpsID == "vps-real", "the refused answer must not win")
            }
            // The owner answers 20 s late, so the rogue's answer is classified first even on a
            // busy machine; the line may reach the log file a moment after the call returns.
            #expect(await poll(timeout: .seconds(10)) { gateway.log.contains("refused an answer from a client") })
            #expect(gateway.log.contains("beta/rogue"))
            #expect(gateway.log.contains("is not a DNS label"))
            #expect(!gateway.log.contains("www.bank.example\n"), "the refused text is logged escaped")
        }
    }

    @Test("with only a refused answer the lookup fails and nothing is stored as its result")
    func onlyRefusedAnswer() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway(["--journal", "off"])
            try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                await rogue(stream, instance: "rogue", environment: "production", vpsID: "")
                try await cluster.waitForClients(["rogue"])
                async let lookup = cluster.lookup(mac: vps.mac, timeoutMs: 5000)
                let request = try #require(await stream.nextMessage(ofType: .request))
                answer(stream, request, vpsID: "evil name")
                let (response, owner) = try await lookup
                #expect(response.outcome == .failed)
                #expect(owner == nil)
                #expect(response.error.contains("refused answer"), "\(response.error)")
            }
        }
    }

    @Test("with --environments production, an instance of another environment gets no lookup addressed to all, and cannot claim a lease")
    func unconfiguredEnvironment() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--journal", "off", "--environments", "production"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production"))
            try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                await rogue(stream, instance: "dev-rogue", environment: "dev", vpsID: "")
                try await cluster.waitForClients(["dev-rogue", "production-1"])
                let (response, _) = try await cluster.lookup(mac: vps.mac, timeoutMs: 5000)
                #expect(response.outcome == .notFound, "production says not found; dev is not asked")
                #expect(await stream.nextMessage(ofType: .request, timeout: .milliseconds(500)) == nil, "no request reached dev")
            }
            #expect(gateway.log.contains("registered in an environment this gateway is not configured for"))
        }
    }

    @Test("not found while a configured environment is missing is not final: the journal retries, and the lookup completes once it registers")
    func missingEnvironmentIsNotNotFound() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway(["--environments", "production,beta"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production"))
            try await cluster.waitForClients(["production-1"])
            let request = AdminCallRequest.with {
                $0.method = RequestMethods.findVPSByLease.name
                $0.payload = try! FindVPSByLeaseRequest.with { $0.mac = vps.mac }.serializedBytes()
                // Far beyond the retries below, so the deadline cannot end it first on a busy machine.
                $0.timeoutMs = 150_000
                $0.requestID = "needs-beta"
                $0.async = true
            }
            _ = try await cluster.call(request)
            let journal = try RequestJournal.openExisting(at: cluster.journal, writable: false, logger: Logger(label: "test"))
            // Production said "not found", beta is not there: the row stays unfinished, retried.
            #expect(await poll(timeout: .seconds(30)) { ((try? journal.record("needs-beta"))??.attempts ?? 0) >= 2 })
            #expect(try journal.record("needs-beta")?.state.isTerminal == false)
            try cluster.startWorker(environment: "beta", inventory: try cluster.inventory("beta", [vps]))
            #expect(await poll(timeout: .seconds(120)) { (try? journal.record("needs-beta"))??.state == .completed })
            #expect(try journal.record("needs-beta")?.outcome == .ok)
        }
    }

    @Test("a huge answer reaches its caller but is not stored: the journal row says why, and stays small")
    func hugeAnswerNotStored() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway(["--max-stored-result", "1024"])
            try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                stream.send(.register(.with { $0.gatewayIpDhcp = "big"; $0.environment = "production"; $0.methods = ["Ping"] }))
                _ = await stream.nextMessage(ofType: .registered)
                try await cluster.waitForClients(["big"])
                async let call = cluster.call(.with { $0.method = "Ping"; $0.timeoutMs = 5000; $0.requestID = "big-answer" })
                let request = try #require(await stream.nextMessage(ofType: .request))
                stream.send(.response(.with {
                    $0.requestID = request.request.requestID
                    $0.success = true
                    $0.code = "ok"
                    $0.payload = Data(repeating: 0x42, count: 200_000)
                }))
                let response = try await call
                #expect(response.outcome == .ok && response.payload.count == 200_000, "the caller gets the whole answer")
            }
            let journal = try RequestJournal.openExisting(at: cluster.journal, writable: false, logger: Logger(label: "test"))
            #expect(await poll(timeout: .seconds(10)) { (try? journal.record("big-answer"))??.state == .completed })
            let row = try #require(try journal.record("big-answer"))
            #expect(row.resultPayload == nil)
            #expect(row.error?.contains("was not stored") == true, "\(row.error ?? "")")
        }
    }

    @Test("a registration listing too many methods, or too large, is refused as invalid")
    func oversizedRegistration() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let many = try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                stream.send(.register(.with { $0.gatewayIpDhcp = "many"; $0.methods = (0..<65).map { "M\($0)" } }))
                return await stream.waitForEnd()
            }
            #expect(many.error?.code == .invalidArgument, "\(String(describing: many.error))")
            let large = try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                stream.send(.register(.with { $0.gatewayIpDhcp = "large"; $0.methods = (0..<20).map { _ in String(repeating: "m", count: 250) } }))
                return await stream.waitForEnd()
            }
            #expect(large.error?.message.contains("at most 4096") == true, "\(String(describing: large.error))")
            #expect(try await cluster.clients().isEmpty)
        }
    }

    @Test("with --max-clients 2 a third instance id is refused with resource_exhausted and one log line; a registered instance may still reconnect")
    func clientCap() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--journal", "off", "--max-clients", "2"])
            try await RawStream.with(port: cluster.port, secret: cluster.secret) { first in
                await rogue(first, instance: "one", environment: "production", vpsID: "")
                try await RawStream.with(port: cluster.port, secret: cluster.secret) { second in
                    await rogue(second, instance: "two", environment: "production", vpsID: "")
                    try await cluster.waitForClients(["one", "two"])
                    for _ in 0..<3 {
                        let third = try await RawStream.with(port: cluster.port, secret: cluster.secret) { third in
                            third.send(.register(.with { $0.gatewayIpDhcp = "three"; $0.environment = "production" }))
                            return await third.next()
                        }
                        // The refusal is the stream's only answer: no `registered` before it.
                        guard case .ended(let error) = third else {
                            Issue.record("expected the stream to end at once, got \(String(describing: third))")
                            continue
                        }
                        #expect(error?.code == .resourceExhausted, "\(String(describing: error))")
                        #expect(error?.message.contains("--max-clients") == true)
                    }
                    // The same instance id on a new stream replaces its old one, full or not.
                    try await RawStream.with(port: cluster.port, secret: cluster.secret) { again in
                        await rogue(again, instance: "two", environment: "production", vpsID: "")
                        let names = try await cluster.clients().map(\.instanceID).sorted()
                        #expect(names == ["one", "two"])
                    }
                }
            }
            #expect(gateway.log.split(separator: "\n").filter { $0.contains("refused a registration: the gateway has as many clients") }.count == 1)
        }
    }

    @Test("a registered client sending a message over the size limit gets resource_exhausted, and the gateway logs why it ended the stream")
    func oversizedMessageLogged() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--journal", "off", "--max-message-size", "65536"])
            let end = try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                await rogue(stream, instance: "big-sender", environment: "production", vpsID: "")
                stream.send(.response(.with { $0.requestID = "x"; $0.payload = Data(count: 100_000) }))
                return await stream.waitForEnd()
            }
            #expect(end.error?.code == .resourceExhausted, "\(String(describing: end.error))")
            #expect(await poll(timeout: .seconds(20)) { gateway.log.contains("ended a stream: the client sent what the gateway cannot take") })
            #expect(gateway.log.contains("big-sender"))
        }
    }

    @Test("text a client chose is printed escaped by `clients`: a right-to-left override cannot reorder the table")
    func clientsPrintedEscaped() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway(["--journal", "off"])
            try await RawStream.with(port: cluster.port, secret: cluster.secret) { stream in
                await rogue(stream, instance: "evil\u{202E}gnp.exe", environment: "production", vpsID: "")
                try await cluster.waitForClients(["evil\u{202E}gnp.exe"])
                let table = try await cluster.run(["clients", "--admin-socket", cluster.adminSocket])
                #expect(table.status == 0)
                #expect(table.output.contains("evil\\u{202e}gnp.exe"), "\(table.output)")
                #expect(!table.output.contains("\u{202E}"))
            }
        }
    }
}
