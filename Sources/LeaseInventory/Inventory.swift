import GatewayProtocol
public import TextFormats

/// Where an environment's VPSs and leases are read from: a SQLite copy or the platform's own
/// PostgreSQL database. Both answer the same three lookups in the platform's table shapes.
public protocol Inventory: Sendable {
    /// The inventory as an operator wrote it, without a password: for logs and STATUS.
    var displayName: String { get }

    /// The owner of the lease with this MAC or IP, or nil when the inventory has none.
    /// Throws ``InventoryError`` with `.unavailable` when the database cannot be reached now
    /// (worth a retry; never the same as "not found").
    func owner(mac: MACAddress?, ip: String?) async throws -> LeaseOwner?

    /// The same lookup on the calling thread when it needs no waiting (a local file no writer
    /// holds), or ``AtOnce/wouldWait``: then ``owner(mac:ip:)`` is asked instead, in a task.
    /// Must not block. By default every lookup would wait.
    func ownerAtOnce(mac: MACAddress?, ip: String?) throws -> AtOnce<LeaseOwner?>

    /// False when ``ownerAtOnce(mac:ip:)`` always would wait (a database across the network),
    /// so the worker does not ask it. False by default.
    var answersAtOnce: Bool { get }

    /// One line on whether lookups can be answered now, for the worker's STATUS; nil while
    /// there is nothing to say (a local file).
    var healthLine: String? { get }
}

extension Inventory {
    public var healthLine: String? { nil }
    public func ownerAtOnce(mac: MACAddress?, ip: String?) throws -> AtOnce<LeaseOwner?> { .wouldWait }
    public var answersAtOnce: Bool { false }
}

/// A lookup answered on the calling thread, or not without waiting.
public enum AtOnce<Value: Sendable>: Sendable {
    case answered(Value)
    case wouldWait
}

/// An `--inventory` value, parsed: `sqlite:PATH` or `postgres://USER@HOST[:PORT]/DB[?sslmode=…]`
/// (also `postgresql://`).
public enum InventoryLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(PostgresLocation)

    public init(url: String) throws {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            self = .postgres(try PostgresLocation(url: url))
            return
        }
        let prefixes = ["sqlite://", "sqlite:"]
        guard let prefix = prefixes.first(where: { url.hasPrefix($0) }), url.count > prefix.count else {
            throw InventoryError(code: .invalidURL, message: "inventory URL '\(url)' is neither sqlite:PATH nor postgres://USER@HOST[:PORT]/DB; expected e.g. sqlite:/var/lib/vps-gateway/production.sqlite3 or postgres://vps_gateway@db.internal/platform?sslmode=require")
        }
        self = .sqlite(path: String(url.dropFirst(prefix.count)))
    }
}
