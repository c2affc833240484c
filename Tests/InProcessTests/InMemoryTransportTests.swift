import GRPCCore
import GatewayProtocol
import GatewayServer
import Logging
import RPCEndpoint
import RPCInMemory
import SwiftProtobuf
import Synchronization
import Testing

/// The in-memory pair on its own: an ``RPCServer`` on an ``InMemoryListener`` and grpc-swift's
/// generated clients on ``InMemoryClientTransport``, through the server's whole gRPC path.
/// A count shared with handlers and response closures.
final class Counter: Sendable {
    let count = Mutex(0)
}

@Suite("In-memory transport", .timeLimit(.minutes(5)))
struct InMemoryTransportTests {
    static let check = RPCMethod(service: "grpc.health.v1.Health", name: "Check", kind: .unary)
    static let watch = RPCMethod(service: "grpc.health.v1.Health", name: "Watch", kind: .serverStreaming)

    /// A Health service whose Check needs `x-api-secret: right` (refused before the handler
    /// otherwise), answers with the `service` it was asked about in its status text, and whose
    /// Watch sends SERVING and then waits until the stream is cut.
    static func router(watchers: Counter) -> RPCEndpoint.RPCRouter {
        var router = RPCEndpoint.RPCRouter()
        router.unary(check, admission: { context throws(RPCStatus) in
            guard context.header("x-api-secret") == "right" else { throw RPCStatus(.unauthenticated, "wrong secret") }
        }) { (request: HealthCheckRequest, context) in
            guard request.service.isEmpty || request.service == "known" else {
                throw RPCStatus(.notFound, "no service '\(request.service)' ü")
            }
            return HealthCheckResponse.with { $0.status = .serving }
        }
        router.serverStreaming(watch) { (request: HealthCheckRequest, context, responses: RPCResponseWriter<HealthCheckResponse>) in
            try await responses.write(HealthCheckResponse.with { $0.status = .serving })
            watchers.count.withLock { $0 += 1 }
            try await Task.sleep(for: .seconds(120))
        }
        return router
    }

    /// Runs a server on a new listener and a client on it until `body` ends.
    static func withServer(_ body: (RPCServer, HealthService.Client<InMemoryClientTransport>, Counter) async throws -> Void) async throws {
        let listener = InMemoryListener(name: "test")
        let watchers = Counter()
        let logger = Logger(label: "in-memory") { _ in SwiftLogNoOpLogHandler() }
        let server = RPCServer(configuration: .init(address: .inMemory(listener), name: "the test server"), router: router(watchers: watchers), logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            #expect(await server.isServing)
            #expect(await server.listeningAddress == nil)
            try await withGRPCClient(transport: InMemoryClientTransport(listener: listener)) { client in
                try await body(server, HealthService.Client(wrapping: client), watchers)
            }
            group.cancelAll()
        }
    }

    @Test("a unary call goes through admission, the handler and the trailers; an error keeps its code and its percent-encoded text")
    func unaryCallsAndErrors() async throws {
        try await Self.withServer { _, health, _ in
            let answer = try await health.check(.with { $0.service = "known" }, metadata: ["x-api-secret": "right"])
            #expect(answer.status == .serving)
            await #expect(throws: RPCError.self) { _ = try await health.check(.init(), metadata: ["x-api-secret": "wrong"]) }
            do {
                _ = try await health.check(.init(), metadata: [:])
                Issue.record("a call without the secret was answered")
            } catch let error as RPCError {
                #expect(error.code == .unauthenticated)
                #expect(error.message == "wrong secret")
            }
            do {
                _ = try await health.check(.with { $0.service = "other" }, metadata: ["x-api-secret": "right"])
                Issue.record("an unknown service was answered")
            } catch let error as RPCError {
                #expect(error.code == .notFound)
                #expect(error.message == "no service 'other' ü")
            }
        }
    }

    @Test("a graceful shutdown lets an open stream go on and refuses new ones with unavailable; closing the connections cuts the open stream")
    func shutdownAndCut() async throws {
        try await Self.withServer { server, health, watchers in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await health.watch(.init()) { response in
                            for try await _ in response.messages {}
                        }
                        Issue.record("the watch ended without an error")
                    } catch let error as RPCError {
                        #expect(error.code == .unavailable, "\(error)")
                    }
                }
                #expect(await eventually { watchers.count.withLock { $0 } == 1 })
                server.beginGracefulShutdown()
                do {
                    _ = try await health.check(.init(), metadata: ["x-api-secret": "right"])
                    Issue.record("a new call was served after the graceful shutdown began")
                } catch let error as RPCError {
                    #expect(error.code == .unavailable, "\(error)")
                }
                #expect(server.closeConnections() == 1)
                try await group.waitForAll()
            }
        }
    }
}

@Suite("Stream contract, in memory", .timeLimit(.minutes(5)))
struct InMemoryStreamContractTests {
    @Test("a RegisterGateway stream with a wrong secret is refused with unauthenticated, and the registered worker keeps answering")
    func wrongSecretIsRefused() async throws {
        try await InProcessCluster.with(workers: [.init(environment: "production") { _ in .owner("vps-1") }]) { cluster in
            let refusal = try await Self.register(on: cluster.listener, secret: cluster.secret + "-not")
            #expect(refusal?.code == .unauthenticated, "\(String(describing: refusal))")
            let outcome = await cluster.lookup(FanOutTests.mac)
            guard case .answered(let owner) = outcome else {
                Issue.record("the registered worker stopped answering: \(outcome)")
                return
            }
            #expect(owner.vpsID == "vps-1")
        }
    }

    @Test("a client that registers and then falls silent is evicted: its stream ends unavailable and it leaves the client list")
    func silentClientIsEvicted() async throws {
        try await InProcessCluster.with(workers: [], configure: {
            // Heartbeats (and so eviction) start once the registration window has passed.
            $0.registrationTimeout = .milliseconds(200)
            $0.heartbeatInterval = .milliseconds(100)
            $0.missedHeartbeatsBeforeEviction = 2
        }) { cluster in
            let gateway = cluster.gateway
            let (sawRegistered, ending) = try await withGRPCClient(transport: InMemoryClientTransport(listener: cluster.listener)) { client in
                let service = VPSGatewayService.Client(wrapping: client)
                // The producer sends `register`, then nothing, until the response side ended.
                let (responsesDone, finishResponses) = AsyncStream<Void>.makeStream()
                let registered = Counter()
                do {
                    try await service.registerGateway(
                        metadata: [GatewayMetadataKey.apiSecret: .string(cluster.secret)],
                        requestProducer: { writer in
                            try await writer.write(.register(.with {
                                $0.environment = "silent"
                                $0.gatewayIpDhcp = "silent-1"
                                $0.methods = ["FindVPSByLease"]
                            }))
                            for await _ in responsesDone {}
                        },
                        onResponse: { response in
                            defer { finishResponses.finish() }
                            for try await message in response.messages where message.messageType == .registered {
                                // `registered` is queued as the gateway accepts the stream as a client.
                                registered.count.withLock { $0 += 1 }
                            }
                        }
                    )
                    return (registered.count.withLock { $0 } == 1, nil as RPCError?)
                } catch let error as RPCError {
                    return (registered.count.withLock { $0 } == 1, error)
                }
            }
            #expect(sawRegistered, "the gateway never answered register")
            #expect(ending?.code == .unavailable && ending?.message.hasPrefix("evicted") == true, "\(String(describing: ending))")
            #expect(await eventually { gateway.statusLine.hasPrefix("0 client(s)") }, "\(gateway.statusLine)")
        }
    }

    /// Opens a RegisterGateway stream, sends `register`, and returns the error it ended with.
    static func register(on listener: InMemoryListener, secret: String) async throws -> RPCError? {
        try await withGRPCClient(transport: InMemoryClientTransport(listener: listener)) { client in
            let service = VPSGatewayService.Client(wrapping: client)
            do {
                try await service.registerGateway(
                    metadata: [GatewayMetadataKey.apiSecret: .string(secret)],
                    requestProducer: { writer in try await writer.write(.register(.with { $0.environment = "rogue" })) },
                    onResponse: { response in for try await _ in response.messages {} }
                )
                return nil
            } catch let error as RPCError {
                return error
            }
        }
    }
}
