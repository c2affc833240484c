// Public: payloads are Foundation `Data`; protobuf methods are built from SwiftProtobuf messages.
public import Foundation
public import SwiftProtobuf

/// What a decoded response means for the call it answers, by its method's own rule.
public enum AnswerVerdict: Sendable, Equatable {
    /// It is the answer: the call completes with it.
    case wins
    /// A well-formed "I do not have it" (an old peer answers a miss with success and an
    /// empty id).
    case notFound
    /// Something the method takes from no receiver; the text says why (logged with the
    /// receiver, never stored).
    case refused(String)
}

/// One request method both sides of the stream know: its wire name, how its request and
/// response travel as bytes, and the rule that makes a response the answer.
///
/// The shape of grpc-swift-2's `MethodDescriptor`, with the message types and the answer rule
/// in the value: a worker's handler and the gateway's call name the same descriptor, so the
/// compiler checks that both sides agree on the messages.
///
/// ```swift
/// extension RequestMethods {
///     public static let findVPSByLease = RequestMethod<FindVPSByLeaseRequest, FindVPSByLeaseResponse>(
///         name: "FindVPSByLease"
///     ) { $0.vpsID.isEmpty ? .notFound : .wins }
/// }
/// ```
public struct RequestMethod<Request: Sendable, Response: Sendable>: Sendable {
    public let name: String
    let encodeRequest: @Sendable (Request) throws -> Data
    let decodeRequest: @Sendable (Data) throws -> Request
    let encodeResponse: @Sendable (Response) throws -> Data
    let decodeResponse: @Sendable (Data) throws -> Response
    let judge: @Sendable (Response) -> AnswerVerdict
    /// The protobuf JSON mapping of both messages, for the admin API's `arguments` and
    /// `result`; nil for a method whose payloads are not protobuf messages.
    let json: MethodJSON?

    /// A method whose payloads are raw bytes (`Ping`): every response wins.
    public init(rawBytes name: String) where Request == Data, Response == Data {
        self.name = name
        self.encodeRequest = { $0 }
        self.decodeRequest = { $0 }
        self.encodeResponse = { $0 }
        self.decodeResponse = { $0 }
        self.judge = { _ in .wins }
        self.json = nil
    }

    public func encode(_ request: Request) throws -> Data { try encodeRequest(request) }
    public func decodeRequest(from payload: Data) throws -> Request { try decodeRequest(payload) }
    public func encode(response: Response) throws -> Data { try encodeResponse(response) }
    public func decodeResponse(from payload: Data) throws -> Response { try decodeResponse(payload) }
    public func verdict(on response: Response) -> AnswerVerdict { judge(response) }

    /// The method with its message types erased, for tables keyed by name.
    public var erased: AnyRequestMethod { AnyRequestMethod(self) }
}

extension RequestMethod where Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message {
    /// A method whose request and response are protobuf messages in their binary form.
    /// - Parameter verdict: the answer rule; by default every decodable response wins.
    public init(name: String, verdict: @escaping @Sendable (Response) -> AnswerVerdict = { _ in .wins }) {
        self.name = name
        self.encodeRequest = { try $0.serializedBytes() }
        self.decodeRequest = { try Request(serializedBytes: $0) }
        self.encodeResponse = { try $0.serializedBytes() }
        self.decodeResponse = { try Response(serializedBytes: $0) }
        self.judge = verdict
        self.json = MethodJSON(
            argumentsToPayload: { arguments in
                var options = JSONDecodingOptions()
                options.ignoreUnknownFields = false
                return try Request(jsonString: try arguments.jsonString(), options: options).serializedBytes()
            },
            resultFromPayload: { payload in
                try Google_Protobuf_Struct(jsonString: try Response(serializedBytes: payload).jsonString())
            }
        )
    }
}

/// The JSON forms of one method's messages.
struct MethodJSON: Sendable {
    let argumentsToPayload: @Sendable (Google_Protobuf_Struct) throws -> Data
    let resultFromPayload: @Sendable (Data) throws -> Google_Protobuf_Struct
}

/// A ``RequestMethod`` with its message types erased: what the gateway keeps per method name
/// to judge answers and to speak JSON on the admin API.
public struct AnyRequestMethod: Sendable {
    /// What a response payload is for the call, by the method's rule.
    public enum PayloadVerdict: Sendable, Equatable {
        case verdict(AnswerVerdict)
        /// The payload is not the method's response message.
        case undecodable(String)
    }

    public let name: String
    private let judgePayload: @Sendable (Data) -> PayloadVerdict
    private let json: MethodJSON?

    init<Request, Response>(_ method: RequestMethod<Request, Response>) {
        self.name = method.name
        self.judgePayload = { payload in
            do {
                return .verdict(method.judge(try method.decodeResponse(payload)))
            } catch {
                return .undecodable("the response payload is not a \(method.name) response (\(payload.count) bytes)")
            }
        }
        self.json = method.json
    }

    public func verdict(onPayload payload: Data) -> PayloadVerdict { judgePayload(payload) }

    /// Whether the admin API can take this method's request as JSON-shaped `arguments`.
    public var speaksJSON: Bool { json != nil }

    /// The binary request from JSON-shaped arguments; nil when the method has no JSON form.
    public func payload(fromArguments arguments: Google_Protobuf_Struct) throws -> Data? {
        try json?.argumentsToPayload(arguments)
    }

    /// The answer as JSON-shaped fields; nil when the method has no JSON form.
    public func result(fromPayload payload: Data) throws -> Google_Protobuf_Struct? {
        try json?.resultFromPayload(payload)
    }
}

/// The methods of this build. Adding one is a descriptor here, a handler registered with the
/// worker, and calls through the gateway (README, "Adding a method").
public enum RequestMethods {
    /// Who owns this DHCP lease? Wins only with a VPS id; an empty id is an old peer's "not
    /// found", and an id (or organization) that is not a DNS label is refused, since it
    /// becomes a name in dnsmasq's hosts file.
    public static let findVPSByLease = RequestMethod<FindVPSByLeaseRequest, FindVPSByLeaseResponse>(name: "FindVPSByLease") { response in
        if response.vpsID.isEmpty { return .notFound }
        if let problem = response.ownerProblem { return .refused(problem) }
        return .wins
    }

    /// Answers with the bytes it got: health checks, and the transport measured without a
    /// database.
    public static let ping = RequestMethod<Data, Data>(rawBytes: "Ping")

    /// The methods of this build: what the gateway judges by each one's rule, and speaks
    /// JSON for on the admin API.
    public static let all: [AnyRequestMethod] = [findVPSByLease.erased, ping.erased]

    /// `methods` by name; a later method replaces an earlier one of the same name.
    public static func byName(_ methods: [AnyRequestMethod]) -> [String: AnyRequestMethod] {
        Dictionary(methods.map { ($0.name, $0) }) { $1 }
    }
}
