import Supervision
import Testing

@Suite("Restart policy")
struct RestartTrackerTests {
    let policy = RestartTracker.Policy(
        initialDelay: .milliseconds(100), maxDelay: .seconds(30), intensity: 5, period: .seconds(60),
        stableAfter: .seconds(10), jitter: 0.2
    )
    let start = ContinuousClock.now

    func delay(_ decision: RestartTracker.Decision) -> Duration? {
        if case .restart(let after) = decision { return after }
        return nil
    }

    @Test("the delay doubles from the initial delay up to the maximum, and jitter stays within its fraction")
    func backoffDoublesAndIsCapped() {
        var tracker = RestartTracker(policy: .init(
            initialDelay: .milliseconds(100), maxDelay: .seconds(1), intensity: 100, period: .seconds(60), stableAfter: .seconds(10)
        ))
        var delays: [Duration] = []
        for second in 0..<6 {
            let now = start + .seconds(second)
            delays.append(delay(tracker.exited(startedAt: now - .milliseconds(10), now: now, random: 0.5)) ?? .zero)
        }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])

        var jittered = RestartTracker(policy: policy)
        let low = delay(jittered.exited(startedAt: start, now: start + .milliseconds(1), random: 0))
        var other = RestartTracker(policy: policy)
        let high = delay(other.exited(startedAt: start, now: start + .milliseconds(1), random: 0.999_999))
        #expect(low == .milliseconds(80))
        #expect(high.map { $0 > .milliseconds(119) && $0 <= .milliseconds(120) } == true)
    }

    @Test("a child that stayed up for stable_after starts again from the initial delay")
    func stableRunResetsBackoff() {
        var tracker = RestartTracker(policy: policy)
        _ = tracker.exited(startedAt: start, now: start + .seconds(1), random: 0.5)
        let second = delay(tracker.exited(startedAt: start + .seconds(1), now: start + .seconds(2), random: 0.5))
        #expect(second == .milliseconds(200))
        let afterStableRun = delay(tracker.exited(startedAt: start + .seconds(2), now: start + .seconds(13), random: 0.5))
        #expect(afterStableRun == .milliseconds(100))
        #expect(tracker.restarts == 3)
    }

    @Test("more than intensity exits within the period gives the child up")
    func intensityLimitGivesUp() {
        var tracker = RestartTracker(policy: policy)
        for index in 0..<5 {
            let now = start + .seconds(index)
            #expect(delay(tracker.exited(startedAt: now, now: now + .milliseconds(5), random: 0.5)) != nil)
        }
        let sixth = tracker.exited(startedAt: start + .seconds(5), now: start + .seconds(5) + .milliseconds(5), random: 0.5)
        #expect(sixth == .giveUp(restarts: 5))
    }

    @Test("exits older than the period no longer count toward the intensity limit")
    func oldExitsLeaveTheWindow() {
        var tracker = RestartTracker(policy: policy)
        for index in 0..<5 {
            _ = tracker.exited(startedAt: start + .seconds(index), now: start + .seconds(index), random: 0.5)
        }
        // 61 s after the first exit, only four of the five are inside the 60 s window.
        let later = tracker.exited(startedAt: start + .seconds(61), now: start + .seconds(61), random: 0.5)
        #expect(delay(later) != nil)
    }
}
