#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOCore
import NIOPosix
@testable import RPCEndpoint
import SwiftProtobuf
import Synchronization
import Testing

/// ``RPCUnaryClient`` against this module's own server over HTTP/2 on a Unix socket.
@Suite("The unary client", .timeLimit(.minutes(5)))
struct RPCUnaryClientTests {
    /// Answers `n` with `n` times "x"; 0 waits (for the deadline and cancellation tests);
    /// 1 fails with a status.
    static let repeatX = RPCMethod(service: "test.v1.Unary", name: "RepeatX", kind: .unary)
    /// RepeatX behind an admission check that lets everything in: served on a stream channel
    /// of its own (a unary call with an admission check does not take the sorter's path).
    static let admittedRepeatX = RPCMethod(service: "test.v1.Unary", name: "AdmittedRepeatX", kind: .unary)
    /// Says where its handler ran: "loop" on an event loop's thread, "pool" elsewhere; after
    /// a suspension too.
    static let whereHandled = RPCMethod(service: "test.v1.Unary", name: "WhereHandled", kind: .unary)

    /// Calls the handler has started, so a test can wait for one to be under way.
    final class Started: Sendable {
        let count = Atomic<Int>(0)
    }

    static func router(_ started: Started) -> RPCRouter {
        var router = RPCRouter()
        router.unary(repeatX) { (request: Google_Protobuf_UInt32Value, _) -> Google_Protobuf_StringValue in
            started.count.add(1, ordering: .relaxed)
            switch request.value {
            case 0:
                try await Task.sleep(for: .seconds(60))
                return Google_Protobuf_StringValue("too late")
            case 1:
                throw RPCStatus(.failedPrecondition, "one is 100% refused")
            default:
                return Google_Protobuf_StringValue(String(repeating: "x", count: Int(request.value)))
            }
        }
        router.unary(whereHandled) { (_: Google_Protobuf_Empty, _) -> Google_Protobuf_StringValue in
            let before = MultiThreadedEventLoopGroup.currentEventLoop != nil
            try await Task.sleep(for: .milliseconds(1))
            let after = MultiThreadedEventLoopGroup.currentEventLoop != nil
            return Google_Protobuf_StringValue([before, after].map { $0 ? "loop" : "pool" }.joined(separator: ","))
        }
        router.unary(admittedRepeatX, admission: { (_) throws(RPCStatus) in }) { (request: Google_Protobuf_UInt32Value, _) -> Google_Protobuf_StringValue in
            Google_Protobuf_StringValue(String(repeating: "x", count: Int(request.value)))
        }
        return router
    }

    /// A fresh directory for a socket; removed after `body`.
    static func withSocketPath<R>(_ body: (String) async throws -> R) async throws -> R {
        var template = Array("\(ProcessInfo.processInfo.environment["VPSGW_TEST_ROOT"] ?? "/tmp")/vpsgw-unary-XXXXXX".utf8CString)
        let directory = try template.withUnsafeMutableBufferPointer { buffer -> String in
            guard let made = mkdtemp(buffer.baseAddress!) else { throw RPCStatus(.internal, "mkdtemp: errno \(errno)") }
            return String(cString: made)
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try await body(directory + "/rpc.sock")
    }

    /// Runs a server on `path` for `body`; the server is cancelled after it.
    static func withServer<R: Sendable>(at path: String, maxConcurrentStreams: Int = 256, started: Started = Started(), _ body: () async throws -> R) async throws -> R {
        unlink(path)
        var configuration = RPCServer.Configuration(address: .unix(path: path), name: "the test server")
        configuration.maxConcurrentStreams = maxConcurrentStreams
        let server = RPCServer(configuration: configuration, router: router(started), logger: Logger(label: "test"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            _ = try #require(await server.listeningAddress)
            return try await body()
        }
    }

    static func repeatX(_ client: RPCUnaryClient, _ count: UInt32, timeout: Duration = .seconds(120)) async throws -> String {
        try await client.call(repeatX, Google_Protobuf_UInt32Value(count), as: Google_Protobuf_StringValue.self, timeout: timeout).value
    }

    @Test("200 calls at once on one connection, past the server's limit of 16 streams, each get their own answer")
    func concurrentCallsGetTheirOwnAnswers() async throws {
        try await Self.withSocketPath { path in
            try await Self.withServer(at: path, maxConcurrentStreams: 16) {
                try await RPCUnaryClient.withClient(to: .unixSocket(path: path)) { client in
                    try await withThrowingTaskGroup(of: (UInt32, String).self) { group in
                        for count in UInt32(2)..<202 {
                            group.addTask { (count, try await Self.repeatX(client, count)) }
                        }
                        var answered = 0
                        for try await (count, answer) in group {
                            #expect(answer == String(repeating: "x", count: Int(count)))
                            answered += 1
                        }
                        #expect(answered == 200)
                    }
                }
            }
        }
    }

    @Test("an answer of 3 MiB, three times the window, arrives whole: the client gives the window back as it reads")
    func answerBeyondTheWindow() async throws {
        try await Self.withSocketPath { path in
            try await Self.withServer(at: path) {
                try await RPCUnaryClient.withClient(to: .unixSocket(path: path), settings: .init(windowSize: 1 << 20)) { client in
                    for _ in 0..<2 {
                        let answer = try await Self.repeatX(client, 3 << 20)
                        #expect(answer.utf8.count == 3 << 20)
                    }
                }
            }
        }
    }

    @Test("the server's status is the call's error; a call past its timeout is deadline_exceeded, and the connection serves the next call")
    func statusesAndDeadlines() async throws {
        try await Self.withSocketPath { path in
            try await Self.withServer(at: path) {
                try await RPCUnaryClient.withClient(to: .unixSocket(path: path)) { client in
                    await #expect(throws: RPCStatus(.failedPrecondition, "one is 100% refused")) { try await Self.repeatX(client, 1) }
                    let started = ContinuousClock.now
                    do {
                        _ = try await Self.repeatX(client, 0, timeout: .milliseconds(300))
                        Issue.record("a call that waits 60 s was answered")
                    } catch let status as RPCStatus {
                        #expect(status.code == .deadlineExceeded, "\(status)")
                    }
                    // At the timeout, not at the handler's 60 s.
                    #expect(ContinuousClock.now - started < .seconds(30))
                    #expect(try await Self.repeatX(client, 3) == "xxx")
                }
            }
        }
    }

    @Test("a caller whose task is cancelled gets cancelled at once, and the connection serves the next call")
    func cancellationEndsTheCall() async throws {
        try await Self.withSocketPath { path in
            let started = Started()
            try await Self.withServer(at: path, started: started) {
                try await RPCUnaryClient.withClient(to: .unixSocket(path: path)) { client in
                    let waiting = Task { try await Self.repeatX(client, 0) }
                    // A bounded wait for the handler to have the call.
                    for _ in 0..<2000 where started.count.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
                    #expect(started.count.load(ordering: .relaxed) == 1)
                    waiting.cancel()
                    await #expect(throws: RPCStatus(.cancelled, "the call was cancelled")) { try await waiting.value }
                    #expect(try await Self.repeatX(client, 2) == "xx")
                }
            }
        }
    }

    @Test("after the server restarts on the same socket, a call dials again and is answered")
    func redialsAfterTheServerRestarts() async throws {
        try await Self.withSocketPath { path in
            let first = RPCServer(configuration: .init(address: .unix(path: path), name: "first"), router: Self.router(Started()), logger: Logger(label: "test"))
            let firstRun = Task { try await first.run() }
            _ = try #require(await first.listeningAddress)
            try await RPCUnaryClient.withClient(to: .unixSocket(path: path)) { client in
                #expect(try await Self.repeatX(client, 2) == "xx")
                firstRun.cancel()
                _ = try? await firstRun.value
                try await Self.withServer(at: path) {
                    // The first call may still find the old connection closing: bounded retries.
                    var answer: String?
                    for _ in 0..<50 where answer == nil {
                        answer = try? await Self.repeatX(client, 4)
                        if answer == nil { try await Task.sleep(for: .milliseconds(100)) }
                    }
                    #expect(answer == "xxxx")
                }
            }
        }
    }

    @Test("a server cancelled while its connection keeps opening streams drops none of them: every call ends, answered or refused, and the process lives on")
    func serverCancelledWhileStreamsOpen() async throws {
        // The race is narrow (a stream opened between the cancellation and the connection's
        // close): ten rounds caught the dropped stream (a crash) in about one run of four before the fix.
        for _ in 0..<10 {
            try await Self.withSocketPath { path in
                unlink(path)
                let server = RPCServer(configuration: .init(address: .unix(path: path), name: "the test server"), router: Self.router(Started()), logger: Logger(label: "test"))
                try await withThrowingTaskGroup(of: Void.self) { serving in
                    serving.addTask { try await server.run() }
                    _ = try #require(await server.listeningAddress)
                    // Says when the 50th call is answered, or ends when every call ended first.
                    // Waited on, not polled: a spin on `Task.yield()` took a core from the calls
                    // it waited for, and never ended once the calls had failed.
                    let (fiftyAnswered, signal) = AsyncStream<Void>.makeStream()
                    let answered = Started(), finished = Started()
                    let ended = try await RPCUnaryClient.withClient(to: .unixSocket(path: path)) { client in
                        await withTaskGroup(of: Void.self) { calls in
                            for _ in 0..<400 {
                                calls.addTask {
                                    let call = try? await client.call(Self.admittedRepeatX, Google_Protobuf_UInt32Value(3), as: Google_Protobuf_StringValue.self, timeout: .seconds(20))
                                    if call != nil, answered.count.add(1, ordering: .relaxed).newValue == 50 { signal.yield() }
                                    if finished.count.add(1, ordering: .relaxed).newValue == 400 { signal.finish() }
                                }
                            }
                            // Cancelled with calls still being opened on the connection.
                            for await _ in fiftyAnswered { break }
                            serving.cancelAll()
                            var count = 0
                            for await _ in calls { count += 1 }
                            return count
                        }
                    }
                    try? await serving.waitForAll()
                    #expect(ended == 400)
                }
            }
        }
    }

    @Test("a unary call's handler runs on its connection's event loop, and is resumed there after it waited")
    func unaryHandlersRunOnTheLoop() async throws {
        try await Self.withSocketPath { path in
            try await Self.withServer(at: path) {
                try await RPCUnaryClient.withClient(to: .unixSocket(path: path)) { client in
                    let answer = try await client.call(Self.whereHandled, Google_Protobuf_Empty(), as: Google_Protobuf_StringValue.self, timeout: .seconds(20))
                    #expect(answer.value == "loop,loop")
                }
            }
        }
    }

    @Test("a socket nobody listens on is unavailable, naming the socket")
    func missingSocket() async throws {
        try await Self.withSocketPath { path in
            do {
                try await RPCUnaryClient.withClient(to: .unixSocket(path: path)) { _ in }
                Issue.record("expected the connection to fail")
            } catch let status as RPCStatus {
                #expect(status.code == .unavailable)
                #expect(status.message.contains(path))
            }
        }
    }
}
