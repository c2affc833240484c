import GatewayProtocol
import Synchronization

/// Final answers by request id, kept for a while: a request id the gateway sends again (a
/// retry after its crash, or after a stream dropped) is answered from here, so a handler
/// with side effects runs once per request id within the cache's reach.
///
/// Only answers that would not change on a retry are kept (found, not found, invalid
/// argument, unimplemented); a deadline or an internal error is worth running again.
///
/// Entries are found by a 64-bit hash of the request id, and a found entry counts only if
/// its answer carries the same id. Nearly every request is a miss (a retry is rare), and
/// with `String` keys each miss on a full cache (100,000 answers by default) compared the id
/// with the stored ids on its probe path, each a pointer away in memory, and hashed the
/// whole id four times per request: 5 % of a loaded worker's CPU in perf. Two ids with the
/// same hash share a slot (the chance that any two of 100,000 answers do is about 3 in
/// 10^10): the later answer replaces the earlier, whose retry then runs its handler again;
/// neither is ever answered with the other's.
final class ResponseCache: Sendable {
    private struct Entry {
        var response: GatewayResponse
        var expires: ContinuousClock.Instant
    }

    private struct State {
        var entries: [Int: Entry] = [:]
        /// Keys in insertion order, for evicting the oldest beyond capacity.
        var order: [Int] = []
        var head = 0
    }

    private let capacity: Int
    private let lifetime: Duration
    /// The slot of a request id: its hash value (seeded per process, so not predictable from
    /// outside); a test passes one that collides.
    private let key: @Sendable (String) -> Int
    private let state = Mutex(State())

    init(capacity: Int, lifetime: Duration, key: @escaping @Sendable (String) -> Int = { $0.hashValue }) {
        self.capacity = max(capacity, 0)
        self.lifetime = lifetime
        self.key = key
    }

    func response(for requestID: String, now: ContinuousClock.Instant = .now) -> GatewayResponse? {
        let key = key(requestID)
        return state.withLock { state in
            guard let entry = state.entries[key], entry.response.requestID == requestID else { return nil }
            guard entry.expires > now else {
                state.entries[key] = nil
                return nil
            }
            return entry.response
        }
    }

    func store(_ response: GatewayResponse, now: ContinuousClock.Instant = .now) {
        guard capacity > 0, Self.isFinal(response) else { return }
        let key = key(response.requestID)
        state.withLock { state in
            if state.entries.updateValue(Entry(response: response, expires: now + lifetime), forKey: key) == nil {
                state.order.append(key)
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
