import Foundation
@testable import GatewayServer
import Testing

@Suite("Generated request ids")
struct RequestIDTests {
    @Test("an id is 32 lowercase hex digits that start with the time in milliseconds, so later ids sort after earlier ones")
    func timeOrdered() {
        // Mid-millisecond, so binary floating point cannot round a time into its neighbour.
        func at(_ milliseconds: Int) -> Date { Date(timeIntervalSince1970: (Double(milliseconds) + 0.5) / 1000) }
        let earlier = at(1_795_000_000_123)
        let id = RequestID.new(now: earlier)
        #expect(id.count == 32)
        #expect(id.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(id.prefix(12) == String(1_795_000_000_123, radix: 16).leftPadded(to: 12))
        let later = (1...100).map { RequestID.new(now: at(1_795_000_000_123 + $0)) }
        #expect(later.allSatisfy { $0 > id })
        #expect(later == later.sorted())
    }

    @Test("ids made in the same millisecond differ")
    func unique() {
        let now = Date()
        let ids = Set((0..<10_000).map { _ in RequestID.new(now: now) })
        #expect(ids.count == 10_000)
    }
}

private extension String {
    func leftPadded(to length: Int) -> String { String(repeating: "0", count: max(0, length - count)) + self }
}
