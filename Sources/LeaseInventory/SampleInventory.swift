import Foundation
import GRDB

/// Creates inventory files: empty ones with the platform's tables, or ones with sample rows
/// for local runs and benchmarks.
public enum SampleInventory {
    /// A sample VPS: its id, organization, MAC and leased IP.
    public struct Entry: Sendable, Hashable {
        public var vpsID: String
        public var organizationID: String
        public var mac: String
        public var ip: String

        public init(vpsID: String, organizationID: String, mac: String, ip: String) {
            self.vpsID = vpsID
            self.organizationID = organizationID
            self.mac = mac
            self.ip = ip
        }
    }

    /// The rows `create(at:environment:rows:)` writes for an environment: deterministic, so
    /// scripts can look them up. Environment number `n` (production 1, beta 2, dev 3, others
    /// by name) owns MACs `52:54:00:0n:xx:xx` and IPs `10.n.x.x`.
    public static func entries(environment: String, rows: Int) -> [Entry] {
        let number = environmentNumber(environment)
        return (1...max(rows, 1)).map { index in
            let high = (index >> 8) & 0xff, low = index & 0xff
            return Entry(
                vpsID: "vps-\(environment)-\(String(format: "%04d", index))",
                organizationID: "org-\(environment)-\(index % 7 + 1)",
                mac: String(format: "52:54:00:%02x:%02x:%02x", number, high, low),
                ip: "10.\(number).\(high).\(low)"
            )
        }
    }

    /// Writes a new inventory at `path` (replacing none: the file must not exist) with the
    /// platform's tables and `rows` sample VPSs (0 for an empty one).
    public static func create(at path: String, environment: String, rows: Int) throws {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw InventoryError(code: .unreadable, message: "'\(path)' already exists; remove it first or choose another path")
        }
        do {
            let database = try DatabaseQueue(path: path)
            try database.write { db in
                try db.execute(sql: InventorySchema.createStatements)
                guard rows > 0 else { return }
                for entry in entries(environment: environment, rows: rows) {
                    try db.execute(
                        sql: "INSERT INTO vps_instances (id, organization_id, mac_address, deleted_at) VALUES (?, ?, ?, NULL)",
                        arguments: [entry.vpsID, entry.organizationID, entry.mac]
                    )
                    try db.execute(
                        sql: """
                            INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address, is_public, expires_at, gateway_node)
                            VALUES (?, ?, ?, ?, ?, 0, datetime('now', '+1 day'), 'local')
                            """,
                        arguments: ["lease-\(entry.vpsID)", entry.vpsID, entry.organizationID, entry.mac, entry.ip]
                    )
                }
            }
            try database.close()
        } catch {
            throw InventoryError(code: .unreadable, message: "cannot create inventory '\(path)'", cause: error)
        }
    }

    static func environmentNumber(_ environment: String) -> Int {
        switch environment {
        case "production": 1
        case "beta": 2
        case "dev": 3
        default: 4 + Int(environment.utf8.reduce(UInt32(0)) { ($0 &* 31) &+ UInt32($1) } % 200)
        }
    }
}
