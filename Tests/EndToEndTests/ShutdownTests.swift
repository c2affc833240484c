import Foundation
import GatewayAdminClient
import GatewayJournal
import GatewayProtocol
import GRPCCore
import LeaseInventory
import Logging
import SwiftProtobuf
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// How the gateway stops: within a bound whatever its peers do, handing unfinished work back
/// to the journal, and owning only its own files. Real processes, real sockets.
@Suite("Shutdown and ownership", .serialized, .timeLimit(.minutes(4)))
struct ShutdownTests {
    let vps = SampleInventory.Entry("vps-s", mac: "52:54:00:ee:00:01", ip: "10.5.0.1")

    /// `--shutdown-grace 1s`: the gateway must be gone within grace + close timeout (1 s) +
    /// the 2 s margin; 10 s leaves room for a loaded machine without hiding a hang.
    static let bound: Duration = .seconds(10)

    func lookupRequest(id: String, timeoutMs: UInt32) -> AdminCallRequest {
        .with {
            $0.method = RequestMethods.findVPSByLease.name
            $0.payload = try! FindVPSByLeaseRequest.with { $0.mac = vps.mac }.serializedBytes()
            $0.timeoutMs = timeoutMs
            $0.requestID = id
        }
    }

    /// A TCP connection to the gateway's port that never sends a byte.
    func silentConnection(to port: Int) throws -> Int32 {
        try RawSocket.connectLoopback(port: port)
    }

    @Test("SIGTERM with a silent TCP peer and a SIGSTOPped worker connected: the gateway still exits 0 within its bound and says what it cut")
    func uncooperativePeers() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--shutdown-grace", "1s"])
            let worker = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            let silent = try silentConnection(to: cluster.port)
            defer { close(silent) }
            kill(worker.pid, SIGSTOP)
            defer { kill(worker.pid, SIGCONT) }
            let started = ContinuousClock.now
            gateway.signal(SIGTERM)
            let status = await gateway.waitForExit(timeout: Self.bound)
            #expect(status == 0, "exit within \(Self.bound): \(status.map { "\($0)" } ?? "still running")")
            #expect(ContinuousClock.now - started < Self.bound)
            let last = gateway.log.split(separator: "\n").last { $0.contains("gateway stopped") }
            #expect(last?.contains("streams_closed=1") == true, "\(last ?? "no 'gateway stopped' line")")
            #expect(!FileManager.default.fileExists(atPath: cluster.adminSocket), "its own admin socket is removed")
        }
    }

    @Test("a second SIGTERM during the grace period stops the gateway at once")
    func secondSignalStopsAtOnce() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--shutdown-grace", "60s"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--simulate-latency", "60s"])
            try await cluster.waitForClients(["production-1"])
            async let call = try? cluster.call(lookupRequest(id: "held", timeoutMs: 120_000))
            try await cluster.waitForRequestInFlight(at: "production-1")
            gateway.signal(SIGTERM)
            #expect(await poll(timeout: .seconds(10)) { gateway.log.contains("gateway draining") })
            let started = ContinuousClock.now
            gateway.signal(SIGTERM)
            #expect(await gateway.waitForExit(timeout: Self.bound) == 0)
            #expect(ContinuousClock.now - started < Self.bound, "not the 60 s grace")
            #expect(gateway.log.contains("second signal: stopping at once"))
            _ = await call
        }
    }

    @Test("a call waiting for a receiver at SIGTERM stays pending in the journal (not no_receivers) and completes after the restart")
    func waitingCallHandedBack() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--shutdown-grace", "1s"])
            async let refused = outcome { try await cluster.call(lookupRequest(id: "waiting", timeoutMs: 60_000)) }
            let journal = try RequestJournal.openExisting(at: cluster.journal, writable: false, logger: Logger(label: "test"))
            #expect(await poll(timeout: .seconds(10)) { (try? journal.record("waiting")) != nil })
            gateway.signal(SIGTERM)
            #expect(await gateway.waitForExit(timeout: Self.bound) == 0)
            switch await refused {
            case .success(let response):
                Issue.record("the call should fail with unavailable, got \(response.outcome) \(response.error)")
            case .failure(let error):
                #expect("\(error)".contains("stays pending in the journal"), "\(error)")
            }
            let row = try #require(try journal.record("waiting"))
            #expect(row.state == .pending, "\(row.state) \(row.outcome?.rawValue ?? "-") \(row.error ?? "")")
            #expect(row.outcome == nil)
            #expect(row.attempts == 0, "an attempt that reached nobody does not count")

            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            #expect(await poll(timeout: .seconds(20)) { (try? journal.record("waiting"))??.state == .completed })
            #expect(try journal.record("waiting")?.outcome == .ok)
        }
    }

    @Test("a register sent after the drain began is refused with unavailable, and the gateway still stops")
    func lateRegisterRefused() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--shutdown-grace", "3s", "--log-level", "debug"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--simulate-latency", "30s"])
            try await cluster.waitForClients(["production-1"])
            async let held = try? cluster.call(lookupRequest(id: "holds-the-drain", timeoutMs: 60_000))
            try await cluster.waitForRequestInFlight(at: "production-1")
            let opened: @Sendable () -> Int = { gateway.log.components(separatedBy: "stream opened").count - 1 }
            let before = opened()
            let end = try await RawStream.with(port: cluster.port, secret: cluster.secret) { late in
                // The stream is open before the drain; its `register` comes after it began.
                #expect(await poll(timeout: .seconds(10)) { opened() > before })
                gateway.signal(SIGTERM)
                #expect(await poll(timeout: .seconds(10)) { gateway.log.contains("gateway draining") })
                late.send(.register(.legacy(instance: "latecomer")))
                return await late.waitForEnd(timeout: .seconds(10))
            }
            #expect(end.ended)
            #expect(end.error?.code == .unavailable)
            #expect(end.error?.message.contains("shutting down") == true, "\(String(describing: end.error))")
            #expect(gateway.log.contains("refused a registration: the gateway is shutting down"))
            #expect(!gateway.log.contains("client registered instance=latecomer"))
            #expect(await gateway.waitForExit(timeout: Self.bound) == 0)
            _ = await held
        }
    }

    @Test("a gateway still draining keeps a second gateway out (73, its pid named); after it exits the successor starts and keeps its socket")
    func successorKeepsItsSocket() async throws {
        try await Cluster.with { cluster in
            let first = try await cluster.startGateway(["--shutdown-grace", "3s"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--simulate-latency", "30s"])
            try await cluster.waitForClients(["production-1"])
            async let held = try? cluster.call(lookupRequest(id: "holds-the-drain", timeoutMs: 60_000))
            try await cluster.waitForRequestInFlight(at: "production-1")
            first.signal(SIGTERM)
            #expect(await poll(timeout: .seconds(10)) { first.log.contains("gateway draining") })
            // The first no longer accepts on its admin socket, but it has not exited.
            let early = try await cluster.startGateway(waitUntilReady: false)
            #expect(await early.waitForExit(timeout: .seconds(20)) == 73)
            #expect(early.log.contains("another gateway (pid \(first.pid))"), "\(early.log)")
            #expect(await first.waitForExit(timeout: Self.bound) == 0)
            _ = await held

            let successor = try await cluster.startGateway()
            #expect(successor.isRunning)
            // The first's exit is over; the successor's socket is there and answers.
            #expect(FileManager.default.fileExists(atPath: cluster.adminSocket))
            _ = try await cluster.clients()
        }
    }

    @Test("a worker whose gateway is SIGSTOPped still exits 0 within its bound on SIGTERM")
    func workerWithStoppedGateway() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let worker = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--shutdown-grace", "1s"])
            try await cluster.waitForClients(["production-1"])
            kill(gateway.pid, SIGSTOP)
            defer { kill(gateway.pid, SIGCONT) }
            let started = ContinuousClock.now
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit(timeout: Self.bound) == 0, "\(worker.log.suffix(1500))")
            #expect(ContinuousClock.now - started < Self.bound)
            #expect(worker.log.contains("worker stopped requests_abandoned=0"))
        }
    }

    @Test("SIGTERM while in-flight calls outlast the grace: they are interrupted, stay unfinished in the journal and complete after the restart")
    func inFlightCallsOutlastGrace() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--shutdown-grace", "1s"])
            let inventory = try cluster.inventory("production", [vps])
            let slow = try cluster.startWorker(environment: "production", inventory: inventory, ["--simulate-latency", "30s"])
            try await cluster.waitForClients(["production-1"])
            async let interrupted = outcome { try await cluster.call(lookupRequest(id: "slow", timeoutMs: 60_000)) }
            try await cluster.waitForRequestInFlight(at: "production-1")
            gateway.signal(SIGTERM)
            #expect(await gateway.waitForExit(timeout: Self.bound) == 0)
            if case .success(let response) = await interrupted {
                Issue.record("the call should fail with unavailable, got \(response.outcome)")
            }
            #expect(gateway.log.split(separator: "\n").last { $0.contains("gateway stopped") }?.contains("calls_interrupted=1") == true)
            let journal = try RequestJournal.openExisting(at: cluster.journal, writable: false, logger: Logger(label: "test"))
            let row = try #require(try journal.record("slow"))
            #expect(!row.state.isTerminal, "left for the next start: \(row.state)")
            slow.signal(SIGKILL)
            await slow.waitForExit()
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", instance: "production-2", inventory: inventory)
            #expect(await poll(timeout: .seconds(20)) { (try? journal.record("slow"))??.state == .completed })
        }
    }
}

/// The result of `body`, success or failure, for an `async let` whose error is the point.
func outcome<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}
