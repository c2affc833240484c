import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Two network namespaces joined by a veth pair, made by the test and removed at its end: a
/// real dnsmasq serves DHCP and DNS on the server side, a real busybox `udhcpc` takes leases
/// on the client side. Addresses exist only inside the namespaces.
struct NetworkLab: Sendable {
    let server: String
    let client: String
    let serverInterface: String
    let clientInterface: String
    let subnet: String  // "10.77.N"
    var serverAddress: String { "\(subnet).1" }

    static let ip = "/usr/sbin/ip"
    static let dnsmasq = "/usr/sbin/dnsmasq"
    static let busybox = "/usr/bin/busybox"
    static let dhcpRelease = "/usr/bin/dhcp_release"

    /// Root and the three programs: what the DHCP end-to-end tests need.
    static var isAvailable: Bool {
        getuid() == 0 && [ip, dnsmasq, busybox, dhcpRelease].allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Creates the namespaces and the link; the cluster removes them at tear-down.
    static func make(in cluster: Cluster) async throws -> NetworkLab {
        let tag = String(format: "%05d%03d", getpid() % 100_000, Int.random(in: 0..<1000))
        let lab = NetworkLab(
            server: "vgw-s\(tag)", client: "vgw-c\(tag)",
            serverInterface: "vs\(tag)", clientInterface: "vc\(tag)",
            subnet: "10.77.\(Int.random(in: 1..<250))"
        )
        cluster.onTearDown {
            // Deleting a namespace deletes its end of the veth pair, and with it the pair.
            spawnAndWait(ip, ["netns", "del", lab.server])
            spawnAndWait(ip, ["netns", "del", lab.client])
        }
        for arguments in [
            ["netns", "add", lab.server],
            ["netns", "add", lab.client],
            ["link", "add", lab.serverInterface, "type", "veth", "peer", "name", lab.clientInterface],
            ["link", "set", lab.serverInterface, "netns", lab.server],
            ["link", "set", lab.clientInterface, "netns", lab.client],
            ["-n", lab.server, "addr", "add", "\(lab.serverAddress)/24", "dev", lab.serverInterface],
            ["-n", lab.server, "link", "set", lab.serverInterface, "up"],
            ["-n", lab.server, "link", "set", "lo", "up"],
            ["-n", lab.client, "link", "set", "lo", "up"],
            ["-n", lab.client, "link", "set", lab.clientInterface, "up"],
        ] {
            try await run(ip, arguments, in: cluster)
        }
        return lab
    }

    /// dnsmasq in the server namespace, serving DHCP from `directory`'s lease file and DNS
    /// with the gateway's hosts file.
    func startDnsmasq(in cluster: Cluster, directory: String) throws -> TestProcess {
        try cluster.spawn(
            name: "dnsmasq", executable: Self.ip,
            arguments: [
                "netns", "exec", server, Self.dnsmasq, "--keep-in-foreground", "--user=root",
                "--interface=\(serverInterface)", "--bind-interfaces", "--except-interface=lo",
                "--dhcp-range=\(subnet).50,\(subnet).99,2m", "--dhcp-leasefile=\(directory)/dnsmasq.leases",
                "--addn-hosts=\(directory)/vps-hosts", "--pid-file=\(directory)/dnsmasq.pid",
                "--no-resolv", "--no-hosts", "--log-dhcp", "--log-queries", "--log-facility=-",
            ],
            environment: [:]
        )
    }

    /// Takes a lease with `mac` and `hostname` and puts the address on the client's
    /// interface, as a DHCP client's script would; returns the address.
    func takeLease(mac: String, hostname: String, in cluster: Cluster) async throws -> String {
        try await Self.run(Self.ip, ["-n", client, "link", "set", clientInterface, "address", mac], in: cluster)
        let arguments = ["netns", "exec", client, Self.busybox, "udhcpc", "-i", clientInterface,
                         "-x", "hostname:\(hostname)", "-q", "-n", "-t", "5", "-T", "1", "-s", "/bin/true"]
        let output = try await Self.run(Self.ip, arguments, in: cluster)
        guard let range = output.range(of: "lease of "), let address = output[range.upperBound...].split(separator: " ").first else {
            throw ClusterError("udhcpc got no lease:\n\(output)")
        }
        try await Self.run(Self.ip, ["-n", client, "addr", "replace", "\(address)/24", "dev", clientInterface], in: cluster)
        return String(address)
    }

    /// Ends a lease the way dnsmasq's own tool does: a DHCPRELEASE from the server side
    /// (dnsmasq then drops it from the lease file).
    func release(_ address: String, mac: String, in cluster: Cluster) async throws {
        try await Self.run(Self.ip, ["netns", "exec", server, Self.dhcpRelease, serverInterface, address, mac], in: cluster)
    }

    /// Asks the server's dnsmasq for `name`'s A record from the client side.
    func resolve(_ name: String, in cluster: Cluster) async -> String {
        do {
            return try await Self.run(Self.ip, ["netns", "exec", client, Self.busybox, "nslookup", "-type=a", name, serverAddress], in: cluster)
        } catch {
            return "\(error)"
        }
    }

    /// Runs a short program to completion as one of the cluster's processes (stopped with it
    /// if a test fails midway); its output, or an error with it.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], in cluster: Cluster, timeout: Duration = .seconds(20)) async throws -> String {
        let process = try cluster.spawn(name: URL(fileURLWithPath: executable).lastPathComponent, executable: executable, arguments: arguments, environment: [:])
        guard let status = await process.waitForExit(timeout: timeout) else {
            throw ClusterError("\(executable) \(arguments.joined(separator: " ")) did not finish within \(timeout)")
        }
        guard status == 0 else {
            throw ClusterError("\(executable) \(arguments.joined(separator: " ")) exited \(status):\n\(process.log)")
        }
        return process.log
    }

    /// For tear-down, where nothing async can run: spawn and reap, ignoring the result.
    static func spawnAndWait(_ executable: String, _ arguments: [String]) {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, executable, nil, nil, argv, environ) == 0 else { return }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
}
