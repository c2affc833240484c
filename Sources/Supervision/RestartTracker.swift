/// When a child that exited comes back, after Erlang/OTP: exponential backoff with jitter,
/// reset after the child stayed up; and an intensity limit (at most N restarts within T),
/// past which the child is given up. A pure value: the supervisor feeds it exits.
public struct RestartTracker: Sendable {
    public struct Policy: Sendable, Hashable {
        public var initialDelay: Duration
        public var maxDelay: Duration
        public var intensity: Int
        public var period: Duration
        /// A run at least this long resets the backoff.
        public var stableAfter: Duration
        /// Each delay moves by up to this fraction either way.
        public var jitter: Double

        public init(initialDelay: Duration, maxDelay: Duration, intensity: Int, period: Duration, stableAfter: Duration, jitter: Double = 0.2) {
            self.initialDelay = initialDelay
            self.maxDelay = maxDelay
            self.intensity = intensity
            self.period = period
            self.stableAfter = stableAfter
            self.jitter = jitter
        }
    }

    public enum Decision: Sendable, Equatable {
        case restart(after: Duration)
        /// More than `intensity` restarts within `period`.
        case giveUp(restarts: Int)
    }

    public let policy: Policy
    private var exits: [ContinuousClock.Instant] = []
    private var nextDelay: Duration
    public private(set) var restarts = 0

    public init(policy: Policy) {
        self.policy = policy
        self.nextDelay = policy.initialDelay
    }

    /// A run that started at `startedAt` ended at `now`; `random` is in 0..<1.
    public mutating func exited(startedAt: ContinuousClock.Instant, now: ContinuousClock.Instant, random: Double) -> Decision {
        if now - startedAt >= policy.stableAfter { nextDelay = policy.initialDelay }
        exits = exits.filter { now - $0 < policy.period } + [now]
        if exits.count > policy.intensity { return .giveUp(restarts: exits.count - 1) }
        let delay = min(nextDelay * (1 + policy.jitter * (2 * random - 1)), policy.maxDelay)
        nextDelay = min(nextDelay * 2, policy.maxDelay)
        restarts += 1
        return .restart(after: delay)
    }
}
