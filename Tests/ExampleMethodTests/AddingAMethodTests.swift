// "Adding a method" (README), compiled and run: a new request method end to end, a gateway
// and a worker in this process over real HTTP/2 on loopback, the call through the journal.
//
// The four places a method touches, each checked by the compiler against the one descriptor:
//   1. the descriptor: wire name, messages, answer rule        (`Greetings.greet` below)
//   2. the worker's handler, in the method's own types          (`Greeter`)
//   3. registration: the worker's handler, the gateway's method list
//   4. the call from the gateway                                (`gateway.call(Greetings.greet, …)`)
// A method of the product itself gets its messages from a .proto in proto/ (`make proto`);
// the well-known StringValue keeps this example free of generated code.
import Foundation
import GatewayJournal
import GatewayProtocol
import GatewayServer
import GatewayWorker
import Logging
import SwiftProtobuf
import Testing

// 1. The method.
enum Greetings {
    /// Greets whoever is named. The answer wins only when it says something.
    static let greet = RequestMethod<Google_Protobuf_StringValue, Google_Protobuf_StringValue>(name: "Greet") { answer in
        answer.value.isEmpty ? .notFound : .wins
    }
}

// 2. The handler.
struct Greeter: MethodHandler {
    func handle(_ request: Google_Protobuf_StringValue, context: HandlerContext) async throws -> Google_Protobuf_StringValue {
        guard !request.value.isEmpty else { throw HandlerError.invalidArgument("whom to greet? the name is empty") }
        return .with { $0.value = "hello \(request.value) from \(context.environment)" }
    }
}

@Suite("Adding a method", .timeLimit(.minutes(5)))
struct AddingAMethodTests {
    @Test("a method added in four places is registered by the worker, called by the gateway through its journal, and answered in its own types")
    func greet() async throws {
        try await withGatewayAndWorker { gateway in
            // 4. The call.
            guard case .answered(let answer) = await gateway.call(Greetings.greet, .with { $0.value = "operator" }, timeout: .seconds(10)) else {
                Issue.record("Greet was not answered")
                return
            }
            #expect(answer.value == "hello operator from production")

            // The handler's refusal comes back as the call's failure, not as an answer.
            guard case .unanswered(let why) = await gateway.call(Greetings.greet, .with { $0.value = "" }, timeout: .seconds(10)) else {
                Issue.record("an empty name was answered")
                return
            }
            #expect(why.contains("whom to greet?"), "\(why)")
        }
    }

    /// A gateway with a journal and one `production` worker, both in this process, the
    /// worker registered; everything stopped and removed after `body`, failed or not.
    func withGatewayAndWorker(_ body: (Gateway) async throws -> Void) async throws {
        let root = ProcessInfo.processInfo.environment["VPSGW_TEST_ROOT"] ?? NSTemporaryDirectory()
        var template = Array((root + "/example-method-XXXXXX").utf8CString)
        let directory = try #require(mkdtemp(&template).map { String(cString: $0) })
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let logger = Logger(label: "example") { _ in SwiftLogNoOpLogHandler() }
        let secret = "example-\(UInt64.random(in: 0...UInt64.max))"

        var configuration = Gateway.Configuration(apiSecret: secret)
        configuration.listenHost = "127.0.0.1"
        configuration.listenPort = 0
        configuration.adminSocketPath = directory + "/admin.sock"
        let migrations = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("migrations").path
        let journal = try await RequestJournal.open(
            at: directory + "/journal.sqlite3", migrations: try MigrationSet.load(from: migrations), durability: .normal, logger: logger
        )
        // 3. Registration: the gateway judges Greet's answers by its rule (and after a
        // restart, the journal's Greet rows too)...
        let gateway = Gateway(configuration: configuration, journal: journal, methods: RequestMethods.all + [Greetings.greet.erased], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await gateway.run() }
            await gateway.waitUntilServing()
            let port = try #require(gateway.streamPort)
            // ...and the worker answers it.
            var handlers = HandlerRegistry()
            handlers.register(Greetings.greet, Greeter())
            let worker = Worker(
                configuration: .init(
                    endpoints: [GatewayEndpoint(node: "example", host: "127.0.0.1", port: port)],
                    apiSecret: secret, instanceID: "production-1", environment: "production"
                ),
                handlers: handlers, logger: logger
            )
            group.addTask { try await worker.run() }
            await worker.waitUntilRegistered()
            do {
                try await body(gateway)
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    }
}
