/// The platform's own table shapes, so a worker can read a copy of the real database.
/// Only the columns the lookup reads are required; other columns are ignored.
public enum InventorySchema {
    /// Columns the lookup reads, per table.
    static let required: [(table: String, columns: [String])] = [
        ("vps_instances", ["id", "organization_id", "mac_address", "deleted_at"]),
        ("dhcp_leases", ["id", "vps_id", "organization_id", "mac_address", "ip_address"]),
    ]

    /// The expression indexes that let a lookup of an unknown MAC use an index instead of a
    /// scan (MACs are compared after `lower(trim(...))`).
    static let lookupIndexes: [(table: String, expression: String, statement: String)] = [
        ("dhcp_leases", "lower(trim(mac_address))", "CREATE INDEX dhcp_leases_mac_normalized ON dhcp_leases(lower(trim(mac_address)));"),
        ("vps_instances", "lower(trim(mac_address))", "CREATE INDEX vps_instances_mac_normalized ON vps_instances(lower(trim(mac_address)));"),
        ("dhcp_leases", "ip_address", "CREATE INDEX dhcp_leases_ip_address ON dhcp_leases(ip_address);"),
    ]

    /// The DDL of a new inventory (the platform's shapes, plus indexes on the columns the
    /// lookup searches).
    public static let createStatements = """
        CREATE TABLE IF NOT EXISTS vps_instances (
            id TEXT PRIMARY KEY,
            organization_id TEXT,
            mac_address TEXT,
            deleted_at TIMESTAMP NULL
        );
        CREATE INDEX IF NOT EXISTS vps_instances_mac_address ON vps_instances(mac_address);
        CREATE INDEX IF NOT EXISTS vps_instances_mac_normalized ON vps_instances(lower(trim(mac_address)));
        CREATE TABLE IF NOT EXISTS dhcp_leases (
            id TEXT PRIMARY KEY,
            vps_id TEXT,
            organization_id TEXT,
            mac_address TEXT UNIQUE,
            ip_address TEXT,
            is_public BOOLEAN,
            expires_at TIMESTAMP,
            gateway_node TEXT
        );
        CREATE INDEX IF NOT EXISTS dhcp_leases_ip_address ON dhcp_leases(ip_address);
        CREATE INDEX IF NOT EXISTS dhcp_leases_mac_normalized ON dhcp_leases(lower(trim(mac_address)));
        """
}
