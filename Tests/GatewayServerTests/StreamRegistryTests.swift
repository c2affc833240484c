@testable import GatewayServer
import Testing

@Suite("Stream registry")
struct StreamRegistryTests {
    @Test("a newer stream with the same instance id replaces the older, and removing the older keeps the newer")
    func replacement() {
        var registry = StreamRegistry()
        let old = FakeClient("i1").connection
        let new = FakeClient("i1").connection
        #expect(registry.register(old) == nil)
        #expect(registry.register(new) === old)
        #expect(registry.remove(old) == false)
        #expect(registry.connections().map(\.id) == [new.id])
        #expect(registry.remove(new) == true)
        #expect(registry.count == 0)
    }

    @Test("an instance that re-registers in another environment leaves the old environment")
    func environmentChange() {
        var registry = StreamRegistry()
        registry.register(FakeClient("i1", environment: "beta").connection)
        registry.register(FakeClient("i1", environment: "dev").connection)
        #expect(registry.connections(environment: "beta").isEmpty)
        #expect(registry.connections(environment: "dev").count == 1)
    }

    @Test("eligibility follows the target's environment and instance and skips draining streams")
    func targeting() {
        var registry = StreamRegistry()
        let production = FakeClient("p1", environment: "production").connection
        let beta = FakeClient("b1", environment: "beta").connection
        let draining = FakeClient("d1", environment: "dev").connection
        for connection in [production, beta, draining] { registry.register(connection) }
        draining.setDraining()
        #expect(Set(registry.eligible(for: .all, method: "M").map(\.identity.instanceID)) == ["p1", "b1"])
        #expect(registry.eligible(for: CallTarget(environment: "beta"), method: "M").map(\.identity.instanceID) == ["b1"])
        #expect(registry.eligible(for: CallTarget(instanceID: "p1"), method: "M").map(\.identity.instanceID) == ["p1"])
        #expect(registry.eligible(for: CallTarget(environment: "beta", instanceID: "p1"), method: "M").isEmpty)
        #expect(registry.eligible(for: CallTarget(environment: "dev"), method: "M").isEmpty)
    }

    @Test("streams that list the method are preferred; when none lists it, all are asked")
    func methodLists() {
        var registry = StreamRegistry()
        registry.register(FakeClient("lists", methods: ["FindVPSByLease"]).connection)
        registry.register(FakeClient("legacy", methods: []).connection)
        registry.register(FakeClient("other", methods: ["Ping"]).connection)
        #expect(Set(registry.eligible(for: .all, method: "FindVPSByLease").map(\.identity.instanceID)) == ["lists", "legacy"])
        #expect(Set(registry.eligible(for: .all, method: "Ping").map(\.identity.instanceID)) == ["other", "legacy"])
        // The legacy stream (no list) may answer anything.
        #expect(registry.eligible(for: .all, method: "Nothing").map(\.identity.instanceID) == ["legacy"])

        var listed = StreamRegistry()
        listed.register(FakeClient("a", methods: ["Ping"]).connection)
        listed.register(FakeClient("b", methods: ["FindVPSByLease"]).connection)
        #expect(listed.eligible(for: .all, method: "Nothing").count == 2)
    }

    @Test("each registration advances the generation that waiting callers compare")
    func generation() {
        var registry = StreamRegistry()
        let before = registry.generation
        registry.register(FakeClient("i1").connection)
        #expect(registry.generation == before + 1)
    }
}
