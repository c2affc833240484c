/// Reconnect delays: exponential with jitter, capped, and reset after a healthy connection.
/// A value type with the random source injected, so tests see exact numbers.
public struct Backoff: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// The first delay. Default 1 s.
        public var initial: Duration
        /// The largest delay. Default 60 s.
        public var maximum: Duration
        /// Growth per failed attempt. Default 2.
        public var multiplier: Double
        /// Each delay is moved by up to this fraction either way. Default 0.2.
        public var jitter: Double

        public init(initial: Duration = .seconds(1), maximum: Duration = .seconds(60), multiplier: Double = 2, jitter: Double = 0.2) {
            self.initial = initial
            self.maximum = maximum
            self.multiplier = multiplier
            self.jitter = jitter
        }
    }

    public let configuration: Configuration
    private var current: Duration

    public init(_ configuration: Configuration) {
        self.configuration = configuration
        self.current = configuration.initial
    }

    /// The next delay; `random` gives a number in 0..<1 (default: the system generator).
    public mutating func next(random: Double = Double.random(in: 0..<1)) -> Duration {
        let base = current
        current = min(current * configuration.multiplier, configuration.maximum)
        let factor = 1 + configuration.jitter * (2 * random - 1)
        return min(base * factor, configuration.maximum)
    }

    /// Back to the initial delay, after a connection that was healthy.
    public mutating func reset() {
        current = configuration.initial
    }
}
