import Foundation
package import GatewayProtocol
import SwiftProtobuf

/// What one receiver's response means for the call.
package enum Answer: Sendable, Equatable {
    /// A valid answer: the call completes with it.
    case found
    /// The receiver does not have it.
    case notFound
    /// The receiver does not implement the method: it does not count as an answer.
    case unimplemented
    /// The request's deadline passed at the receiver before it had an answer.
    case deadlineExceeded
    /// The receiver failed; the text says how. A permanent failure (the request itself is
    /// wrong) is not worth a retry; any other one is.
    case failed(String, permanent: Bool)
    /// The receiver answered with something the method's rule refuses (a VPS id that is not a
    /// DNS label): a failure of that receiver, logged with it, never written anywhere.
    case refused(String)
}

/// Decides what each receiver's response means for its call: the response code first, then,
/// for a success, the method's own rule (``RequestMethod``'s verdict) on the decoded answer.
/// A method this build has no descriptor for wins with any success.
package struct AnswerRules: Sendable {
    private let methods: [String: AnyRequestMethod]

    package init(_ methods: [String: AnyRequestMethod]) {
        self.methods = methods
    }

    /// The rules of this build's methods (``RequestMethods/all``).
    package static let builtIn = AnswerRules(RequestMethods.byName(RequestMethods.all))

    package func classify(_ response: GatewayResponse, method: String) -> Answer {
        let answer = Self.byCode(response)
        guard answer == .found, let descriptor = methods[method] else { return answer }
        switch descriptor.verdict(onPayload: response.payload) {
        case .verdict(.wins): return .found
        case .verdict(.notFound): return .notFound
        case .verdict(.refused(let problem)): return .refused(problem)
        case .undecodable(let problem): return .failed("internal: \(problem)", permanent: false)
        }
    }

    /// `success` (or code `ok`) is found; otherwise the response code decides.
    package static func byCode(_ response: GatewayResponse) -> Answer {
        switch response.responseCode {
        case .ok: .found
        case .notFound: .notFound
        case .unimplemented: .unimplemented
        case .deadlineExceeded: .deadlineExceeded
        case let code:
            .failed(response.error.isEmpty ? code.rawValue : "\(code.rawValue): \(response.error)", permanent: code == .invalidArgument)
        }
    }
}
