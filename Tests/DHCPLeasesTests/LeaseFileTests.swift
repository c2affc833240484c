import DHCPLeases
import Foundation
import GatewayProtocol
import Testing
import TextFormats

@Suite("Lease file parsing")
struct LeaseFileTests {
    let now: Int64 = 1_800_000_000

    @Test("a dnsmasq line gives expiry, MAC, IP, hostname and client id")
    func wellFormed() {
        let (leases, summary) = LeaseFile.parse("1800000600 52:54:00:AB:cd:01 10.0.0.5 client-a 01:52:54:00:ab:cd:01\n", now: now)
        #expect(leases == [DHCPLease(expiry: 1_800_000_600, mac: MACAddress("52:54:00:ab:cd:01")!, ip: "10.0.0.5", hostname: "client-a", clientID: "01:52:54:00:ab:cd:01")])
        #expect(summary.active == 1 && summary.malformed == 0)
    }

    @Test("a `*` hostname is no hostname; expiry 0 never expires")
    func starAndInfinite() {
        let (leases, _) = LeaseFile.parse("0 52:54:00:00:00:01 10.0.0.6 * *", now: now)
        #expect(leases.first?.hostname == nil)
        #expect(leases.first?.clientID == nil)
        #expect(leases.first?.isActive(at: .max) == true)
    }

    @Test("hostile lines are skipped and counted, never fatal", arguments: [
        ("1800000600 52:54:00:00:00:01 10.0.0.5", "truncated"),
        ("1800000600 52:54:00:00:00", "truncated"),
        ("soon 52:54:00:00:00:01 10.0.0.5 a *", "expiry not a number"),
        ("-5 52:54:00:00:00:01 10.0.0.5 a *", "negative expiry"),
        ("1800000600 zz:54:00:00:00:01 10.0.0.5 a *", "bad MAC"),
        ("1800000600 52:54:00:00:00:01 10.0.0.500 a *", "bad IP"),
        ("1800000600 52:54:00:00:00:01 10.0.0.5 a b c", "too many fields"),
        ("\u{0}\u{1}\u{2} binary junk", "binary"),
    ])
    func hostile(line: String, why: String) {
        let (leases, summary) = LeaseFile.parse((line + "\n1800000600 52:54:00:00:00:09 10.0.0.9 ok *\n")[...], now: now)
        #expect(leases.map(\.ip) == ["10.0.0.9"], "\(why)")
        #expect(summary.malformed == 1, "\(why)")
    }

    @Test("DHCPv6 leases and the duid line are counted apart, not as malformed")
    func ipv6() {
        let text = """
            duid 00:01:00:01:2c:3d:4e:5f:52:54:00:00:00:01
            1800000600 1234567 fd00::5 client-6 00:01:00:01:aa
            1800000600 52:54:00:00:00:01 10.0.0.5 client-4 *
            """
        let (leases, summary) = LeaseFile.parse(text[...], now: now)
        #expect(leases.count == 1)
        #expect(summary.ipv6 == 2)
        #expect(summary.malformed == 0)
    }

    @Test("expired leases are skipped and counted")
    func expired() {
        let (leases, summary) = LeaseFile.parse("1799999999 52:54:00:00:00:01 10.0.0.5 a *\n1800000001 52:54:00:00:00:02 10.0.0.6 b *", now: now)
        #expect(leases.map(\.ip) == ["10.0.0.6"])
        #expect(summary.expired == 1)
    }

    @Test("a large file parses in one pass: 100,000 lines")
    func large() {
        var text = ""
        for index in 0..<100_000 {
            text += "1800000600 52:54:00:\(String(format: "%02x:%02x:%02x", (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff)) 10.\((index >> 16) & 0xff).\((index >> 8) & 0xff).\(index & 0xff) h\(index) *\n"
        }
        let (leases, summary) = LeaseFile.parse(text[...], now: now)
        #expect(leases.count == 100_000)
        #expect(summary.malformed == 0)
    }
}
