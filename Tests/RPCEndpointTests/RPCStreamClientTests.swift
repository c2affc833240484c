#if canImport(Glibc)
import Glibc
#endif
import AsyncPrimitives
import Foundation
import Logging
import NIOCore
@testable import RPCEndpoint
import SwiftProtobuf
import Synchronization
import Testing

/// ``RPCStreamClient`` against this module's own server over HTTP/2 on loopback.
@Suite("The stream client", .timeLimit(.minutes(5)))
struct RPCStreamClientTests {
    static let bidi = RPCMethod(service: "test.v1.Stream", name: "Bidi", kind: .bidirectionalStreaming)
    static let guarded = RPCMethod(service: "test.v1.Stream", name: "Guarded", kind: .bidirectionalStreaming)
    static let stalled = RPCMethod(service: "test.v1.Stream", name: "Stalled", kind: .bidirectionalStreaming)

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
        // Reads nothing, ever: the client's sends fill the stream's window.
        router.bidirectionalStreaming(stalled) { (_: RPCRequestStream<Google_Protobuf_BytesValue>, _, _: RPCResponseWriter<Google_Protobuf_StringValue>) in
            try await Task.sleep(for: .seconds(60))
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

    @Test("a send queue written from the event loop: requests queued while reading go out in order, and END_STREAM follows the finished queue")
    func queueSentFromTheLoop() async throws {
        try await Self.withServer { port in
            let queue = MessageQueue<UInt32>(capacity: 16)
            let received = Mutex(0)
            try await RPCStreamClient.withStream(
                to: .init(host: "127.0.0.1", port: port), method: Self.bidi, metadata: [], settings: .init(keepaliveInterval: nil),
                onMessage: { _ in
                    // On the connection's loop: each answer asks for the next, 200 in all.
                    let count = received.withLock { $0 += 1; return $0 }
                    if count < 200 { #expect(queue.enqueue(1)) } else { queue.finish() }
                }
            ) { stream in
                queue.enqueue(1)
                stream.send(from: queue) { try Self.request($0) }
                try await stream.ended()
            }
            #expect(received.withLock { $0 } == 200)
        }
    }

    @Test("a server that stops reading holds the send queue back: its window fills, then the queue, which refuses what does not fit")
    func stalledServerFillsTheQueue() async throws {
        try await Self.withServer { port in
            let queue = MessageQueue<Google_Protobuf_BytesValue>(capacity: 4)
            try await RPCStreamClient.withStream(
                to: .init(host: "127.0.0.1", port: port), method: Self.stalled, metadata: [], settings: .init(keepaliveInterval: nil),
                onMessage: { _ in }
            ) { stream in
                stream.send(from: queue) { try $0.serializedBytes() }
                let message = Google_Protobuf_BytesValue(Data(repeating: 7, count: 256 << 10))
                var accepted = 0
                // 100 × 256 KiB is far past the server's 1 MiB window and the queue's 4.
                for _ in 0..<100 {
                    guard queue.enqueue(message) else { break }
                    accepted += 1
                    try await Task.sleep(for: .milliseconds(5))
                }
                #expect(accepted < 100, "the queue never refused")
                #expect(accepted >= 4)
                queue.finish()
            }
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
