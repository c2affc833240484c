import Dispatch
@testable import LeaseInventory
import Testing

@Suite("A lookup's time limit")
struct WithDeadlineTests {
    @Test("a wait cancelled from outside ends as a cancellation, not as a timeout, also when the body is slow to notice", .timeLimit(.minutes(5)))
    func cancellationIsNotATimeout() async {
        // A PostgreSQL pool waiting for a connection notices cancellation late, so the timer
        // child ended first and the caller's cancellation was taken for a timeout, which
        // hid a stuck pool from the probe. This body ignores cancellation for 50 ms.
        let wait = Task {
            try await withDeadline(.seconds(3600)) {
                await withCheckedContinuation { continuation in
                    DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) { continuation.resume() }
                }
            }
        }
        wait.cancel()
        do {
            try await wait.value
            Issue.record("a cancelled wait returned")
        } catch is CancellationError {
        } catch {
            Issue.record("a cancelled wait ended as \(error), not a cancellation")
        }
    }

    @Test("a body that outlasts the limit ends as unavailable, naming the limit")
    func timeoutIsUnavailable() async {
        do {
            try await withDeadline(.milliseconds(20)) { try await Task.sleep(for: .seconds(3600)) }
            Issue.record("the wait returned")
        } catch let error as InventoryError {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("no answer within"))
        } catch {
            Issue.record("ended as \(error)")
        }
    }
}
