#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
@testable import RPCEndpoint
import SwiftProtobuf
import Synchronization
import Testing

/// ``RPCStreamClient`` against this module's own server over HTTP/2 on loopback.
@Suite("The stream client", .timeLimit(.minutes(1)))
struct RPCStreamClientTests {
    static let bidi = RPCMethod(service: "test.v1.Stream", name: "Bidi", kind: .bidirectionalStreaming)
    static let guarded = RPCMethod(service: "test.v1.Stream", name: "Guarded", kind: .bidirectionalStreaming)

    /// Runs a server on a loopback port for `body`; the server is cancelled after it.
    static func withServer<R: Sendable>(_ body: (Int) async throws -> R) async throws -> R {
        var router = RPCRouter()
        // Echoes a count: the client says how many 1 KiB messages it wants, then ends its side.
        router.bidirectionalStreaming(bidi) { (requests: RPCRequestStream<Google_Protobuf_UInt32Value>, _, responses: RPCResponseWriter<Google_Protobuf_StringValue>) in
            for try await request in requests {
                let message = Google_Protobuf_StringValue(String(repeating: "x", count: 1024))
                for _ in 0..<request.value { try await responses.write(message) }
            }
        }
        router.bidirectionalStreaming(guarded, admission: { (context) throws(RPCStatus) in
            guard context.header("x-secret") == "right" else { throw RPCStatus(.unauthenticated, "wrong secret, 100% sure") }
        }) { (_: RPCRequestStream<Google_Protobuf_UInt32Value>, _, _: RPCResponseWriter<Google_Protobuf_StringValue>) in
            throw RPCStatus(.failedPrecondition, "nothing to serve")
        }
        let server = RPCServer(configuration: .init(address: .tcp(host: "127.0.0.1", port: 0), name: "the test server"), router: router, logger: Logger(label: "test"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            let port = try #require(await server.listeningAddress?.port)
            return try await body(port)
        }
    }

    static func request(_ count: UInt32) throws -> [UInt8] {
        try Google_Protobuf_UInt32Value(count).serializedBytes()
    }

    @Test("2 MiB from the server, twice the stream's window, arrive in full: the client gives the window back as it reads")
    func messagesBeyondTheWindowKeepFlowing() async throws {
        try await Self.withServer { port in
            let received = Mutex(0)
            let settings = RPCStreamClient.Settings(keepaliveInterval: nil, windowSize: 1 << 20)
            try await RPCStreamClient.withStream(
                to: .init(host: "127.0.0.1", port: port), method: Self.bidi, metadata: [], settings: settings,
                onMessage: { bytes in
                    let message = try Google_Protobuf_StringValue(serializedBytes: Array(bytes.readableBytesView))
                    #expect(message.value.count == 1024)
                    received.withLock { $0 += 1 }
                }
            ) { stream in
                try await stream.send([try Self.request(1024), try Self.request(1024)])
                stream.finishSending()
                try await stream.ended()
            }
            #expect(received.withLock { $0 } == 2048)
        }
    }

    @Test("the server's refusal and its error status end the stream with that status, the message percent-decoded")
    func statusesEndTheStream() async throws {
        try await Self.withServer { port in
            for (secret, expected) in [("wrong", RPCStatus(.unauthenticated, "wrong secret, 100% sure")), ("right", RPCStatus(.failedPrecondition, "nothing to serve"))] {
                await #expect(throws: expected) {
                    try await RPCStreamClient.withStream(
                        to: .init(host: "127.0.0.1", port: port), method: Self.guarded, metadata: [("x-secret", secret)], settings: .init(),
                        onMessage: { _ in }
                    ) { stream in
                        try await stream.send([try Self.request(1)])
                        try await stream.ended()
                    }
                }
            }
        }
    }

    @Test("a message the handler cannot take ends the stream with the handler's status and closes the connection")
    func onMessageErrorEndsTheStream() async throws {
        _ = try await Self.withServer { port in
            await #expect(throws: RPCStatus(.internal, "not for me")) {
                try await RPCStreamClient.withStream(
                    to: .init(host: "127.0.0.1", port: port), method: Self.bidi, metadata: [], settings: .init(),
                    onMessage: { _ in throw RPCStatus(.internal, "not for me") }
                ) { stream in
                    try await stream.send([try Self.request(3)])
                    try await stream.ended()
                }
            }
        }
    }

    @Test("a port nobody listens on is unavailable, naming the address")
    func refusedConnection() async throws {
        // Bound but not listening: connecting is refused, and no parallel test can take the
        // port meanwhile (a closed server's port could be reused by one).
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound, "bind: errno \(errno)")
        let port = Int(UInt16(bigEndian: address.sin_port))
        do {
            try await RPCStreamClient.withStream(to: .init(host: "127.0.0.1", port: port), method: Self.bidi, metadata: [], settings: .init(), onMessage: { _ in }) { _ in }
            Issue.record("expected the connection to fail")
        } catch let status as RPCStatus {
            #expect(status.code == .unavailable)
            #expect(status.message.contains("127.0.0.1:\(port)"))
        }
    }
}
