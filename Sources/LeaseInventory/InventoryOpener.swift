public import Logging
public import ServiceLifecycle

/// Opens `--inventory` as the worker and `inventory check` do.
public enum InventoryOpener {
    /// An open inventory and, for PostgreSQL, the service (its pool and probe) that must run
    /// while it answers.
    public struct Opened: Sendable {
        public var inventory: any Inventory
        public var service: (any Service)?
        /// Indexes a fast lookup lacks, as statements; empty when all are there or unknown
        /// (a database not reachable at the start is checked once it is).
        public var missingIndexes: [String]
    }

    /// Opens the inventory at `url`. A SQLite file must exist and have the platform's tables.
    /// A PostgreSQL database with a wrong password, no such database or role, or missing
    /// tables is refused (a configuration problem); one that cannot be reached is not: the
    /// worker starts, answers `unavailable` and the probe connects once it is back
    /// (`requireReachable` false). `password` comes from a file, never from the URL.
    public static func open(url: String, password: String?, requireReachable: Bool = false, logger: Logger) async throws -> Opened {
        switch try InventoryLocation(url: url) {
        case .sqlite(let path):
            let inventory = try SQLiteInventory(path: path)
            return Opened(inventory: inventory, service: nil, missingIndexes: try inventory.missingIndexes())
        case .postgres(let location):
            let inventory = try PostgresInventory(configuration: .init(location: location, password: password), logger: logger)
            do {
                let missing = try await inventory.check()
                return Opened(inventory: inventory, service: inventory, missingIndexes: missing)
            } catch let error as InventoryError where error.code == .unavailable && !requireReachable {
                logger.warning("inventory database unreachable at the start; lookups answer unavailable until it is back", metadata: [
                    "inventory": "\(location)", "error": "\(error.message)",
                ])
                return Opened(inventory: inventory, service: inventory, missingIndexes: [])
            }
        }
    }
}
