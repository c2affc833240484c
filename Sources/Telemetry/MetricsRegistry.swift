import Prometheus
import Synchronization

/// The metrics of one process, exported in Prometheus's text format.
///
/// Built on swift-prometheus's registry directly rather than through swift-metrics'
/// factory: the factory registers every metric without help text, and `promtool check
/// metrics` (what an operator's CI runs on an exposition) refuses metrics without HELP.
/// Handles are cached per label set, so recording costs a lock and a dictionary lookup;
/// ``counter(_:_:)`` and ``histogram(_:_:)`` give a handle to keep, which costs neither.
public final class MetricsRegistry: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let handles = Mutex<[Key: Handle]>([:])

    private struct Key: Hashable {
        var family: String
        var labels: [String]
    }

    private enum Handle: Sendable {
        case counter(Counter)
        case gauge(Gauge)
        case histogram(DurationHistogram)
    }

    public init() {}

    /// Adds `amount` to a counter.
    public func increment(_ family: MetricFamily, _ labels: String..., by amount: Int64 = 1) {
        if case .counter(let counter) = handle(family, labels) { counter.increment(by: amount) }
    }

    /// Sets a gauge.
    public func set(_ family: MetricFamily, _ labels: String..., to value: Double) {
        if case .gauge(let gauge) = handle(family, labels) { gauge.set(to: value) }
    }

    /// Records a duration into a histogram.
    public func record(_ family: MetricFamily, _ labels: String..., duration: Duration) {
        if case .histogram(let histogram) = handle(family, labels) { histogram.record(duration) }
    }

    /// A counter of one label set, looked up once: counting through it takes no lock and
    /// builds no key. For the counts made on every call (stream messages, call outcomes).
    public struct CounterHandle: Sendable {
        fileprivate let counter: Counter
        public func increment(by amount: Int64 = 1) { counter.increment(by: amount) }
    }

    /// A histogram of one label set, looked up once (see ``CounterHandle``).
    public struct HistogramHandle: Sendable {
        fileprivate let histogram: DurationHistogram
        public func record(_ duration: Duration) { histogram.record(duration) }
    }

    /// The counter of `family` with these label values, to keep and count through.
    public func counter(_ family: MetricFamily, _ labels: String...) -> CounterHandle {
        guard case .counter(let counter) = handle(family, labels) else { preconditionFailure("\(family.name) is not a counter") }
        return CounterHandle(counter: counter)
    }

    /// The histogram of `family` with these label values, to keep and record through.
    public func histogram(_ family: MetricFamily, _ labels: String...) -> HistogramHandle {
        guard case .histogram(let histogram) = handle(family, labels) else { preconditionFailure("\(family.name) is not a histogram") }
        return HistogramHandle(histogram: histogram)
    }

    /// The exposition, `text/plain; version=0.0.4`.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }

    private func handle(_ family: MetricFamily, _ labels: [String]) -> Handle {
        precondition(labels.count == family.labels.count, "\(family.name) takes labels \(family.labels), got \(labels.count) value(s)")
        let key = Key(family: family.name, labels: labels)
        return handles.withLock { handles in
            if let handle = handles[key] { return handle }
            let descriptor = MetricNameDescriptor(metricName: family.baseName, unitName: family.unit, helpText: family.help)
            let pairs = Array(zip(family.labels, labels))
            let handle: Handle
            switch family.kind {
            case .counter: handle = .counter(registry.makeCounter(descriptor: descriptor, labels: pairs))
            case .gauge: handle = .gauge(registry.makeGauge(descriptor: descriptor, labels: pairs))
            case .histogram(let buckets): handle = .histogram(registry.makeDurationHistogram(descriptor: descriptor, labels: pairs, buckets: buckets))
            }
            handles[key] = handle
            return handle
        }
    }
}
