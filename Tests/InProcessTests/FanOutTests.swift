import Foundation
import GatewayProtocol
import GatewayServer
import GatewayWorker
import SwiftProtobuf
import Testing

/// The fan-out's rules, with a gateway and workers in one process: which answer wins, what
/// "not found" needs, what a deadline ends, and who is told to stop.
@Suite("Fan-out, in process", .timeLimit(.minutes(5)))
struct FanOutTests {
    static let mac = "52:54:00:cc:00:01"

    @Test("the one environment of three that knows the lease answers, and the two still working are cancelled", arguments: InProcessCluster.Link.allCases)
    func firstValidAnswerWins(link: InProcessCluster.Link) async throws {
        let never: @Sendable (FindVPSByLeaseRequest) async throws -> FindVPSByLeaseResponse = { _ in
            try await Task.sleep(for: .seconds(60))
            throw HandlerError.notFound("never")
        }
        try await InProcessCluster.with(workers: [
            .init(environment: "production") { _ in .owner("vps-prod-1") },
            .init(environment: "beta", answer: never),
            .init(environment: "dev", answer: never),
        ], link: link) { cluster in
            guard case .answered(let owner) = await cluster.lookup(Self.mac) else {
                Issue.record("the lookup was not answered")
                return
            }
            #expect(owner.vpsID == "vps-prod-1")
            // The gateway's cancel reaches the two handlers still running.
            for environment in ["beta", "dev"] {
                let log = try #require(cluster.logs[environment])
                #expect(await eventually { log.all == [.started, .cancelled] }, "\(environment): \(log.all)")
            }
        }
    }

    @Test("not found needs every environment: a slow one is waited for and its answer wins; a configured one that is not connected keeps the call from ending not_found; two misses are not_found")
    func notFoundNeedsEveryone() async throws {
        try await InProcessCluster.with(workers: [
            .init(environment: "production") { _ in throw HandlerError.notFound("not here") },
        ], configure: { $0.answeringEnvironments = ["production", "beta"] }) { cluster in
            switch await cluster.lookup(Self.mac, timeout: .milliseconds(800)) {
            case .notFound: Issue.record("not_found without beta, which is configured and never answered")
            case .answered: Issue.record("answered by nobody")
            case .unanswered: break
            }
        }
        try await InProcessCluster.with(workers: [
            .init(environment: "production") { _ in throw HandlerError.notFound("not here") },
            .init(environment: "beta") { _ in
                try await Task.sleep(for: .milliseconds(300))
                return .owner("vps-beta-7")
            },
        ], configure: { $0.answeringEnvironments = ["production", "beta"] }) { cluster in
            guard case .answered(let owner) = await cluster.lookup(Self.mac) else {
                Issue.record("production's not_found ended the call before beta answered")
                return
            }
            #expect(owner.vpsID == "vps-beta-7")
        }
        try await InProcessCluster.with(workers: [
            .init(environment: "production") { _ in throw HandlerError.notFound("not here") },
            .init(environment: "beta") { _ in .with { $0.vpsID = "" } },  // an old peer's miss
        ]) { cluster in
            guard case .notFound = await cluster.lookup(Self.mac) else {
                Issue.record("two misses did not make not_found")
                return
            }
        }
    }

    @Test("an answer that breaks the method's rule is refused, and the real owner's answer wins even when it comes later")
    func refusedAnswerDoesNotWin() async throws {
        try await InProcessCluster.with(workers: [
            .init(environment: "production") { _ in .owner("vps-1\n10.0.0.66 bank") },
            .init(environment: "beta") { _ in
                try await Task.sleep(for: .milliseconds(200))
                return .owner("vps-real")
            },
        ]) { cluster in
            guard case .answered(let owner) = await cluster.lookup(Self.mac) else {
                Issue.record("the lookup was not answered")
                return
            }
            #expect(owner.vpsID == "vps-real")
        }
    }

    @Test("a handler slower than the deadline ends the call unanswered near the deadline, and the handler is cancelled")
    func deadlineEndsTheCall() async throws {
        try await InProcessCluster.with(workers: [
            .init(environment: "production") { _ in
                try await Task.sleep(for: .seconds(60))
                return .owner("too-late")
            },
        ]) { cluster in
            let started = ContinuousClock.now
            guard case .unanswered(let why) = await cluster.lookup(Self.mac, timeout: .milliseconds(800)) else {
                Issue.record("a call past its deadline was answered")
                return
            }
            #expect(why.hasPrefix("deadline_exceeded"), "\(why)")
            // Ends at the deadline, not at the handler's 60 s.
            #expect(ContinuousClock.now - started < .seconds(30))
            let log = try #require(cluster.logs["production"])
            #expect(await eventually { log.all == [.started, .cancelled] }, "\(log.all)")
        }
    }

    @Test("a handler's invalid_argument fails the call through the journal at once, and the request is not retried", arguments: [true, false])
    func permanentFailureIsNotRetried(journal: Bool) async throws {
        try await InProcessCluster.with(workers: [
            .init(environment: "production") { _ in throw HandlerError.invalidArgument("mac is odd") },
        ], journal: journal) { cluster in
            guard case .unanswered(let why) = await cluster.lookup(Self.mac) else {
                Issue.record("a refused request was answered")
                return
            }
            #expect(why.contains("invalid_argument: mac is odd"), "\(why)")
            #expect(cluster.logs["production"]?.all == [.started], "the handler ran once")
        }
    }
}
