import Foundation
import GatewayAdminClient
import GatewayProtocol
import LeaseInventory
import Testing

/// From a real dnsmasq lease to a name in the hosts file: dnsmasq and a DHCP client in
/// network namespaces the test creates, a real gateway and three environment workers.
@Suite(
    "DHCP leases to hosts file",
    .serialized, .timeLimit(.minutes(3)),
    .enabled(if: NetworkLab.isAvailable, "needs root, iproute2, dnsmasq, dnsmasq-utils and busybox (scripts/install-deps.sh installs them)")
)
struct DHCPTests {
    let known = SampleInventory.Entry("vps-lease-1", mac: "52:54:00:ee:00:01", ip: "10.250.0.1", organization: "org-lease")

    /// The lab, dnsmasq, a gateway watching dnsmasq's files and three workers.
    func withLab(
        gatewayArguments: [String] = [],
        productionArguments: [String] = [],
        _ body: (Cluster, NetworkLab, TestProcess) async throws -> Void
    ) async throws {
        try await Cluster.with { cluster in
            let lab = try await NetworkLab.make(in: cluster)
            _ = try lab.startDnsmasq(in: cluster, directory: cluster.directory)
            let ready1 = await poll(timeout: .seconds(20)) { FileManager.default.fileExists(atPath: cluster.directory + "/dnsmasq.pid") }
            #expect(ready1)
            let gateway = try await cluster.startGateway(dhcpArguments(cluster) + gatewayArguments)
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [known]), productionArguments)
            try cluster.startWorker(environment: "beta", inventory: try cluster.inventory("beta"))
            try cluster.startWorker(environment: "dev", inventory: try cluster.inventory("dev"))
            try await cluster.waitForClients(["production-1", "beta-1", "dev-1"])
            try await body(cluster, lab, gateway)
        }
    }

    func dhcpArguments(_ cluster: Cluster) -> [String] {
        [
            "--dhcp-leases", cluster.directory + "/dnsmasq.leases", "--dhcp-hosts", cluster.directory + "/vps-hosts",
            "--dnsmasq-pid-file", cluster.directory + "/dnsmasq.pid", "--reconcile-interval", "2s",
        ]
    }

    static func answers(_ lab: NetworkLab, _ name: String, with address: String, in cluster: Cluster) async -> Bool {
        await lab.resolve(name, in: cluster).contains(address)
    }

    func hostsFile(_ cluster: Cluster) -> String {
        (try? String(contentsOfFile: cluster.directory + "/vps-hosts", encoding: .utf8)) ?? ""
    }

    func leases(_ cluster: Cluster) async throws -> AdminListLeasesResponse {
        try await AdminClient.connect(socketPath: cluster.adminSocket) { try await $0.listLeases() }
    }

    @Test("a lease with a non-VPS hostname and a MAC production knows lands in the hosts file, and dnsmasq answers the VPS id")
    func leaseToName() async throws {
        try await withLab { cluster, lab, _ in
            let address = try await lab.takeLease(mac: known.mac, hostname: "customer-box", in: cluster)
            let ready2 = await poll(timeout: .seconds(10)) { hostsFile(cluster).contains("\(address) vps-lease-1\n") }
            #expect(ready2, "hosts: \(hostsFile(cluster))")
            let answer = await poll(timeout: .seconds(20)) { await Self.answers(lab, "vps-lease-1", with: address, in: cluster) }
            let said = answer ? "" : await lab.resolve("vps-lease-1", in: cluster)
            #expect(answer, "dnsmasq should answer vps-lease-1 with \(address); it said: \(said)")
            let lease = try await leases(cluster).leases.first { $0.mac == known.mac }
            #expect(lease?.state == "found")
            #expect(lease?.organizationID == "org-lease")
        }
    }

    @Test("a MAC nobody knows gets no line and is remembered as not found")
    func unknownMAC() async throws {
        try await withLab { cluster, lab, _ in
            let address = try await lab.takeLease(mac: "52:54:00:ee:99:99", hostname: "stranger", in: cluster)
            let remembered = await poll(timeout: .seconds(10)) {
                (try? await leases(cluster).leases.first { $0.ip == address }?.state) == "not_found"
            }
            #expect(remembered)
            #expect(!hostsFile(cluster).contains(address))
        }
    }

    @Test("a lease that ends drops its line")
    func leaseEnds() async throws {
        try await withLab { cluster, lab, _ in
            let address = try await lab.takeLease(mac: known.mac, hostname: "customer-box", in: cluster)
            let ready3 = await poll(timeout: .seconds(10)) { hostsFile(cluster).contains("\(address) vps-lease-1") }
            #expect(ready3)
            try await lab.release(address, mac: known.mac, in: cluster)
            let ready4 = await poll(timeout: .seconds(10)) { !hostsFile(cluster).contains("vps-lease-1") }
            #expect(ready4, "hosts: \(hostsFile(cluster))")
        }
    }

    @Test("a gateway killed with SIGKILL during the lookup still writes the line after its restart")
    func crashDuringLookup() async throws {
        // Long enough for the test to see the call pending and kill the gateway first on a busy
        // machine; the replay after the restart waits as long again.
        try await withLab(productionArguments: ["--simulate-latency", "5s"]) { cluster, lab, gateway in
            let address = try await lab.takeLease(mac: known.mac, hostname: "customer-box", in: cluster)
            let pending = await poll(timeout: .seconds(10)) {
                (try? await leases(cluster).leases.first { $0.ip == address }?.state) == "pending"
            }
            #expect(pending)
            gateway.signal(SIGKILL)
            await gateway.waitForExit()
            #expect(!hostsFile(cluster).contains("vps-lease-1"))
            try await cluster.startGateway(dhcpArguments(cluster))
            let ready5 = await poll(timeout: .seconds(45)) { hostsFile(cluster).contains("\(address) vps-lease-1") }
            try #require(ready5, "hosts: \(hostsFile(cluster))")
            let journal = try await cluster.run(["journal", "list", "--method", "FindVPSByLease", "--json", "--journal", cluster.journal])
            #expect(journal.output.contains("\"origin\":\"dhcp\""))
        }
    }
}
