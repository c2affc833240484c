import Foundation
import GatewayJournal
import GatewayProtocol
import GatewayServer
import GatewayWorker
import Logging
import RPCEndpoint
import RPCInMemory
import SwiftProtobuf
import Synchronization
import Testing

/// A FindVPSByLease handler whose answer the test writes, and that records what happened to
/// each request it got (answered, or cancelled by the gateway's `cancel` or the deadline).
struct ScriptedLookup: MethodHandler {
    let answer: @Sendable (FindVPSByLeaseRequest) async throws -> FindVPSByLeaseResponse
    let log: HandlerLog

    func handle(_ request: FindVPSByLeaseRequest, context: HandlerContext) async throws -> FindVPSByLeaseResponse {
        log.record(.started)
        do {
            let response = try await answer(request)
            log.record(.answered)
            return response
        } catch is CancellationError {
            log.record(.cancelled)
            throw CancellationError()
        }
    }
}

/// What one worker's handler saw, in order.
final class HandlerLog: Sendable {
    enum Event: Sendable, Equatable { case started, answered, cancelled }
    private let events = Mutex<[Event]>([])

    func record(_ event: Event) { events.withLock { $0.append(event) } }
    var all: [Event] { events.withLock { $0 } }
}

/// A gateway (with a journal, or without) and workers in this process, linked in memory (the
/// default) or over real HTTP/2 on loopback: the stream contract without spawning binaries.
/// Everything is cancelled and its directory removed when `body` ends, failed or not.
struct InProcessCluster {
    /// How the workers reach the gateway's stream service.
    enum Link: String, Sendable, CaseIterable, CustomTestStringConvertible {
        /// An in-memory listener and grpc-swift clients on ``InMemoryClientTransport``.
        case inMemory = "in memory"
        /// The stream port on 127.0.0.1 and the workers' usual HTTP/2 transport.
        case loopback

        var testDescription: String { rawValue }
    }

    struct WorkerSpec {
        var environment: String
        var answer: @Sendable (FindVPSByLeaseRequest) async throws -> FindVPSByLeaseResponse
    }

    let gateway: Gateway
    /// Each worker's handler log, by environment.
    let logs: [String: HandlerLog]
    /// Where the gateway takes in-memory streams (with ``Link/inMemory``).
    let listener: InMemoryListener
    let secret: String

    static func with(
        workers: [WorkerSpec], journal useJournal: Bool = true, link: Link = .inMemory, configure: (inout Gateway.Configuration) -> Void = { _ in },
        _ body: (InProcessCluster) async throws -> Void
    ) async throws {
        let root = ProcessInfo.processInfo.environment["VPSGW_TEST_ROOT"] ?? NSTemporaryDirectory()
        var template = Array((root + "/in-process-XXXXXX").utf8CString)
        let directory = try #require(mkdtemp(&template).map { String(cString: $0) })
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let logger = Logger(label: "in-process") { _ in SwiftLogNoOpLogHandler() }
        let secret = "in-process-\(UInt64.random(in: 0...UInt64.max))"
        var configuration = Gateway.Configuration(apiSecret: secret)
        configuration.listenHost = "127.0.0.1"
        configuration.listenPort = 0
        configuration.adminSocketPath = directory + "/admin.sock"
        configure(&configuration)
        let journal = useJournal ? try await RequestJournal.open(
            at: directory + "/journal.sqlite3", migrations: try MigrationSet.load(from: Self.migrations), durability: .normal, logger: logger
        ) : nil
        let listener = InMemoryListener(name: "in-process-gateway")
        let gateway = Gateway(configuration: configuration, journal: journal, streamListener: link == .inMemory ? listener : nil, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await gateway.run() }
            await gateway.waitUntilServing()
            let endpoint: GatewayEndpoint
            let transport: Worker.Transport
            switch link {
            case .inMemory:
                #expect(gateway.streamPort == nil, "an in-memory gateway bound a port")
                endpoint = GatewayEndpoint(node: "in-process", host: "in-memory", port: 1)
                transport = .custom { _ in InMemoryClientTransport(listener: listener) }
            case .loopback:
                endpoint = GatewayEndpoint(node: "in-process", host: "127.0.0.1", port: try #require(gateway.streamPort))
                transport = .network
            }
            var logs: [String: HandlerLog] = [:]
            var started: [Worker] = []
            for spec in workers {
                let log = HandlerLog()
                logs[spec.environment] = log
                var handlers = HandlerRegistry()
                handlers.register(RequestMethods.findVPSByLease, ScriptedLookup(answer: spec.answer, log: log))
                let worker = Worker(
                    configuration: .init(
                        endpoints: [endpoint], apiSecret: secret, instanceID: "\(spec.environment)-1", environment: spec.environment
                    ),
                    handlers: handlers, transport: transport, logger: logger
                )
                started.append(worker)
                group.addTask { try await worker.run() }
            }
            for worker in started { await worker.waitUntilRegistered() }
            do {
                try await body(InProcessCluster(gateway: gateway, logs: logs, listener: listener, secret: secret))
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    }

    static let migrations = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("migrations").path

    func lookup(_ mac: String, timeout: Duration = .seconds(10)) async -> MethodCallOutcome<FindVPSByLeaseResponse> {
        await gateway.call(RequestMethods.findVPSByLease, .with { $0.mac = mac }, timeout: timeout)
    }
}

extension FindVPSByLeaseResponse {
    static func owner(_ vpsID: String) -> Self { .with { $0.vpsID = vpsID; $0.organizationID = "org-1" } }
}

/// Waits (without a fixed delay) until `condition` holds, for at most `timeout`.
func eventually(timeout: Duration = .seconds(20), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}
