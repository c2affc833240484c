import Foundation
import LeaseInventory
import Testing

/// The lease file's directory under the gateway's feet: moved away and re-created, as a
/// package upgrade or a restore does. The timed reconcile is set far beyond the test's time
/// limit, so only a re-armed watch can bring the new lease in.
@Suite("Lease directory", .timeLimit(.minutes(5)))
struct LeaseDirectoryTests {
    let first = SampleInventory.Entry("vps-dir-1", mac: "52:54:00:dd:00:01", ip: "10.251.0.1")
    let second = SampleInventory.Entry("vps-dir-2", mac: "52:54:00:dd:00:02", ip: "10.251.0.2")

    func leaseLine(_ entry: SampleInventory.Entry) -> String {
        "\(Int(Date().timeIntervalSince1970) + 3600) \(entry.mac) \(entry.ip) guest-\(entry.vpsID) *\n"
    }

    func hosts(_ cluster: Cluster) -> String {
        (try? String(contentsOfFile: cluster.directory + "/vps-hosts", encoding: .utf8)) ?? ""
    }

    @Test("a lease directory moved away and re-created is watched again at once, and the log says so")
    func replacedDirectoryRearmed() async throws {
        try await Cluster.with { cluster in
            let leases = cluster.directory + "/leases"
            try FileManager.default.createDirectory(atPath: leases, withIntermediateDirectories: false)
            let gateway = try await cluster.startGateway([
                "--journal", "off", "--dhcp-leases", leases + "/dnsmasq.leases", "--dhcp-hosts", cluster.directory + "/vps-hosts",
                "--reconcile-interval", "1h",
            ])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [first, second]))
            try await cluster.waitForClients(["production-1"])

            try leaseLine(first).write(toFile: leases + "/dnsmasq.leases", atomically: true, encoding: .utf8)
            let firstListed = await poll(timeout: .seconds(20)) { hosts(cluster).contains("\(first.ip) vps-dir-1\n") }
            #expect(firstListed, "hosts: \(hosts(cluster))")

            try FileManager.default.moveItem(atPath: leases, toPath: leases + ".old")
            #expect(await poll(timeout: .seconds(10)) { gateway.log.contains("the lease file's directory is gone") })
            try FileManager.default.createDirectory(atPath: leases, withIntermediateDirectories: false)
            #expect(await poll(timeout: .seconds(10)) { gateway.log.contains("the lease file's directory was replaced; watching the new one") })
            try (leaseLine(first) + leaseLine(second)).write(toFile: leases + "/dnsmasq.leases", atomically: true, encoding: .utf8)
            let secondListed = await poll(timeout: .seconds(20)) { hosts(cluster).contains("\(second.ip) vps-dir-2\n") }
            #expect(secondListed, "a lease written into the new directory must not wait for the hourly reconcile; hosts: \(hosts(cluster))")
        }
    }
}
