import AsyncPrimitives
import GatewayProtocol
import Testing

@Suite("Deadline wait")
struct DeadlineWaitTests {
    @Test("returns true once the deadline passed, not before it")
    func reachesTheDeadline() async {
        let deadline = ContinuousClock.now + .milliseconds(80)
        #expect(await waitUntil(deadline))
        #expect(ContinuousClock.now >= deadline)
    }

    @Test("a deadline already past returns true at once")
    func pastDeadline() async {
        #expect(await waitUntil(.now - .seconds(1)))
    }

    @Test("cancelling the waiting task returns false long before the deadline")
    func cancellationEndsTheWait() async {
        let started = ContinuousClock.now
        let waiter = Task { await waitUntil(.now + .seconds(60)) }
        try? await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        #expect(await waiter.value == false)
        #expect(ContinuousClock.now - started < .seconds(30))
    }

    @Test("many short waits, cancelled and not, all end")
    func manyWaits() async {
        await withTaskGroup(of: Bool.self) { group in
            for index in 0..<2_000 {
                group.addTask { await waitUntil(.now + .milliseconds(index % 2 == 0 ? 1 : 10_000)) }
            }
            var reached = 0
            for _ in 0..<1_000 { if await group.next() == true { reached += 1 } }
            group.cancelAll()
            var cancelled = 0
            for await result in group where !result { cancelled += 1 }
            #expect(reached == 1_000)
            #expect(cancelled == 1_000)
        }
    }
}
