import GatewayProtocol
import Telemetry

/// The metrics counted on every call, with their handles resolved once per label set: a
/// registry lookup builds the family's name, a label array and a hashed key under a lock,
/// and a loaded gateway made eight of them per call (two for the call, two per worker for
/// its request and answer), about 3 % of its CPU.
struct HotMetrics: Sendable {
    let calls: OutcomeMetrics
    let streamIn: StreamMessageCounters
    let streamOut: StreamMessageCounters

    init(_ metrics: MetricsRegistry) {
        // Method names come from outside: a bounded set, so a caller cannot grow the exposition.
        calls = OutcomeMetrics(metrics, counts: Metric.calls, durations: Metric.callDuration, nameLimit: 32)
        // The types each direction carries start at zero, so a rate over them is defined from
        // the first scrape; anything else is still counted, through the registry.
        streamIn = StreamMessageCounters(metrics, direction: "in", expected: [.register, .heartbeat, .response, .drain])
        streamOut = StreamMessageCounters(metrics, direction: "out", expected: [.registered, .heartbeat, .request, .cancel, .drain])
    }
}

/// Messages on registered streams in one direction, by type.
package struct StreamMessageCounters: Sendable {
    private let metrics: MetricsRegistry
    private let direction: String
    private let expected: [MessageType: MetricsRegistry.CounterHandle]

    init(_ metrics: MetricsRegistry, direction: String, expected types: [MessageType]) {
        self.metrics = metrics
        self.direction = direction
        self.expected = Dictionary(uniqueKeysWithValues: types.map { ($0, metrics.counter(Metric.streamMessages, direction, $0.rawValue)) })
    }

    func count(_ type: MessageType?) {
        if let type, let counter = expected[type] {
            counter.increment()
        } else {
            metrics.increment(Metric.streamMessages, direction, type?.rawValue ?? "unknown")
        }
    }
}
