import Foundation
public import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
public import RPCEndpoint
import Synchronization
import TextFormats

/// A grpc-swift client transport that dials an ``InMemoryListener``, so grpc-swift's clients
/// (the worker's stream, the CLI's calls) reach an ``RPCServer`` in the same process without a
/// socket. Each RPC is one in-memory stream carrying the frames a gRPC client sends over
/// HTTP/2 — request headers with `:path` and metadata, enveloped messages, END_STREAM — and
/// reading the server's headers, messages and `grpc-status` trailers back, so the server's
/// whole gRPC path (content type, admission, framing, trailers) runs as it does for a socket.
///
/// Written here because grpc-swift's own in-process transport pairs only with grpc-swift's
/// server, which the gateway does not use. Identity encoding only (it offers no compression).
public final class InMemoryClientTransport: ClientTransport {
    public typealias Bytes = [UInt8]

    private let listener: InMemoryListener
    private let shutdown = Mutex(Shutdown())

    private struct Shutdown {
        var begun = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    public init(listener: InMemoryListener) {
        self.listener = listener
    }

    public var retryThrottle: RetryThrottle? { nil }

    /// There is no connection to keep; returns once ``beginGracefulShutdown()`` is called
    /// (as the protocol asks) or the task is cancelled.
    public func connect() async throws {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let begun = shutdown.withLock { state in
                    if !state.begun && !Task.isCancelled { state.waiters.append(continuation) }
                    return state.begun || Task.isCancelled
                }
                if begun { continuation.resume() }
            }
        } onCancel: {
            beginGracefulShutdown()
        }
    }

    public func beginGracefulShutdown() {
        let waiters = shutdown.withLock { state in
            state.begun = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    public func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? { nil }

    public func withStream<T: Sendable>(
        descriptor: MethodDescriptor,
        options: CallOptions,
        _ closure: (RPCStream<Inbound, Outbound>, ClientContext) async throws -> T
    ) async throws -> T {
        let stream: InMemoryStream
        do {
            stream = try listener.open()
        } catch {
            throw RPCError(code: .unavailable, message: error.message)
        }
        // However the call ends, the stream ends with it; after the server finished this
        // changes nothing, before it the server sees the reset a real client sends.
        defer { stream.reset() }
        let outbound = RequestFrames(stream: stream, path: "/" + descriptor.fullyQualifiedMethod, authority: listener.name, timeout: options.timeout)
        let rpcStream = RPCStream(
            descriptor: descriptor,
            inbound: RPCAsyncSequence(wrapping: ResponseParts(frames: stream.responses)),
            outbound: RPCWriter.Closable(wrapping: outbound)
        )
        let context = ClientContext(descriptor: descriptor, remotePeer: listener.description, localPeer: "in-memory:client")
        return try await closure(rpcStream, context)
    }
}

/// A call's request parts as the frames a gRPC client sends.
private struct RequestFrames: ClosableRPCWriterProtocol {
    typealias Element = RPCRequestPart<[UInt8]>

    let stream: InMemoryStream
    let path: String
    let authority: String
    let timeout: Duration?

    func write(_ part: RPCRequestPart<[UInt8]>) async throws {
        switch part {
        case .metadata(let metadata):
            var headers: HPACKHeaders = [
                ":method": "POST", ":scheme": "http", ":path": path, ":authority": authority,
                "content-type": "application/grpc", "te": "trailers",
            ]
            if let timeout {
                // gRPC's grpc-timeout: at most eight digits and a unit.
                headers.add(name: "grpc-timeout", value: "\(min(max(timeout.wholeMicroseconds, 1), 99_999_999))u")
            }
            for (key, value) in metadata {
                switch value {
                case .string(let text): headers.add(name: key, value: text)
                case .binary(let bytes): headers.add(name: key, value: Data(bytes).base64EncodedString())
                }
            }
            stream.send(.headers(.init(headers: headers)))
        case .message(let bytes):
            var buffer = ByteBuffer()
            buffer.writeEnvelope(flags: 0x00, bytes)
            stream.send(.data(.init(data: .byteBuffer(buffer))))
        }
    }

    func write(contentsOf parts: some Sequence<RPCRequestPart<[UInt8]>>) async throws {
        for part in parts { try await write(part) }
    }

    func finish() async {
        stream.send(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
    }

    func finish(throwing error: any Error) async {
        stream.reset()
    }
}

/// The server's frames as response parts: headers as metadata, envelopes as messages,
/// trailers (or a trailers-only answer) as the status.
private struct ResponseParts: AsyncSequence, Sendable {
    typealias Element = RPCResponsePart<[UInt8]>
    let frames: AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>

    func makeAsyncIterator() -> Iterator { Iterator(frames: frames.makeAsyncIterator()) }

    struct Iterator: AsyncIteratorProtocol {
        var frames: AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>.AsyncIterator
        var reader = EnvelopeReader(maxMessageBytes: Int(UInt32.max))
        var pending: [RPCResponsePart<[UInt8]>] = []
        var sawHeaders = false
        var ended = false

        init(frames: AsyncThrowingStream<HTTP2Frame.FramePayload, any Error>.AsyncIterator) {
            self.frames = frames
        }

        mutating func next() async throws -> RPCResponsePart<[UInt8]>? {
            while true {
                if !pending.isEmpty { return pending.removeFirst() }
                if ended { return nil }
                let frame: HTTP2Frame.FramePayload?
                do {
                    frame = try await frames.next()
                } catch {
                    ended = true
                    throw RPCError(code: .unavailable, message: "the in-memory stream was cut: \(error)")
                }
                switch frame {
                case .headers(let headers):
                    let isTrailers = sawHeaders || headers.endStream
                    sawHeaders = true
                    if isTrailers {
                        ended = true
                        pending.append(.status(Self.status(headers.headers), Self.metadata(headers.headers)))
                    } else if let refusal = Self.refusal(headers.headers) {
                        ended = true
                        pending.append(.status(refusal, [:]))
                    } else {
                        pending.append(.metadata(Self.metadata(headers.headers)))
                    }
                case .data(let data):
                    if case .byteBuffer(let bytes) = data.data { reader.append(bytes) }
                    while let envelope = try reader.next() {
                        guard !envelope.isCompressed else {
                            throw RPCError(code: .internalError, message: "the server sent a compressed message, which this transport never offered")
                        }
                        pending.append(.message(Array(envelope.payload.readableBytesView)))
                    }
                    if data.endStream {
                        ended = true
                        pending.append(.status(Status(code: .internalError, message: "the response ended without a grpc-status"), [:]))
                    }
                case .rstStream(let code):
                    ended = true
                    throw RPCError(code: .unavailable, message: "the server reset the stream (\(code))")
                case nil:
                    ended = true
                    throw RPCError(code: .unavailable, message: "the in-memory stream ended without a status")
                default:
                    continue
                }
            }
        }

        /// A response that is not gRPC (an HTTP error status, another content type).
        private static func refusal(_ headers: HPACKHeaders) -> Status? {
            let status = headers.first(name: ":status") ?? "none"
            let contentType = headers.first(name: "content-type") ?? ""
            guard status != "200" || !contentType.hasPrefix("application/grpc") else { return nil }
            return Status(code: .unknown, message: "not a gRPC response: HTTP status \(status), content type '\(contentType)'")
        }

        private static func status(_ headers: HPACKHeaders) -> Status {
            guard let text = headers.first(name: "grpc-status"), let raw = Int(text), let code = Status.Code(rawValue: raw) else {
                return Status(code: .unknown, message: "the trailers carry no valid grpc-status")
            }
            let message = headers.first(name: "grpc-message").map { $0.removingPercentEncoding ?? $0 } ?? ""
            return Status(code: code, message: message)
        }

        private static func metadata(_ headers: HPACKHeaders) -> Metadata {
            var metadata = Metadata()
            for (name, value, _) in headers where !name.hasPrefix(":") && name != "grpc-status" && name != "grpc-message" && name != "content-type" {
                if name.hasSuffix("-bin"), let bytes = Data(base64Encoded: value) {
                    metadata.addBinary(Array(bytes), forKey: name)
                } else {
                    metadata.addString(value, forKey: name)
                }
            }
            return metadata
        }
    }
}
