import Foundation
import GatewayProtocol
@testable import GatewayServer
import SwiftProtobuf
import Testing

@Suite("Secret check and answer classification")
struct SecretAndClassifierTests {
    @Test("only the exact secret is accepted", arguments: [
        ("s3cret", true), ("s3cre", false), ("s3cret!", false), ("S3cret", false), ("", false),
    ])
    func secret(presented: String, accepted: Bool) {
        #expect(SecretCheck(secret: "s3cret").accepts(presented) == accepted)
    }

    @Test("a missing header and an empty configured secret are never accepted")
    func missingSecret() {
        #expect(!SecretCheck(secret: "s3cret").accepts(nil))
        #expect(!SecretCheck(secret: "").accepts(""))
    }

    @Test("FindVPSByLease answers: found only with a decodable response naming a VPS")
    func findVPSByLease() throws {
        let classifier = FindVPSByLeaseClassifier()
        let named = try FindVPSByLeaseResponse.with { $0.vpsID = "v" }.serializedBytes() as Data
        #expect(classifier.classify(.success(requestID: "r", payload: named)) == .found)
        #expect(classifier.classify(.success(requestID: "r", payload: Data())) == .notFound)
        #expect(classifier.classify(.success(requestID: "r", payload: Data([0x0a, 0x10]))) != .found)
        #expect(classifier.classify(.failure(requestID: "r", code: .unimplemented, error: "")) == .unimplemented)
        #expect(classifier.classify(.failure(requestID: "r", code: .unavailable, error: "busy")) == .failed("unavailable: busy", permanent: false))
        #expect(classifier.classify(.failure(requestID: "r", code: .invalidArgument, error: "bad mac")) == .failed("invalid_argument: bad mac", permanent: true))
    }

    @Test("an old peer's failure without a code is not found when it says so, else internal")
    func legacyCodes() {
        #expect(GatewayResponse.with { $0.error = "VPS not found" }.responseCode == .notFound)
        #expect(GatewayResponse.with { $0.error = "connection refused" }.responseCode == .internal)
        #expect(GatewayResponse.with { $0.success = true }.responseCode == .ok)
    }
}
