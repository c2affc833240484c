// Package: an in-memory stream carries HTTP/2 frame payloads.
package import NIOHTTP2
import Synchronization

/// Where an ``RPCServer`` takes streams in memory instead of from a socket: each stream is the
/// frames NIOHTTP2 would hand one stream's channel (HEADERS, DATA, trailers), passed as values,
/// so the server's protocol choice, admission, framing and handlers run exactly as they do for
/// a socket, without a connection around them. For tests that run a server and its clients in
/// one process (`RPCInMemory`'s client transport dials it).
///
/// There is no HTTP/2 underneath: no flow control (a stream's frames queue without bound), no
/// HPACK, no connection limits or keepalive. What those prove stays with the socket tests.
/// One server serves a listener, for one run.
public final class InMemoryListener: Sendable, CustomStringConvertible {
    public let name: String
    private let incoming: AsyncStream<InMemoryStream>
    private let accept: AsyncStream<InMemoryStream>.Continuation
    private let state = Mutex(State())

    private struct State {
        var accepting = true
        var nextID = 0
        var open: [Int: InMemoryStream] = [:]
    }

    public init(name: String = "in-memory") {
        self.name = name
        (incoming, accept) = AsyncStream.makeStream()
    }

    public var description: String { "in-memory:\(name)" }

    /// Opens a stream to the server; its frames reach the server once it runs. Throws after
    /// the server began a graceful shutdown, as a GOAWAY refuses new streams.
    package func open() throws(RPCStatus) -> InMemoryStream {
        let stream = try state.withLock { state throws(RPCStatus) -> InMemoryStream in
            guard state.accepting else { throw RPCStatus(.unavailable, "\(description) is shutting down and takes no new streams") }
            let stream = InMemoryStream(id: state.nextID, listener: self)
            state.nextID += 1
            state.open[stream.id] = stream
            return stream
        }
        accept.yield(stream)
        return stream
    }

    /// The streams the server serves, until it stops accepting.
    var streams: AsyncStream<InMemoryStream> { incoming }

    /// New streams are refused; open ones go on.
    func stopAccepting() {
        state.withLock { $0.accepting = false }
        accept.finish()
    }

    /// Ends every open stream as a closed connection would; returns how many were open.
    @discardableResult
    func closeAll() -> Int {
        let open = state.withLock { state in
            defer { state.open = [:] }
            return Array(state.open.values)
        }
        for stream in open { stream.cut() }
        return open.count
    }

    fileprivate func closed(_ stream: InMemoryStream) {
        _ = state.withLock { $0.open.removeValue(forKey: stream.id) }
    }
}

extension InMemoryListener: Equatable {
    /// The same listener, not one with the same name.
    public static func == (lhs: InMemoryListener, rhs: InMemoryListener) -> Bool { lhs === rhs }
}

/// One stream of an ``InMemoryListener``: the client's frames one way, the server's the other.
package final class InMemoryStream: Sendable {
    /// Why a stream was cut: the server's side closed it (``InMemoryListener`` after a
    /// shutdown's grace), or the client reset it.
    package struct Reset: Error, Sendable, CustomStringConvertible {
        package var description: String
    }

    let id: Int
    private let listener: InMemoryListener
    /// Client to server.
    let requests: AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>
    private let requestInput: AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>.Continuation
    /// Server to client.
    package let responses: AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>
    private let responseInput: AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>.Continuation

    fileprivate init(id: Int, listener: InMemoryListener) {
        self.id = id
        self.listener = listener
        (requests, requestInput) = AsyncThrowingStream.makeStream()
        (responses, responseInput) = AsyncThrowingStream.makeStream()
    }

    /// The client sends a frame (END_STREAM on DATA or trailers ends its half).
    package func send(_ frame: HTTP2Frame.FramePayload) {
        requestInput.yield(frame)
    }

    /// The client gives up on the stream (RST_STREAM CANCEL): the server's reads fail.
    package func reset() {
        requestInput.finish(throwing: Reset(description: "the client reset the stream"))
        listener.closed(self)
    }

    /// The server answers with frames.
    func respond(_ frames: [HTTP2Frame.FramePayload]) throws {
        for frame in frames {
            if case .terminated = responseInput.yield(frame) { throw Reset(description: "the stream is closed") }
        }
    }

    /// The server's handling ended: the client reads what was sent, then the end.
    func serverFinished() {
        responseInput.finish()
        requestInput.finish()
        listener.closed(self)
    }

    /// Both halves end at once, as when the connection is closed under them.
    fileprivate func cut() {
        let reset = Reset(description: "the server closed the stream")
        requestInput.finish(throwing: reset)
        responseInput.finish(throwing: reset)
    }
}
