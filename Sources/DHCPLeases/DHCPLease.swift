// Public: leases carry parsed MAC addresses.
public import TextFormats

/// One line of dnsmasq's lease file.
public struct DHCPLease: Sendable, Hashable {
    /// Seconds since the epoch; 0 means the lease never expires.
    public var expiry: Int64
    public var mac: MACAddress
    public var ip: String
    /// Nil when the client sent none (`*`).
    public var hostname: String?
    public var clientID: String?

    public init(expiry: Int64, mac: MACAddress, ip: String, hostname: String?, clientID: String?) {
        self.expiry = expiry
        self.mac = mac
        self.ip = ip
        self.hostname = hostname
        self.clientID = clientID
    }

    public func isActive(at now: Int64) -> Bool { expiry == 0 || expiry > now }
}

/// What reading a lease file found besides the leases.
public struct LeaseFileSummary: Sendable, Hashable, Codable {
    public var active = 0
    public var expired = 0
    /// Lines that are not `<expiry> <mac> <ip> <hostname> [client-id]`.
    public var malformed = 0
    /// DHCPv6 leases (their second field is an IAID, not a MAC) and the `duid` line.
    public var ipv6 = 0

    public init() {}
}

/// Parses dnsmasq's lease file: `<expiry-epoch> <mac> <ip> <hostname|*> [client-id]` per
/// line. Expired and malformed lines are skipped and counted, never fatal.
public enum LeaseFile {
    public static func parse(_ text: Substring, now: Int64) -> (leases: [DHCPLease], summary: LeaseFileSummary) {
        var leases: [DHCPLease] = []
        var summary = LeaseFileSummary()
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first == "duid" {
                summary.ipv6 += 1
                continue
            }
            guard fields.count >= 4, fields.count <= 5, let expiry = Int64(first), expiry >= 0 else {
                summary.malformed += 1
                continue
            }
            let ip = String(fields[2])
            if ip.contains(":") {
                summary.ipv6 += 1  // a DHCPv6 lease: field 2 is an IAID, not a MAC
                continue
            }
            guard let mac = MACAddress(String(fields[1])), IPAddressText.isValid(ip), fields[3].count <= 253 else {
                summary.malformed += 1
                continue
            }
            let lease = DHCPLease(
                expiry: expiry, mac: mac, ip: ip,
                hostname: fields[3] == "*" ? nil : String(fields[3]),
                clientID: fields.count == 5 && fields[4] != "*" ? String(fields[4]) : nil
            )
            guard lease.isActive(at: now) else {
                summary.expired += 1
                continue
            }
            leases.append(lease)
        }
        summary.active = leases.count
        return (leases, summary)
    }
}
