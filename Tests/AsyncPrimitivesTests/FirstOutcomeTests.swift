import AsyncPrimitives
import Synchronization
import Testing

@Suite("First outcome")
struct FirstOutcomeTests {
    @Test("the first decision wins, later ones are refused, and wait returns it whether it came before or after")
    func firstWins() async {
        let early = FirstOutcome<Int>()
        #expect(early.decide(1))
        #expect(!early.decide(2))
        #expect(await early.wait() == 1)

        let late = FirstOutcome<Int>()
        async let value = late.wait()
        #expect(late.decide(3))
        #expect(await value == 3)
    }

    @Test("a cancelled waiter gets the cancellation's value when one is given")
    func cancellation() async {
        let outcome = FirstOutcome<String>(onCancel: "cancelled")
        let waiter = Task { await outcome.wait() }
        waiter.cancel()
        #expect(await waiter.value == "cancelled")
        #expect(!outcome.decide("late"))
    }

    @Test("withDeadlineTimer returns the body's result when it is first, and otherwise the timeout once the cancelled body has unwound")
    func deadlineTimer() async {
        #expect(await withDeadlineTimer(.now + .seconds(60), orElse: "timed out") { "done" } == "done")

        let unwound = Mutex(false)
        let result = await withDeadlineTimer(.now + .milliseconds(20), orElse: "timed out") {
            defer { unwound.withLock { $0 = true } }
            while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(5)) }
            return "cancelled body"
        }
        #expect(result == "timed out")
        #expect(unwound.withLock { $0 }, "the body had unwound before withDeadlineTimer returned")
    }
}
