import GatewayProtocol
import Synchronization
import Telemetry

/// The metrics counted on every call, with their handles resolved once per label set: a
/// registry lookup builds the family's name, a label array and a hashed key under a lock,
/// and a loaded gateway made eight of them per call (two for the call, two per worker for
/// its request and answer), about 3 % of its CPU.
struct HotMetrics: Sendable {
    let calls: CallMetrics
    let streamIn: StreamMessageCounters
    let streamOut: StreamMessageCounters

    init(_ metrics: MetricsRegistry) {
        calls = CallMetrics(metrics, methodLimit: 32)
        // The types each direction carries start at zero, so a rate over them is defined from
        // the first scrape; anything else is still counted, through the registry.
        streamIn = StreamMessageCounters(metrics, direction: "in", expected: [.register, .heartbeat, .response, .drain])
        streamOut = StreamMessageCounters(metrics, direction: "out", expected: [.registered, .heartbeat, .request, .cancel, .drain])
    }
}

/// Finished admin calls by method and outcome, and their durations by method. Method names
/// come from outside: at most `methodLimit` distinct ones get series of their own, the rest
/// are counted as `other`, so a caller cannot grow the exposition.
final class CallMetrics: Sendable {
    private struct Series {
        let durations: MetricsRegistry.HistogramHandle
        var calls: [String: MetricsRegistry.CounterHandle] = [:]
    }

    private static let other = "other"
    private let metrics: MetricsRegistry
    private let methodLimit: Int
    private let series = Mutex<[String: Series]>([:])

    init(_ metrics: MetricsRegistry, methodLimit: Int) {
        self.metrics = metrics
        self.methodLimit = methodLimit
    }

    func record(method: String, outcome: String, duration: Duration) {
        let (calls, durations) = series.withLock { series in
            if let known = series[method], let calls = known.calls[outcome] { return (calls, known.durations) }
            let methods = series.count - (series[Self.other] == nil ? 0 : 1)
            let label = series[method] != nil || (methods < methodLimit && method.utf8.count <= 64 && !method.isEmpty) ? method : Self.other
            var entry = series[label] ?? Series(durations: metrics.histogram(Metric.callDuration, label))
            let calls = entry.calls[outcome] ?? metrics.counter(Metric.calls, label, outcome)
            entry.calls[outcome] = calls
            series[label] = entry
            return (calls, entry.durations)
        }
        calls.increment()
        durations.record(duration)
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
