// Public: payloads are Foundation `Data`.
public import Foundation
import SwiftProtobuf

/// The `code` extension field of a ``GatewayResponse``.
public enum ResponseCode: String, Sendable, CaseIterable {
    case ok
    case notFound = "not_found"
    case invalidArgument = "invalid_argument"
    case unimplemented
    case unavailable
    case deadlineExceeded = "deadline_exceeded"
    case `internal`
}

extension GatewayResponse {
    /// The response's code. An old peer sends no code: `success` then means `ok`, and a
    /// failure whose error text says "not found" means `not_found` (that is how the platform's
    /// own handlers report a miss); any other failure is `internal`.
    public var responseCode: ResponseCode {
        if let code = ResponseCode(rawValue: self.code) { return code }
        if self.success { return .ok }
        return self.error.range(of: "not found", options: .caseInsensitive) == nil ? .internal : .notFound
    }

    public static func success(requestID: String, payload: Data) -> Self {
        .with {
            $0.requestID = requestID
            $0.success = true
            $0.payload = payload
            $0.code = ResponseCode.ok.rawValue
        }
    }

    public static func failure(requestID: String, code: ResponseCode, error: String) -> Self {
        .with {
            $0.requestID = requestID
            $0.success = false
            $0.code = code.rawValue
            $0.error = error
        }
    }
}
