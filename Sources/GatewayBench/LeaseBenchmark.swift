import Foundation
public import GatewayAdminClient
import GatewayProtocol
import TextFormats
#if canImport(Glibc)
import Glibc
#endif

/// Measures the DHCP path of a running gateway through the files it shares with dnsmasq:
/// how long from a lease line appearing in the lease file to its `<ip> <vps-id>` line in the
/// hosts file, and what one reconcile of a large lease file costs.
public struct LeaseBenchmark: Sendable {
    /// A lease to add and the hosts line it must produce.
    public struct Lease: Sendable {
        public var mac: String
        public var ip: String
        public var vpsID: String

        public init(mac: String, ip: String, vpsID: String) {
            self.mac = mac
            self.ip = ip
            self.vpsID = vpsID
        }
    }

    public struct LatencyReport: Codable, Sendable {
        public var leases: Int
        public var timedOut: Int
        public var p50Us: UInt64
        public var p99Us: UInt64
        public var maxUs: UInt64

        enum CodingKeys: String, CodingKey {
            case leases, timedOut = "timed_out", p50Us = "p50_us", p99Us = "p99_us", maxUs = "max_us"
        }
    }

    public struct ReconcileReport: Codable, Sendable {
        public var leases: Int
        /// The gateway's own measure of its last reconciles (read, parse, diff, hosts file).
        public var reconcileUs: [UInt64]
        public var medianUs: UInt64

        enum CodingKeys: String, CodingKey {
            case leases, reconcileUs = "reconcile_us", medianUs = "median_us"
        }
    }

    public let leaseFile: String
    public let hostsFile: String

    public init(leaseFile: String, hostsFile: String) {
        self.leaseFile = leaseFile
        self.hostsFile = hostsFile
    }

    /// Appends the leases one at a time (as dnsmasq grants them) and waits, at most
    /// `timeout` each, for each one's hosts line. Starts from an empty lease file.
    public func measureLatency(_ leases: [Lease], timeout: Duration = .seconds(10), progress: @Sendable (Int) -> Void = { _ in }) async throws -> LatencyReport {
        try Data().write(to: URL(fileURLWithPath: leaseFile))
        let expiry = Int(Date().timeIntervalSince1970) + 3600
        var lines = ""
        var samples: [UInt64] = []
        var timedOut = 0
        for (index, lease) in leases.enumerated() {
            lines += "\(expiry) \(lease.mac) \(lease.ip) bench-\(index) *\n"
            let expected = "\(lease.ip) \(lease.vpsID)\n"
            let started = ContinuousClock.now
            try replace(leaseFile, with: lines)
            let deadline = started + timeout
            var seen = false
            // A measuring loop: bounded by the timeout, checking every 200 µs.
            while ContinuousClock.now < deadline {
                if let hosts = try? String(contentsOfFile: hostsFile, encoding: .utf8), hosts.contains(expected) {
                    seen = true
                    break
                }
                try await Task.sleep(for: .microseconds(200))
            }
            if seen {
                samples.append(UInt64((ContinuousClock.now - started).wholeMicroseconds))
            } else {
                timedOut += 1
            }
            if index % 100 == 99 { progress(index + 1) }
        }
        let sorted = samples.sorted()
        func percentile(_ p: Double) -> UInt64 {
            sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))]
        }
        return LatencyReport(leases: leases.count, timedOut: timedOut, p50Us: percentile(50), p99Us: percentile(99), maxUs: sorted.last ?? 0)
    }

    /// Writes `count` leases whose hostnames name VPSs (against a gateway started with
    /// `--vps-hostname-pattern 'vps-*'` there are no lookups: the cost measured is its reading
    /// and diffing), touches the file `rounds` times, and collects the
    /// gateway's reconcile durations from its admin API.
    public func measureReconcile(count: Int, rounds: Int, admin: AdminClient) async throws -> ReconcileReport {
        let expiry = Int(Date().timeIntervalSince1970) + 3600
        func line(_ index: Int, expiry: Int) -> String {
            "\(expiry) 52:54:01:\(String(format: "%02x:%02x:%02x", (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff)) 10.\(100 + (index >> 16) & 0xff).\((index >> 8) & 0xff).\(index & 0xff) vps-r\(index) *\n"
        }
        var text = ""
        text.reserveCapacity(count * 64)
        for index in 0..<(count - 1) { text += line(index, expiry: expiry) }
        var durations: [UInt64] = []
        for round in 0..<rounds {
            let before = try await admin.listLeases(summaryOnly: true).lastReconcile
            // A different last line each round, so the file really changes.
            try replace(leaseFile, with: text + line(count - 1, expiry: expiry + round + 1))
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                let status = try await admin.listLeases(summaryOnly: true)
                if status.lastReconcile != before && status.activeLeases >= count {
                    durations.append(status.lastReconcileUs)
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let sorted = durations.sorted()
        return ReconcileReport(leases: count, reconcileUs: durations, medianUs: sorted.isEmpty ? 0 : sorted[sorted.count / 2])
    }

    /// Whole-file replace, as dnsmasq would leave it for a reader: temp file and rename.
    private func replace(_ path: String, with text: String) throws {
        let temporary = path + ".bench-tmp"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary, path) == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }
}
