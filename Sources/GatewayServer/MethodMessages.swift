import Foundation
import GatewayProtocol
import RPCEndpoint
import SwiftProtobuf

/// The request and response messages of the methods the gateway knows, so the admin API can
/// take a call's request as JSON-shaped `arguments` and give its answer back as `result`
/// (`curl … -d '{"method":"FindVPSByLease","arguments":{"mac":"…"}}'`). The one place that
/// maps a method name to its message types; typed method descriptors can take it over.
enum MethodMessages {
    struct Conversion: Sendable {
        /// `arguments` through the protobuf JSON mapping into the request's binary form.
        let encodeArguments: @Sendable (Google_Protobuf_Struct) throws -> Data
        /// A binary answer into JSON-shaped fields.
        let decodeResult: @Sendable (Data) throws -> Google_Protobuf_Struct
    }

    static let known: [String: Conversion] = [
        GatewayMethod.findVPSByLease: conversion(FindVPSByLeaseRequest.self, FindVPSByLeaseResponse.self),
    ]

    private static func conversion<Request: Message, Response: Message>(_: Request.Type, _: Response.Type) -> Conversion {
        Conversion(
            encodeArguments: { arguments in
                var options = JSONDecodingOptions()
                options.ignoreUnknownFields = false
                return try Request(jsonString: try arguments.jsonString(), options: options).serializedData()
            },
            decodeResult: { payload in
                try Google_Protobuf_Struct(jsonString: try Response(serializedBytes: payload).jsonString())
            }
        )
    }

    /// The binary request for `method` from its JSON-shaped arguments.
    static func payload(for method: String, arguments: Google_Protobuf_Struct) throws(RPCStatus) -> Data {
        guard let conversion = known[method] else {
            throw RPCStatus(.invalidArgument, "arguments are only understood for \(known.keys.sorted().joined(separator: ", ")); give method '\(method.prefix(128))' a binary payload instead")
        }
        do {
            return try conversion.encodeArguments(arguments)
        } catch {
            throw RPCStatus(.invalidArgument, "arguments are not a valid request of \(method): \(error)")
        }
    }

    /// The answer as JSON-shaped fields, or nil for a method whose messages are unknown (or an
    /// answer that does not decode).
    static func result(for method: String, payload: Data) -> Google_Protobuf_Struct? {
        try? known[method]?.decodeResult(payload)
    }
}
