import DHCPLeases
import GatewayProtocol
import Testing
import TextFormats

@Suite("Lease table")
struct LeaseTableTests {
    let settings = LeaseTable.Settings(vpsHostname: HostnamePattern("vps-*"), negativeTTL: 300, failureRetry: 30)

    func lease(_ mac: String, _ ip: String, hostname: String? = "client", expiry: Int64 = 2_000_000_000) -> DHCPLease {
        DHCPLease(expiry: expiry, mac: MACAddress(mac)!, ip: ip, hostname: hostname, clientID: nil)
    }

    @Test("a new lease is looked up once; while pending it is not asked again")
    func dedupe() {
        var table = LeaseTable(settings: settings)
        let leases = [lease("52:54:00:00:00:01", "10.0.0.1")]
        let first = table.observe(leases, now: 1000, limit: 10)
        let second = table.observe(leases, now: 1001, limit: 10)
        #expect(first.count == 1)
        #expect(second.isEmpty)
    }

    @Test("by default a lease is looked up whatever its hostname: a VM calling itself another VPS's id is asked about like any other")
    func hostnamesAreNotTrusted() {
        var table = LeaseTable(settings: LeaseTable.Settings(negativeTTL: 300, failureRetry: 30))
        let lookups = table.observe([lease("52:54:00:00:00:01", "10.0.0.1", hostname: "vps-production-0001")], now: 1000, limit: 10)
        #expect(lookups.count == 1)
    }

    @Test("lease states count active leases only, by what their lookup found, every state present")
    func stateCounts() {
        var table = LeaseTable(settings: settings)
        let leases = [
            lease("52:54:00:00:00:01", "10.0.0.1"), lease("52:54:00:00:00:02", "10.0.0.2"),
            lease("52:54:00:00:00:03", "10.0.0.3"), lease("52:54:00:00:00:04", "10.0.0.4", hostname: "vps-0004"),
            lease("52:54:00:00:00:05", "10.0.0.5", expiry: 1500),
        ]
        let lookups = table.observe(leases, now: 1000, limit: 10)
        table.resolved(lookups[0], .found(vpsID: "vps-1", organizationID: "org"), now: 1001)
        table.resolved(lookups[1], .notFound, now: 1001)
        #expect(table.stateCounts(now: 1001) == ["found": 1, "not_found": 1, "failed": 0, "pending": 2, "vps_hostname": 1])
        #expect(table.stateCounts(now: 1600)["pending"] == 1, "the expired lease no longer counts")
    }

    @Test("a cached not_found is forgotten when an environment arrives, and the lease is asked again")
    func forgetNotFound() {
        var table = LeaseTable(settings: LeaseTable.Settings(negativeTTL: 300, failureRetry: 30))
        let leases = [lease("52:54:00:00:00:01", "10.0.0.1")]
        let lookup = table.observe(leases, now: 1000, limit: 10)[0]
        table.resolved(lookup, .notFound, now: 1001)
        #expect(table.observe(leases, now: 1002, limit: 10).isEmpty, "not_found is believed")
        #expect(table.forgetNotFound() == 1)
        #expect(table.observe(leases, now: 1003, limit: 10).count == 1)
    }

    @Test("with the opt-in pattern, a lease whose hostname names a VPS needs no lookup")
    func vpsHostname() {
        var table = LeaseTable(settings: settings)
        let named = table.observe([lease("52:54:00:00:00:01", "10.0.0.1", hostname: "VPS-123")], now: 1000, limit: 10)
        let anonymous = table.observe([lease("52:54:00:00:00:02", "10.0.0.2", hostname: nil)], now: 1000, limit: 10)
        #expect(named.isEmpty)
        #expect(anonymous.count == 1)
    }

    @Test("a found owner goes into the hosts entries until the lease ends")
    func foundThenGone() {
        var table = LeaseTable(settings: settings)
        let active = lease("52:54:00:00:00:01", "10.0.0.1", expiry: 2000)
        let lookup = table.observe([active], now: 1000, limit: 10)[0]
        let changed = table.resolved(lookup, .found(vpsID: "vps-1", organizationID: "o"), now: 1001)
        #expect(changed)
        #expect(table.hostsEntries(now: 1500) == [HostsFile.Entry(ip: "10.0.0.1", name: "vps-1")])
        #expect(table.hostsEntries(now: 2000).isEmpty, "expired leases drop out")
        _ = table.observe([], now: 1600, limit: 10)
        #expect(!table.hostsEntries(now: 1600).isEmpty, "one read without the line may be a torn read")
        _ = table.observe([], now: 1603, limit: 10)
        #expect(table.hostsEntries(now: 1603).isEmpty, "released leases drop out after the grace period")
    }

    @Test("a resolved lease that comes back named after its VPS (dnsmasq reads our hosts file) keeps its entry")
    func renamedByDnsmasq() {
        var table = LeaseTable(settings: settings)
        let lookup = table.observe([lease("52:54:00:00:00:01", "10.0.0.1", hostname: "customer-box")], now: 1000, limit: 10)[0]
        table.resolved(lookup, .found(vpsID: "vps-1", organizationID: "o"), now: 1001)
        let again = table.observe([lease("52:54:00:00:00:01", "10.0.0.1", hostname: "vps-1")], now: 1002, limit: 10)
        #expect(again.isEmpty)
        #expect(table.hostsEntries(now: 1002) == [HostsFile.Entry(ip: "10.0.0.1", name: "vps-1")])
    }

    @Test("a lease missing from one read and back in the next keeps its owner")
    func tornRead() {
        var table = LeaseTable(settings: settings)
        let active = lease("52:54:00:00:00:01", "10.0.0.1")
        let lookup = table.observe([active], now: 1000, limit: 10)[0]
        table.resolved(lookup, .found(vpsID: "vps-1", organizationID: "o"), now: 1000)
        _ = table.observe([], now: 1001, limit: 10)
        let again = table.observe([active], now: 1002, limit: 10)
        #expect(again.isEmpty)
        #expect(table.hostsEntries(now: 1002) == [HostsFile.Entry(ip: "10.0.0.1", name: "vps-1")])
    }

    @Test("a found owner is asked again after the recheck time; it stays listed meanwhile and goes when nobody owns the lease any more")
    func recheck() {
        var table = LeaseTable(settings: LeaseTable.Settings(vpsHostname: HostnamePattern("vps-*"), negativeTTL: 300, failureRetry: 30, positiveRecheck: 600))
        let leases = [lease("52:54:00:00:00:01", "10.0.0.1")]
        let first = table.observe(leases, now: 1000, limit: 10)[0]
        table.resolved(first, .found(vpsID: "vps-1", organizationID: "o"), now: 1000)
        let early = table.observe(leases, now: 1599, limit: 10)
        #expect(early.isEmpty)
        let recheck = table.observe(leases, now: 1600, limit: 10)
        #expect(recheck.count == 1)
        #expect(table.hostsEntries(now: 1600) == [HostsFile.Entry(ip: "10.0.0.1", name: "vps-1")], "the old answer stays while rechecking")
        table.resolved(recheck[0], .notFound, now: 1601)
        #expect(table.hostsEntries(now: 1601).isEmpty, "a VPS that no longer resolves drops out")
    }

    @Test("not_found is remembered for the negative TTL, then asked again with a new request id")
    func negativeCache() {
        var table = LeaseTable(settings: settings)
        let leases = [lease("52:54:00:00:00:01", "10.0.0.1")]
        let first = table.observe(leases, now: 1000, limit: 10)[0]
        table.resolved(first, .notFound, now: 1000)
        let tooSoon = table.observe(leases, now: 1299, limit: 10)
        #expect(tooSoon.isEmpty)
        let second = table.observe(leases, now: 1300, limit: 10)
        #expect(second.count == 1)
        #expect(second[0].requestID != first.requestID)
    }

    @Test("a restarted gateway asks with the same request id within the bucket")
    func stableRequestIDs() {
        var before = LeaseTable(settings: settings)
        var after = LeaseTable(settings: settings)
        let leases = [lease("52:54:00:00:00:01", "10.0.0.1")]
        let first = before.observe(leases, now: 1200, limit: 10)[0].requestID
        let second = after.observe(leases, now: 1250, limit: 10)[0].requestID
        #expect(first == second)
    }

    @Test("at most `limit` lookups start; the rest wait for the next observe")
    func limit() {
        var table = LeaseTable(settings: settings)
        let leases = (1...5).map { lease("52:54:00:00:00:0\($0)", "10.0.0.\($0)") }
        let first = table.observe(leases, now: 1000, limit: 2)
        let rest = table.observe(leases, now: 1000, limit: 10)
        #expect(first.count == 2)
        #expect(rest.count == 3)
    }

    @Test("an outcome for a lease that changed its IP meanwhile is ignored")
    func staleOutcome() {
        var table = LeaseTable(settings: settings)
        let lookup = table.observe([lease("52:54:00:00:00:01", "10.0.0.1")], now: 1000, limit: 10)[0]
        _ = table.observe([lease("52:54:00:00:00:01", "10.0.0.2")], now: 1001, limit: 10)
        let changed = table.resolved(lookup, .found(vpsID: "vps-1", organizationID: "o"), now: 1002)
        #expect(!changed)
        #expect(table.hostsEntries(now: 1002).isEmpty)
    }

    @Test("hostname globs", arguments: [
        ("vps-*", "vps-123", true), ("vps-*", "VPS-abc", true), ("vps-*", "myvps-1", false), ("vps-*", "vps", false),
        ("*.vps.internal", "a.vps.internal", true), ("host-??", "host-01", true), ("host-??", "host-1", false),
    ])
    func globs(pattern: String, hostname: String, matches: Bool) {
        #expect(HostnamePattern(pattern).matches(hostname) == matches)
    }
}
