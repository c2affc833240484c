import GatewayProtocol
import Synchronization

/// Final answers by request id, kept for a while: a request id the gateway sends again (a
/// retry after its crash, or after a stream dropped) is answered from here, so a handler
/// with side effects runs once per request id within the cache's reach.
///
/// Only answers that would not change on a retry are kept (found, not found, invalid
/// argument, unimplemented); a deadline or an internal error is worth running again.
final class ResponseCache: Sendable {
    private struct Entry {
        var response: GatewayResponse
        var expires: ContinuousClock.Instant
    }

    private struct State {
        var entries: [String: Entry] = [:]
        /// Insertion order, for evicting the oldest beyond capacity.
        var order: [String] = []
        var head = 0
    }

    private let capacity: Int
    private let lifetime: Duration
    private let state = Mutex(State())

    init(capacity: Int, lifetime: Duration) {
        self.capacity = max(capacity, 0)
        self.lifetime = lifetime
    }

    func response(for requestID: String, now: ContinuousClock.Instant = .now) -> GatewayResponse? {
        state.withLock { state in
            guard let entry = state.entries[requestID] else { return nil }
            guard entry.expires > now else {
                state.entries[requestID] = nil
                return nil
            }
            return entry.response
        }
    }

    func store(_ response: GatewayResponse, now: ContinuousClock.Instant = .now) {
        guard capacity > 0, Self.isFinal(response) else { return }
        state.withLock { state in
            if state.entries.updateValue(Entry(response: response, expires: now + lifetime), forKey: response.requestID) == nil {
                state.order.append(response.requestID)
            }
            // From the front of the store order (oldest first): drop answers while the cache is
            // over its capacity or the oldest has expired. Answers expire in the order they were
            // stored, so the cache holds what the last lifetime answered instead of filling to
            // its capacity. An id stored again keeps its first place and, while live and within
            // capacity, stops the sweep early: an answer is only ever kept longer, never dropped
            // live below capacity. Ids already dropped (asked for after expiry) are skipped.
            while state.head < state.order.count {
                let oldest = state.order[state.head]
                if let entry = state.entries[oldest] {
                    guard state.entries.count > capacity || entry.expires <= now else { break }
                    state.entries[oldest] = nil
                }
                state.head += 1
            }
            // Compact the order list once its dead prefix dominates.
            if state.head > 1024 && state.head * 2 > state.order.count {
                state.order.removeFirst(state.head)
                state.head = 0
            }
        }
    }

    var count: Int { state.withLock { $0.entries.count } }

    static func isFinal(_ response: GatewayResponse) -> Bool {
        switch response.responseCode {
        case .ok, .notFound, .invalidArgument, .unimplemented: true
        case .unavailable, .deadlineExceeded, .internal: false
        }
    }
}
