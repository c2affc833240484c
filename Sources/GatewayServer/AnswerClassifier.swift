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

/// Decides whether a response is the valid answer that wins a call. One per method; methods
/// without one use ``GenericAnswerClassifier``.
package protocol AnswerClassifier: Sendable {
    func classify(_ response: GatewayResponse) -> Answer
}

/// `success` wins; otherwise the response code decides.
package struct GenericAnswerClassifier: AnswerClassifier {
    package init() {}

    package func classify(_ response: GatewayResponse) -> Answer {
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

/// FindVPSByLease wins only with a decodable response naming a VPS whose id (and
/// organization) are DNS labels: an old peer answers a miss with success and an empty
/// `vps_id`, and an id with a newline would write records of its own into the hosts file.
package struct FindVPSByLeaseClassifier: AnswerClassifier {
    package init() {}

    package func classify(_ response: GatewayResponse) -> Answer {
        let generic = GenericAnswerClassifier().classify(response)
        guard generic == .found else { return generic }
        do {
            let decoded = try FindVPSByLeaseResponse(serializedBytes: response.payload)
            if decoded.vpsID.isEmpty { return .notFound }
            if let problem = decoded.ownerProblem { return .refused(problem) }
            return .found
        } catch {
            return .failed("internal: the response payload is not a FindVPSByLeaseResponse (\(response.payload.count) bytes)", permanent: false)
        }
    }
}

package struct AnswerClassifiers: Sendable {
    private let byMethod: [String: any AnswerClassifier]
    private let fallback: any AnswerClassifier = GenericAnswerClassifier()

    package init(_ byMethod: [String: any AnswerClassifier] = [GatewayMethod.findVPSByLease: FindVPSByLeaseClassifier()]) {
        self.byMethod = byMethod
    }

    package func classifier(for method: String) -> any AnswerClassifier {
        byMethod[method] ?? fallback
    }
}
