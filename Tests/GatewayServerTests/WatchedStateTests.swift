import AsyncPrimitives
import GatewayProtocol
import Synchronization
import Testing

@Suite("Watched state")
struct WatchedStateTests {
    @Test("a waiter returns once an update satisfies its condition, not before")
    func waiterResumesOnSatisfyingUpdate() async {
        let state = WatchedState<Set<String>>([])
        let returned = Mutex(false)
        let waiter = Task {
            await state.wait { $0.isSuperset(of: ["listening", "recovered"]) }
            returned.withLock { $0 = true }
        }
        state.update { _ = $0.insert("listening") }
        try? await Task.sleep(for: .milliseconds(50))
        #expect(returned.withLock { $0 } == false, "one condition of two is not enough")
        state.update { _ = $0.insert("recovered") }
        await waiter.value
        #expect(returned.withLock { $0 })
    }

    @Test("a condition already met returns at once")
    func metConditionReturnsAtOnce() async {
        let state = WatchedState(3)
        await state.wait { $0 == 3 }
    }

    @Test("cancelling a waiting task ends its wait without the condition")
    func cancellationEndsTheWait() async {
        let state = WatchedState(false)
        let waiter = Task { await state.wait { $0 } }
        try? await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await waiter.value
        #expect(state.value == false)
    }
}
