import AsyncPrimitives
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Detached threads")
struct DetachedThreadTests {
    /// What a thread started with `scheduling` sees of itself: its name and its policy.
    private func startAndInspect(_ name: String, _ scheduling: ThreadScheduling) async -> (name: String, policy: Int32) {
        let seen = FirstOutcome<(name: String, policy: Int32)>()
        startDetachedThread(name: name, purpose: "a test thread", scheduling: scheduling) {
            let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
            _ = seen.decide((comm.trimmingCharacters(in: .newlines), sched_getscheduler(0)))
        }
        return await seen.wait()
    }

    @Test("a batch thread runs under SCHED_BATCH (3), a normal one under SCHED_OTHER (0), each with its name")
    func schedulingPolicy() async {
        let batch = await startAndInspect("vpsgw-test-b", .batch)
        #expect(batch.name == "vpsgw-test-b")
        #expect(batch.policy == 3)
        let normal = await startAndInspect("vpsgw-test-n", .normal)
        #expect(normal.name == "vpsgw-test-n")
        #expect(normal.policy == 0)
    }
}
