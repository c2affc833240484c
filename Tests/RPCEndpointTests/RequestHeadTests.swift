import Logging
import NIOCore
import NIOHPACK
@testable import RPCEndpoint
import SwiftProtobuf
import Synchronization
import Testing

/// The pure part of the endpoint: which protocol, codec and route a request gets, or which
/// refusal; the framing and the JSON it writes. No sockets.
@Suite("Request decisions and framing")
struct RequestHeadTests {
    static let unaryMethod = RPCMethod(service: "test.v1.Service", name: "Unary", kind: .unary)
    static let bidiMethod = RPCMethod(service: "test.v1.Service", name: "Bidi", kind: .bidirectionalStreaming)

    var router: RPCRouter {
        var router = RPCRouter()
        router.unary(Self.unaryMethod) { (request: Google_Protobuf_StringValue, _) in request }
        router.bidirectionalStreaming(Self.bidiMethod) { (_: RPCRequestStream<Google_Protobuf_StringValue>, _, _: RPCResponseWriter<Google_Protobuf_StringValue>) in }
        return router
    }

    func head(_ path: String, _ contentType: String, method: String = "POST", extra: [(String, String)] = []) -> RequestHead {
        var headers: HPACKHeaders = [":method": method, ":path": path, ":scheme": "http", "content-type": contentType]
        for (name, value) in extra { headers.add(name: name, value: value) }
        return RequestHead(headers: headers)
    }

    @Test("the content type picks the protocol and the codec", arguments: [
        ("application/grpc", RPCContext.WireProtocol.grpc, true),
        ("application/grpc+proto", .grpc, true),
        ("application/grpc+json", .grpc, false),
        ("application/connect+proto", .connect, true),
        ("application/connect+json", .connect, false),
        ("application/proto", .connectUnary, true),
        ("application/json; charset=utf-8", .connectUnary, false),
        ("Application/Connect+Proto", .connect, true),
        ("application/grpc ;foo=bar", .grpc, true),
    ])
    func protocolByContentType(contentType: String, wire: RPCContext.WireProtocol, binary: Bool) {
        guard case .call(let call) = head(Self.unaryMethod.path, contentType).decide(router) else {
            Issue.record("expected a call for \(contentType)")
            return
        }
        #expect(call.wireProtocol == wire)
        #expect((call.codec == .binary) == binary)
    }

    @Test("an unknown content type is 415 naming the supported ones; a non-POST is 405")
    func refusals() {
        guard case .refuse(.http(let status, let headers, _, _)) = head(Self.unaryMethod.path, "text/xml").decide(router) else {
            Issue.record("expected a 415")
            return
        }
        #expect(status == 415)
        #expect(headers.contains { $0.0 == "accept-post" && $0.1.contains("application/connect+proto") })
        guard case .refuse(.http(405, _, _, _)) = head(Self.unaryMethod.path, "application/grpc", method: "GET").decide(router) else {
            Issue.record("expected a 405")
            return
        }
    }

    @Test("an unknown method is unimplemented: trailers-only for gRPC, a 404 JSON error for Connect")
    func unknownMethod() {
        guard case .refuse(.grpc(let status, _)) = head("/test.v1.Service/Nope", "application/grpc").decide(router) else {
            Issue.record("expected trailers-only")
            return
        }
        #expect(status.code == .unimplemented)
        guard case .refuse(.connectUnary(let connect)) = head("/test.v1.Service/Nope", "application/connect+proto").decide(router) else {
            Issue.record("expected a Connect error")
            return
        }
        #expect(connect.code.httpStatus == 404)
    }

    @Test("Connect unary content types are refused on a streaming method")
    func unaryContentTypeOnStream() {
        guard case .refuse(.http(415, _, _, _)) = head(Self.bidiMethod.path, "application/proto").decide(router) else {
            Issue.record("expected a 415")
            return
        }
    }

    @Test("timeouts: grpc-timeout with its units, connect-timeout-ms up to 10 digits; malformed ones are invalid_argument", arguments: [
        ("application/grpc", "grpc-timeout", "250m", Duration.milliseconds(250) as Duration?),
        ("application/grpc", "grpc-timeout", "2S", .seconds(2)),
        ("application/grpc", "grpc-timeout", "123456789S", nil),
        ("application/grpc", "grpc-timeout", "5x", nil),
        ("application/connect+proto", "connect-timeout-ms", "1500", .milliseconds(1500)),
        ("application/connect+proto", "connect-timeout-ms", "12345678901", nil),
        ("application/connect+proto", "connect-timeout-ms", "-1", nil),
    ])
    func timeouts(contentType: String, header: String, value: String, expected: Duration?) {
        let decision = head(Self.unaryMethod.path, contentType, extra: [(header, value)]).decide(router)
        switch decision {
        case .call(let call): #expect(call.timeout == expected, "\(value)")
        case .refuse(let refusal):
            #expect(expected == nil, "\(value) was refused: \(refusal.reason)")
            #expect(refusal.reason.contains("invalid_argument"))
        }
    }

    @Test("encodings: gzip and identity are taken, anything else is unimplemented; gzip in the accept list makes responses gzip")
    func encodings() {
        guard case .call(let call) = head(Self.unaryMethod.path, "application/connect+proto", extra: [("connect-content-encoding", "gzip"), ("connect-accept-encoding", "br, gzip")]).decide(router) else {
            Issue.record("expected a call")
            return
        }
        #expect(call.requestEncoding == .gzip && call.responseEncoding == .gzip)
        guard case .refuse(.grpc(let status, let headers)) = head(Self.unaryMethod.path, "application/grpc", extra: [("grpc-encoding", "snappy")]).decide(router) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(status.code == .unimplemented)
        #expect(headers.contains { $0.0 == "grpc-accept-encoding" })
        guard case .refuse(.connectStream(let version, _)) = head(Self.unaryMethod.path, "application/connect+proto", extra: [("connect-protocol-version", "2")]).decide(router) else {
            Issue.record("expected a refusal of version 2")
            return
        }
        #expect(version.code == .invalidArgument)
    }

    @Test("envelopes: split across reads, several in one read, and one over the limit refused at its prefix")
    func envelopes() throws {
        var reader = EnvelopeReader(maxMessageBytes: 10)
        var bytes = ByteBuffer()
        bytes.writeEnvelope(flags: 0, Array("hello".utf8))
        bytes.writeEnvelope(flags: 1, Array("x".utf8))
        reader.append(bytes.getSlice(at: 0, length: 3)!)
        #expect(try reader.next() == nil)
        reader.append(bytes.getSlice(at: 3, length: bytes.readableBytes - 3)!)
        let first = try #require(try reader.next())
        #expect(String(buffer: first.payload) == "hello" && !first.isCompressed)
        #expect(try reader.next()?.isCompressed == true)
        #expect(!reader.hasPartialEnvelope)
        var big = ByteBuffer()
        big.writeInteger(UInt8(0))
        big.writeInteger(UInt32(11))
        reader.append(big)
        #expect(throws: RPCStatus.self) { try reader.next() }
    }

    @Test("gzip round-trips, and a decompression bomb is refused at the limit")
    func gzip() throws {
        let text = Array(String(repeating: "vps-gateway ", count: 1000).utf8)
        let compressed = try Gzip.compress(text)
        #expect(compressed.count < text.count / 10)
        #expect(try Gzip.decompress(compressed, limit: text.count) == text)
        #expect(throws: RPCStatus.self) { try Gzip.decompress(compressed, limit: text.count - 1) }
        #expect(throws: RPCStatus.self) { try Gzip.decompress(Array("not gzip".utf8), limit: 100) }
    }

    @Test("Connect's end of stream and unary error JSON, and gRPC's percent-encoded message")
    func errorForms() {
        #expect(ConnectJSON.endOfStream(.ok) == "{}")
        let status = RPCStatus(.unauthenticated, "wrong \"secret\"\n", metadata: [("x-a", "1"), ("x-a", "2")])
        #expect(ConnectJSON.endOfStream(status) == #"{"error":{"code":"unauthenticated","message":"wrong \"secret\"\n"},"metadata":{"x-a":["1","2"]}}"#)
        #expect(GRPCMessageEncoding.percentEncoded("50% done\névé") == "50%25 done%0A%C3%A9v%C3%A9")
        #expect(RPCStatus.Code.unavailable.httpStatus == 503 && RPCStatus.Code.cancelled.connectName == "canceled")
    }

    @Test("refusal logs: the first refusal of a peer is logged, its repeats within the interval are counted into the next line")
    func refusalLog() {
        #expect(RefusalLog.host(of: "ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7")
        #expect(RefusalLog.host(of: "ipv6:[::1]:443") == "ipv6:[::1]")
        #expect(RefusalLog.host(of: "unix:/run/x.sock") == "unix:/run/x.sock")

        let lines = CapturedLines()
        let log = RefusalLog(logger: Logger(label: "test") { _ in CapturingHandler(lines: lines) }, message: "refused", interval: .seconds(60))
        let start = ContinuousClock.now
        for port in 0..<5000 { log.record(peer: "ipv4:10.0.0.7:\(40000 + port)", why: "wrong secret", now: start + .milliseconds(port)) }
        log.record(peer: "ipv4:10.0.0.8:1", why: "wrong secret", now: start + .seconds(1))
        #expect(lines.all.count == 2, "one line per peer, not one per refusal")
        log.record(peer: "ipv4:10.0.0.7:1", why: "wrong secret", now: start + .seconds(61))
        let after = lines.all
        #expect(after.count == 3)
        #expect(after.last?["repeats_not_logged"] == "4999")
        #expect(after.first?["remote_address"] == "ipv4:10.0.0.7:40000" && after.first?["repeats_not_logged"] == nil)
    }
}

/// Log lines' metadata, as rendered strings, in the order logged.
private final class CapturedLines: Sendable {
    private let lines = Mutex<[[String: String]]>([])
    var all: [[String: String]] { lines.withLock { $0 } }
    func append(_ line: [String: String]) { lines.withLock { $0.append(line) } }
}

private struct CapturingHandler: LogHandler {
    let lines: CapturedLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        lines.append((event.metadata ?? [:]).mapValues { "\($0)" })
    }
}
