import Foundation
import GatewayProtocol
@testable import GatewayWorker
import Testing

@Suite("Worker response cache")
struct ResponseCacheTests {
    @Test("final answers are remembered by request id until they expire")
    func remembersUntilExpiry() {
        let cache = ResponseCache(capacity: 10, lifetime: .seconds(60))
        let now = ContinuousClock.now
        cache.store(.success(requestID: "r1", payload: Data([1])), now: now)
        #expect(cache.response(for: "r1", now: now + .seconds(59))?.payload == Data([1]))
        #expect(cache.response(for: "r1", now: now + .seconds(61)) == nil)
    }

    @Test("only answers a retry would not change are kept", arguments: [
        (ResponseCode.ok, true), (.notFound, true), (.invalidArgument, true), (.unimplemented, true),
        (.unavailable, false), (.deadlineExceeded, false), (.internal, false),
    ])
    func onlyFinalAnswers(code: ResponseCode, kept: Bool) {
        let cache = ResponseCache(capacity: 10, lifetime: .seconds(60))
        cache.store(code == .ok ? .success(requestID: "r", payload: Data()) : .failure(requestID: "r", code: code, error: "x"))
        #expect((cache.response(for: "r") != nil) == kept)
    }

    @Test("expired answers are dropped as new ones are stored, so the cache holds one lifetime's answers, not its capacity")
    func dropsExpiredOnStore() {
        let cache = ResponseCache(capacity: 100, lifetime: .seconds(60))
        let start = ContinuousClock.now
        for index in 1...10 { cache.store(.success(requestID: "old\(index)", payload: Data()), now: start + .seconds(index)) }
        // One asked for again after it expired (dropped then, its place in the order stays).
        #expect(cache.response(for: "old3", now: start + .seconds(64)) == nil)
        #expect(cache.count == 9)
        // At 64.5 s, old1…old4 are past their 60 s; old5…old10 are not.
        let later = start + .milliseconds(64_500)
        cache.store(.success(requestID: "new", payload: Data()), now: later)
        #expect(cache.count == 7)
        #expect(cache.response(for: "old4", now: later) == nil)
        #expect(cache.response(for: "old5", now: later) != nil)
        #expect(cache.response(for: "new", now: later) != nil)
    }

    @Test("two request ids in one slot never get each other's answer: the later replaces the earlier")
    func collidingIDs() {
        let cache = ResponseCache(capacity: 10, lifetime: .seconds(60), key: { _ in 7 })
        cache.store(.success(requestID: "first", payload: Data([1])))
        #expect(cache.response(for: "second") == nil)
        cache.store(.success(requestID: "second", payload: Data([2])))
        #expect(cache.response(for: "second")?.payload == Data([2]))
        #expect(cache.response(for: "first") == nil)
        #expect(cache.count == 1)
    }

    @Test("beyond its capacity the oldest answers are dropped first")
    func evictsOldest() {
        let cache = ResponseCache(capacity: 3, lifetime: .seconds(60))
        for index in 1...5 { cache.store(.success(requestID: "r\(index)", payload: Data())) }
        #expect(cache.count == 3)
        #expect(cache.response(for: "r1") == nil && cache.response(for: "r2") == nil)
        #expect(cache.response(for: "r5") != nil)
    }
}
