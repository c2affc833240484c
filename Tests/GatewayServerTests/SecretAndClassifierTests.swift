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

    @Test("FindVPSByLease answers by its descriptor's rule: found only with a decodable response naming a VPS whose id is a DNS label")
    func findVPSByLease() throws {
        let rules = AnswerRules.builtIn
        func classify(_ response: GatewayResponse) -> Answer { rules.classify(response, method: RequestMethods.findVPSByLease.name) }
        let named = try FindVPSByLeaseResponse.with { $0.vpsID = "v" }.serializedBytes() as Data
        let injected = try FindVPSByLeaseResponse.with { $0.vpsID = "v\n10.0.0.9 bank" }.serializedBytes() as Data
        #expect(classify(.success(requestID: "r", payload: named)) == .found)
        #expect(classify(.success(requestID: "r", payload: Data())) == .notFound)
        #expect(classify(.success(requestID: "r", payload: Data([0x0a, 0x10]))) == .failed("internal: the response payload is not a FindVPSByLease response (2 bytes)", permanent: false))
        guard case .refused(let why) = classify(.success(requestID: "r", payload: injected)) else {
            Issue.record("an id that is not a DNS label was not refused")
            return
        }
        #expect(why.contains("is not a DNS label"))
        #expect(classify(.failure(requestID: "r", code: .unimplemented, error: "")) == .unimplemented)
        #expect(classify(.failure(requestID: "r", code: .unavailable, error: "busy")) == .failed("unavailable: busy", permanent: false))
        #expect(classify(.failure(requestID: "r", code: .invalidArgument, error: "bad mac")) == .failed("invalid_argument: bad mac", permanent: true))
    }

    @Test("a method without a descriptor wins with any success, and Ping's raw bytes win as they are")
    func methodsWithoutRules() {
        let rules = AnswerRules.builtIn
        #expect(rules.classify(.success(requestID: "r", payload: Data([0xff])), method: "SomethingNew") == .found)
        #expect(rules.classify(.success(requestID: "r", payload: Data([0xff, 0x00])), method: RequestMethods.ping.name) == .found)
        #expect(rules.classify(.failure(requestID: "r", code: .notFound, error: "no"), method: "SomethingNew") == .notFound)
    }

    @Test("an old peer's failure without a code is not found when it says so, else internal")
    func legacyCodes() {
        #expect(GatewayResponse.with { $0.error = "VPS not found" }.responseCode == .notFound)
        #expect(GatewayResponse.with { $0.error = "connection refused" }.responseCode == .internal)
        #expect(GatewayResponse.with { $0.success = true }.responseCode == .ok)
    }
}
