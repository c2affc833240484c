import GatewayWorker
import Testing

@Suite("Reconnect backoff")
struct BackoffTests {
    @Test("delays double from the initial delay up to the cap")
    func doublesToCap() {
        var backoff = Backoff(.init(initial: .seconds(1), maximum: .seconds(60), multiplier: 2, jitter: 0.2))
        // random 0.5 means no jitter.
        let delays = (0..<9).map { _ in backoff.next(random: 0.5) }
        #expect(delays == [1, 2, 4, 8, 16, 32, 60, 60, 60].map { Duration.seconds($0) })
    }

    @Test("jitter moves a delay by at most the configured fraction, never past the cap")
    func jitterBounds() {
        var low = Backoff(.init(initial: .seconds(10), maximum: .seconds(60), jitter: 0.2))
        var high = Backoff(.init(initial: .seconds(10), maximum: .seconds(60), jitter: 0.2))
        #expect(low.next(random: 0) == .seconds(8))
        #expect(high.next(random: 0.999_999) < .seconds(12.000_1))
        var capped = Backoff(.init(initial: .seconds(60), maximum: .seconds(60), jitter: 0.2))
        #expect(capped.next(random: 0.999) <= .seconds(60))
    }

    @Test("reset after a healthy connection starts again from the initial delay")
    func reset() {
        var backoff = Backoff(.init())
        _ = backoff.next(random: 0.5)
        _ = backoff.next(random: 0.5)
        backoff.reset()
        #expect(backoff.next(random: 0.5) == .seconds(1))
    }
}
