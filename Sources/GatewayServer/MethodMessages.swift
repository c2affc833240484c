import Foundation
import GatewayProtocol
import RPCEndpoint
import SwiftProtobuf

/// The admin API's JSON forms of a call (`curl … -d '{"method":"FindVPSByLease","arguments":{"mac":"…"}}'`):
/// `arguments` into the request's binary form and the answer back as `result`, through each
/// method's descriptor (``RequestMethod``).
struct MethodMessages: Sendable {
    let methods: [String: AnyRequestMethod]

    /// The binary request for `method` from its JSON-shaped arguments.
    func payload(for method: String, arguments: Google_Protobuf_Struct) throws(RPCStatus) -> Data {
        guard let descriptor = methods[method], descriptor.speaksJSON else {
            let known = methods.values.filter(\.speaksJSON).map(\.name).sorted().joined(separator: ", ")
            throw RPCStatus(.invalidArgument, "arguments are only understood for \(known); give method '\(method.prefix(128))' a binary payload instead")
        }
        do {
            return try descriptor.payload(fromArguments: arguments) ?? Data()
        } catch {
            throw RPCStatus(.invalidArgument, "arguments are not a valid request of \(method): \(error)")
        }
    }

    /// The answer as JSON-shaped fields, or nil for a method without a JSON form (or an
    /// answer that does not decode).
    func result(for method: String, payload: Data) -> Google_Protobuf_Struct? {
        (try? methods[method]?.result(fromPayload: payload)) ?? nil
    }
}
