import NIOHPACK

/// What a stream's request HEADERS ask for, and the pure decision of how to answer it: which
/// protocol and codec, which route, or which refusal.
struct RequestHead: Sendable {
    let headers: HPACKHeaders

    var method: String? { headers.first(name: ":method") }
    var path: String { headers.first(name: ":path") ?? "" }
    /// The media type without parameters, lowercased (`application/json; charset=utf-8` →
    /// `application/json`).
    var contentType: String {
        let raw = headers.first(name: "content-type") ?? ""
        // What clients send, taken as is: splitting, trimming and case mapping every request's
        // header was 1 % of a loaded gateway's CPU.
        if Self.supportedContentTypes.contains(raw) { return raw }
        return raw.split(separator: ";", maxSplits: 1).first.map { $0.trimmingSpaces.lowercased() } ?? ""
    }

    /// How the endpoint will answer.
    enum Decision {
        case call(Call)
        case refuse(Refusal)
    }

    struct Call: Sendable {
        let route: Route
        let wireProtocol: RPCContext.WireProtocol
        let codec: MessageCodec
        /// The coding of the request's messages.
        let requestEncoding: MessageEncoding
        /// The coding responses may use (what the client accepts).
        let responseEncoding: MessageEncoding
        let timeout: Duration?
        /// The content type the response carries.
        let responseContentType: String
    }

    /// A refusal before any handler runs, in the caller's protocol.
    enum Refusal {
        /// A plain HTTP answer (wrong method, unknown content type, Connect's 404).
        case http(status: Int, headers: [(String, String)], body: String, contentType: String)
        /// gRPC's trailers-only answer.
        case grpc(RPCStatus, extraHeaders: [(String, String)])
        /// Connect streaming: HTTP 200 and an end-of-stream message carrying the error.
        case connectStream(RPCStatus, contentType: String)
        /// Connect unary: the error's HTTP status and its JSON body.
        case connectUnary(RPCStatus)

        /// Why, for the refusal log.
        var reason: String {
            switch self {
            case .http(let status, _, let body, _): "HTTP \(status): \(body)"
            case .grpc(let status, _), .connectStream(let status, _), .connectUnary(let status): "\(status)"
            }
        }
    }

    static let supportedContentTypes = [
        "application/grpc", "application/grpc+proto", "application/grpc+json",
        "application/connect+proto", "application/connect+json", "application/proto", "application/json",
    ]

    func decide(_ router: RPCRouter) -> Decision {
        guard method == "POST" else {
            return .refuse(.http(
                status: 405, headers: [("allow", "POST")],
                body: "\(method ?? "no method") is not served here; RPCs are POST requests (gRPC or Connect)",
                contentType: "text/plain; charset=utf-8"
            ))
        }
        let (wire, codec): (RPCContext.WireProtocol, MessageCodec)
        switch contentType {
        case "application/grpc", "application/grpc+proto": (wire, codec) = (.grpc, .binary)
        case "application/grpc+json": (wire, codec) = (.grpc, .json)
        case "application/connect+proto": (wire, codec) = (.connect, .binary)
        case "application/connect+json": (wire, codec) = (.connect, .json)
        case "application/proto": (wire, codec) = (.connectUnary, .binary)
        case "application/json": (wire, codec) = (.connectUnary, .json)
        default:
            return .refuse(.http(
                status: 415, headers: [("accept-post", Self.supportedContentTypes.joined(separator: ", "))],
                body: "content type '\(headers.first(name: "content-type") ?? "")' is not served here; use one of \(Self.supportedContentTypes.joined(separator: ", "))",
                contentType: "text/plain; charset=utf-8"
            ))
        }
        let responseContentType = wire == .grpc ? (codec == .json ? "application/grpc+json" : "application/grpc") : contentType

        guard let route = router.route(forPath: path) else {
            let status = RPCStatus(.unimplemented, "no method \(path) here; check the service and method name")
            switch wire {
            case .grpc: return .refuse(.grpc(status, extraHeaders: []))
            case .connect, .connectUnary: return .refuse(.connectUnary(status))
            }
        }
        if wire == .connectUnary && !route.method.kind.allowsConnectUnary {
            return .refuse(.http(
                status: 415, headers: [("accept-post", "application/connect+proto, application/connect+json, application/grpc")],
                body: "\(route.method) is a streaming method: use application/connect+proto or application/grpc",
                contentType: "text/plain; charset=utf-8"
            ))
        }
        if wire != .grpc, let version = headers.first(name: "connect-protocol-version"), version != "1" {
            return .refuse(refusal(wire, RPCStatus(.invalidArgument, "connect-protocol-version must be 1, got '\(version)'"), contentType: responseContentType))
        }

        let (encodingHeader, acceptHeader): (String, String)
        switch wire {
        case .grpc: (encodingHeader, acceptHeader) = ("grpc-encoding", "grpc-accept-encoding")
        case .connect: (encodingHeader, acceptHeader) = ("connect-content-encoding", "connect-accept-encoding")
        case .connectUnary: (encodingHeader, acceptHeader) = ("content-encoding", "accept-encoding")
        }
        guard let requestEncoding = MessageEncoding(header: headers.first(name: encodingHeader)) else {
            let status = RPCStatus(.unimplemented, "\(encodingHeader) '\(headers.first(name: encodingHeader) ?? "")' is not supported; use gzip or identity")
            if wire == .grpc { return .refuse(.grpc(status, extraHeaders: [("grpc-accept-encoding", "gzip,identity")])) }
            return .refuse(refusal(wire, status, contentType: responseContentType))
        }
        let timeout: Duration?
        do {
            timeout = try parseTimeout(wire)
        } catch {
            return .refuse(refusal(wire, error, contentType: responseContentType))
        }
        return .call(Call(
            route: route, wireProtocol: wire, codec: codec, requestEncoding: requestEncoding,
            responseEncoding: .preferred(fromAcceptList: headers.first(name: acceptHeader)),
            timeout: timeout, responseContentType: responseContentType
        ))
    }

    private func refusal(_ wire: RPCContext.WireProtocol, _ status: RPCStatus, contentType: String) -> Refusal {
        switch wire {
        case .grpc: .grpc(status, extraHeaders: [])
        case .connect: .connectStream(status, contentType: contentType)
        case .connectUnary: .connectUnary(status)
        }
    }

    /// `grpc-timeout` (up to 8 digits and a unit: H M S m u n) or `connect-timeout-ms` (up to
    /// 10 digits).
    private func parseTimeout(_ wire: RPCContext.WireProtocol) throws(RPCStatus) -> Duration? {
        if wire == .grpc {
            guard let text = headers.first(name: "grpc-timeout") else { return nil }
            guard let unit = text.last, let value = Int64(text.dropLast()), (1...8).contains(text.count - 1), value >= 0 else {
                throw RPCStatus(.invalidArgument, "grpc-timeout '\(text)' is not 1-8 digits and a unit (H, M, S, m, u, n)")
            }
            switch unit {
            case "H": return .seconds(value * 3600)
            case "M": return .seconds(value * 60)
            case "S": return .seconds(value)
            case "m": return .milliseconds(value)
            case "u": return .microseconds(value)
            case "n": return .nanoseconds(value)
            default: throw RPCStatus(.invalidArgument, "grpc-timeout '\(text)' has an unknown unit '\(unit)'")
            }
        }
        guard let text = headers.first(name: "connect-timeout-ms") else { return nil }
        guard (1...10).contains(text.count), text.allSatisfy(\.isASCIIDigit), let value = Int64(text) else {
            throw RPCStatus(.invalidArgument, "connect-timeout-ms '\(text)' is not 1-10 decimal digits")
        }
        return .milliseconds(value)
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return text
    }
}
