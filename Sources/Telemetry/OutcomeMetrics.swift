import Synchronization

/// A counter by name and outcome and a duration histogram by name, recorded together once per
/// call or request, with their handles resolved once per label set: a registry lookup builds
/// a label array and a hashed key under a lock, twice per record.
///
/// Names come from outside (method names): at most `nameLimit` distinct ones get series of
/// their own, the rest are counted as `other`, so a peer cannot grow the exposition.
public final class OutcomeMetrics: Sendable {
    private struct Series {
        let durations: MetricsRegistry.HistogramHandle
        var counts: [String: MetricsRegistry.CounterHandle] = [:]
    }

    private static let other = "other"
    private let registry: MetricsRegistry
    private let counts: MetricFamily
    private let durations: MetricFamily
    private let nameLimit: Int
    private let series = Mutex<[String: Series]>([:])

    /// - Parameters:
    ///   - counts: a counter family labelled by name and outcome, in that order.
    ///   - durations: a histogram family labelled by name.
    public init(_ registry: MetricsRegistry, counts: MetricFamily, durations: MetricFamily, nameLimit: Int) {
        precondition(counts.labels.count == 2 && durations.labels.count == 1, "\(counts.name) takes a name and an outcome, \(durations.name) a name")
        self.registry = registry
        self.counts = counts
        self.durations = durations
        self.nameLimit = nameLimit
    }

    public func record(_ name: String, outcome: String, duration: Duration) {
        let (count, durations) = series.withLock { series in
            if let known = series[name], let count = known.counts[outcome] { return (count, known.durations) }
            let names = series.count - (series[Self.other] == nil ? 0 : 1)
            let label = series[name] != nil || (names < nameLimit && name.utf8.count <= 64 && !name.isEmpty) ? name : Self.other
            var entry = series[label] ?? Series(durations: registry.histogram(self.durations, label))
            let count = entry.counts[outcome] ?? registry.counter(counts, label, outcome)
            entry.counts[outcome] = count
            series[label] = entry
            return (count, entry.durations)
        }
        count.increment()
        durations.record(duration)
    }
}
