import AsyncPrimitives
public import Foundation
import GatewayProtocol
public import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
public import ServiceLifecycle
import Synchronization
public import TextFormats

/// An environment's inventory in the platform's PostgreSQL database: the same three lookups
/// as ``SQLiteInventory``, as prepared statements over a small postgres-nio connection pool.
///
/// A database that cannot be reached is never "not found": lookups throw `.unavailable` (the
/// gateway retries them, its journal keeps them), ``healthLine`` says so, and a probe checks
/// again with backoff until the database answers; the pool reconnects by itself. Run it as a
/// service (``run()``) for as long as lookups are made.
public final class PostgresInventory: Inventory, Service {
    public struct Configuration: Sendable {
        public var location: PostgresLocation
        public var password: String?
        /// Connections the pool opens at most; lookups beyond wait for one (bounded by their
        /// own deadline and ``queryTimeout``). Default 4.
        public var maximumConnections = 4
        /// The longest a lookup waits for a connection and its answer. Default 5 s; the
        /// request's own deadline cuts it shorter (the worker cancels the handler at it).
        public var queryTimeout: Duration = .seconds(5)
        /// Connecting to the database gives up after this. Default 5 s.
        public var connectTimeout: Duration = .seconds(5)
        /// How often a reachable database is probed. Default 30 s.
        public var probeInterval: Duration = .seconds(30)

        public init(location: PostgresLocation, password: String?) {
            self.location = location
            self.password = password
        }
    }

    /// What the last probe or lookup found.
    public enum Health: Sendable, Equatable {
        case unknown
        case reachable
        case unreachable(since: Date, error: String)
    }

    public let configuration: Configuration
    private let client: PostgresClient
    private let logger: Logger
    private let health = Mutex(Health.unknown)
    /// Wakes the probe early after a lookup saw the connection fail.
    private let probeNow = MessageQueue<Void>(capacity: 1)

    public var displayName: String { configuration.location.description }

    public var currentHealth: Health { health.withLock { $0 } }

    public var healthLine: String? {
        switch currentHealth {
        case .unknown: "inventory \(displayName): not checked yet"
        case .reachable: nil
        case .unreachable(let since, let error): "inventory \(displayName) unreachable since \(since.formatted(.iso8601)): \(error)"
        }
    }

    /// Makes the pool; nothing connects until ``run()``. Use ``check()`` to find out whether
    /// the database can be used.
    public init(configuration: Configuration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        var client = PostgresClient.Configuration(
            host: configuration.location.host, port: configuration.location.port,
            username: configuration.location.user, password: configuration.password,
            database: configuration.location.database, tls: try Self.clientTLS(configuration.location)
        )
        client.options.maximumConnections = configuration.maximumConnections
        client.options.minimumConnections = 0
        client.options.connectTimeout = configuration.connectTimeout
        // A lookup is one indexed row: anything slower is a database in trouble, and the
        // server stops it rather than hold a pool connection.
        client.options.additionalStartupParameters = [("statement_timeout", "\(configuration.queryTimeout.wholeMilliseconds)"), ("application_name", "vps-gateway-worker")]
        self.client = PostgresClient(configuration: client, backgroundLogger: logger)
    }

    public func run() async {
        // The pool and the probe stop together at the graceful shutdown.
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.client.run() }
                group.addTask { await self.probeLoop() }
            }
        }
    }

    // MARK: Lookups

    public func owner(mac: MACAddress?, ip: String?) async throws -> LeaseOwner? {
        if case .unreachable(_, let error) = currentHealth {
            // Known down: answer at once instead of holding the request until its deadline,
            // and have the probe look again soon (at most once a second), so the database
            // coming back is noticed by the next retry rather than the probe's backoff.
            probeNow.enqueue(())
            throw InventoryError(code: .unavailable, message: "inventory \(displayName) is unreachable: \(error)")
        }
        let started = ContinuousClock.now
        do {
            return try await withDeadline(configuration.queryTimeout) { try await self.lookup(mac: mac, ip: ip) }
        } catch let error as InventoryError {
            // The lookup's own time limit: a pool stuck reconnecting gives no error either.
            probeNow.enqueue(())
            throw error
        } catch is CancellationError {
            // Given up on by the caller (the gateway's deadline, a `cancel`) after waiting a
            // second or more: a pool stuck reconnecting to a database that went away looks
            // like this, with no error to classify, so the probe looks now rather than at
            // its next interval (30 s by default). A lookup cancelled because another
            // environment answered first is cancelled within milliseconds.
            if ContinuousClock.now - started >= .seconds(1) { probeNow.enqueue(()) }
            throw CancellationError()
        } catch {
            throw classify(error, during: "lookup")
        }
    }

    private func lookup(mac: MACAddress?, ip: String?) async throws -> LeaseOwner? {
        if let mac {
            let canonical = mac.canonical
            var lease = try await first(Lookup(LeaseByMACQuery.self, canonical, canonical.uppercased()))
            if lease == nil { lease = try await first(Lookup(LeaseByNormalizedMACQuery.self, canonical)) }
            if let row = lease {
                return LeaseOwner(vpsID: row.0 ?? "", organizationID: row.1 ?? "", matchedBy: .leaseByMAC)
            }
            var instance = try await first(Lookup(InstanceByMACQuery.self, canonical, canonical.uppercased()))
            if instance == nil { instance = try await first(Lookup(InstanceByNormalizedMACQuery.self, canonical)) }
            if let row = instance {
                return LeaseOwner(vpsID: row.0 ?? "", organizationID: row.1 ?? "", matchedBy: .instanceByMAC)
            }
        }
        if let ip, !ip.isEmpty, let row = try await first(Lookup(LeaseByIPQuery.self, ip)) {
            return LeaseOwner(vpsID: row.0 ?? "", organizationID: row.1 ?? "", matchedBy: .leaseByIP)
        }
        return nil
    }

    private func first<Statement: PostgresPreparedStatement>(_ statement: Statement) async throws -> Statement.Row? {
        let rows = try await client.execute(statement, logger: logger)
        for try await row in rows {
            markReachable()
            return row
        }
        markReachable()
        return nil
    }

    /// A failed query: the connection's fault is `unavailable` (and the probe looks at once);
    /// the server refusing the statement is a failure of this inventory.
    private func classify(_ error: any Error, during what: String) -> InventoryError {
        let description = Self.describe(error)
        if let error = error as? PSQLError, error.code == .server {
            return InventoryError(code: .queryFailed, message: "inventory \(displayName) \(what) failed: \(description)")
        }
        markUnreachable(description)
        probeNow.enqueue(())
        return InventoryError(code: .unavailable, message: "inventory \(displayName) is unreachable: \(description)")
    }

    // MARK: Health

    private func markReachable() {
        let was = health.withLock { health in
            defer { health = .reachable }
            return health
        }
        if case .unreachable = was {
            logger.notice("inventory database reachable again", metadata: ["inventory": "\(displayName)"])
        }
    }

    private func markUnreachable(_ error: String) {
        let first = health.withLock { health -> Bool in
            if case .unreachable = health { return false }
            health = .unreachable(since: Date(), error: error)
            return true
        }
        if first {
            logger.error("inventory database unreachable; lookups answer unavailable until it is back (retried with backoff)", metadata: [
                "inventory": "\(displayName)", "error": "\(error)",
            ])
        }
    }

    /// Probes every ``Configuration/probeInterval`` while reachable, and 1 s doubling to 30 s
    /// while not, so a database that comes back is noticed without a worker restart. A lookup
    /// that finds it down wakes the probe early, but never more than once a second.
    private func probeLoop() async {
        var backoff = Duration.seconds(1)
        while !Task.isCancelled {
            let probed = ContinuousClock.now
            let wait: Duration
            switch await probe() {
            case .success:
                backoff = .seconds(1)
                wait = configuration.probeInterval
            case .failure:
                wait = backoff
                backoff = min(backoff * 2, .seconds(30))
            }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { _ = await self.probeNow.nextBatch() }
                group.addTask { _ = await waitUntil(.now + wait) }
                await group.next()
                group.cancelAll()
            }
            _ = await waitUntil(probed + .seconds(1))
        }
    }

    /// One connection of its own (not the pool's, which retries silently), `SELECT 1`, closed:
    /// the error says exactly why the database cannot be used.
    public func probe() async -> Result<Void, InventoryError> {
        do {
            try await withDeadline(configuration.connectTimeout + .seconds(1)) {
                try await self.withOwnConnection { connection in
                    _ = try await connection.query("SELECT 1", logger: self.logger).collect()
                }
            }
            markReachable()
            return .success(())
        } catch is CancellationError {
            // Stopping: says nothing about the database.
            return .failure(InventoryError(code: .unavailable, message: "the probe was stopped"))
        } catch {
            let failure = (error as? InventoryError)
                ?? InventoryError(code: Self.isConfigurationProblem(error) ? .unreadable : .unavailable, message: Self.describe(error))
            markUnreachable(failure.message)
            return .failure(failure)
        }
    }

    /// Connects, then checks the tables and columns the lookups read and the indexes that
    /// make them fast. For `inventory check` and the worker's start.
    public func check() async throws -> [String] {
        if case .failure(let error) = await probe() {
            throw InventoryError(code: error.code, message: "inventory \(displayName): \(error.message)")
        }
        do {
            return try await withOwnConnection { connection in try await self.checkSchema(connection) }
        } catch let error as InventoryError {
            throw error
        } catch {
            throw InventoryError(code: .queryFailed, message: "inventory \(displayName): checking the schema failed: \(Self.describe(error))")
        }
    }

    private func checkSchema(_ connection: PostgresConnection) async throws -> [String] {
        do {
            var columns: [String: Set<String>] = [:]
            let rows = try await connection.query(
                // pg_catalog, not information_schema: the latter hides columns the role may
                // not read, and those should be named as missing grants, not missing columns.
                """
                SELECT c.relname::text, a.attname::text FROM pg_attribute a
                JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = current_schema() AND c.relname IN ('vps_instances', 'dhcp_leases')
                  AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped
                """,
                logger: logger
            )
            for try await (table, column) in rows.decode((String, String).self) {
                columns[table, default: []].insert(column.lowercased())
            }
            for (table, needed) in InventorySchema.required {
                guard let present = columns[table] else {
                    throw InventoryError(code: .wrongSchema, message: "inventory \(displayName) has no table '\(table)' in schema current_schema() (or the role may not see it); expected the platform's tables vps_instances and dhcp_leases")
                }
                let missing = needed.filter { !present.contains($0) }
                if !missing.isEmpty {
                    throw InventoryError(code: .wrongSchema, message: "inventory \(displayName): table '\(table)' lacks column(s) \(missing.joined(separator: ", "))")
                }
            }
            // Column grants are enough (the least a lookup needs), so columns are checked.
            for (table, needed) in InventorySchema.required {
                for column in needed {
                    for try await allowed in try await connection.query("SELECT has_column_privilege(\(table), \(column), 'SELECT')", logger: logger).decode(Bool.self) where !allowed {
                        throw InventoryError(code: .wrongSchema, message: "inventory \(displayName): role '\(configuration.location.user)' may not read \(table).\(column); GRANT SELECT (\(needed.joined(separator: ", "))) ON \(table) TO \(configuration.location.user)")
                    }
                }
            }
            var indexes: [String] = []
            for try await (table, definition) in try await connection.query(
                "SELECT tablename::text, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename IN ('vps_instances', 'dhcp_leases')",
                logger: logger
            ).decode((String, String).self) {
                indexes.append("\(table) \(definition.lowercased().replacingOccurrences(of: " ", with: ""))")
            }
            return Self.missingIndexes(indexes)
        }
    }

    /// A connection outside the pool for `body`, closed after it whatever happens.
    private func withOwnConnection<Result: Sendable>(_ body: @Sendable (PostgresConnection) async throws -> Result) async throws -> Result {
        let connection = try await PostgresConnection.connect(configuration: connectionConfiguration(), id: 0, logger: logger)
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// The plain and normalized MAC indexes and the IP index, as in ``InventorySchema``.
    static func missingIndexes(_ indexes: [String]) -> [String] {
        let wanted: [(table: String, needle: String, statement: String)] = [
            ("dhcp_leases", "(mac_address)", "CREATE INDEX ON dhcp_leases (mac_address);"),
            ("dhcp_leases", "(lower(trim(bothfrommac_address)))", "CREATE INDEX ON dhcp_leases (lower(trim(mac_address)));"),
            ("vps_instances", "(mac_address)", "CREATE INDEX ON vps_instances (mac_address);"),
            ("vps_instances", "(lower(trim(bothfrommac_address)))", "CREATE INDEX ON vps_instances (lower(trim(mac_address)));"),
            ("dhcp_leases", "(ip_address)", "CREATE INDEX ON dhcp_leases (ip_address);"),
        ]
        return wanted.filter { want in
            !indexes.contains { $0.hasPrefix(want.table + " ") && $0.contains(want.needle) }
        }.map(\.statement)
    }

    // MARK: Connections and errors

    private func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let location = configuration.location
        var connection = PostgresConnection.Configuration(
            host: location.host, port: location.port, username: location.user,
            password: configuration.password, database: location.database, tls: try Self.connectionTLS(location)
        )
        connection.options.connectTimeout = .milliseconds(configuration.connectTimeout.wholeMilliseconds)
        return connection
    }

    private static func tlsConfiguration(_ location: PostgresLocation) -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if location.sslMode != .verifyFull { tls.certificateVerification = .none }
        return tls
    }

    private static func clientTLS(_ location: PostgresLocation) throws -> PostgresClient.Configuration.TLS {
        switch location.sslMode {
        case .disable: .disable
        case .prefer: .prefer(tlsConfiguration(location))
        case .require, .verifyFull: .require(tlsConfiguration(location))
        }
    }

    private static func connectionTLS(_ location: PostgresLocation) throws -> PostgresConnection.Configuration.TLS {
        switch location.sslMode {
        case .disable: return .disable
        case .prefer: return .prefer(try NIOSSLContext(configuration: tlsConfiguration(location)))
        case .require, .verifyFull: return .require(try NIOSSLContext(configuration: tlsConfiguration(location)))
        }
    }

    /// A wrong password, a missing database or role: fixing it takes the operator, not time.
    static func isConfigurationProblem(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError else { return false }
        if error.code == .authMechanismRequiresPassword || error.code == .unsupportedAuthMechanism || error.code == .saslError { return true }
        guard error.code == .server, let state = error.serverInfo?[.sqlState] else { return false }
        // 28xxx: invalid authorization; 3D000: no such database.
        return state.hasPrefix("28") || state == "3D000"
    }

    /// PSQLError's own description hides everything (to keep secrets out of logs); this says
    /// what happened without the password, which it never holds.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let info = error.serverInfo {
            let state = info[.sqlState] ?? "?"
            let message = info[.message] ?? "no message"
            let hint = state.hasPrefix("28") ? " (check the user and --inventory-password-file)" : state == "3D000" ? " (check the database name in the URL)" : ""
            return "the server refused: \(message) [SQLSTATE \(state)]\(hint)"
        }
        if let underlying = error.underlying { return "\(error.code): \(underlying)" }
        return "\(error.code)"
    }
}

/// Runs `body`, and cancels it after `limit` with an `.unavailable` error.
func withDeadline<Result: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> Result) async throws -> Result {
    try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            _ = await waitUntil(.now + limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            // Cancelled from outside, the timer child may end first: that is the caller's
            // cancellation, not a timeout (which was taken for one, and woke no probe).
            try Task.checkCancellation()
            throw InventoryError(code: .unavailable, message: "no answer within \(limit)")
        }
        return result
    }
}

// The lookups, prepared once per connection by postgres-nio. The exact-form queries use a
// plain index on the column and find MACs stored as the platform writes them; the
// normalized ones catch other case and stray spaces (an index on lower(trim(mac_address))
// makes them fast; `inventory check` says when it is missing).

private let leaseColumns = """
    SELECT l.vps_id::text, l.organization_id::text
    FROM dhcp_leases l LEFT JOIN vps_instances v ON v.id = l.vps_id
    WHERE l.vps_id IS NOT NULL AND l.vps_id::text <> '' AND v.deleted_at IS NULL
    """

private let instanceColumns = "SELECT id::text, organization_id::text FROM vps_instances WHERE deleted_at IS NULL"

/// One lookup's statement: its server-side name and SQL.
private protocol LookupQuery {
    static var name: String { get }
    static var sql: String { get }
}

private enum LeaseByMACQuery: LookupQuery {
    static let name = "vps_gateway_lease_by_mac"
    static let sql = leaseColumns + " AND l.mac_address IN ($1, $2) LIMIT 1"
}

private enum LeaseByNormalizedMACQuery: LookupQuery {
    static let name = "vps_gateway_lease_by_normalized_mac"
    static let sql = leaseColumns + " AND lower(trim(l.mac_address)) = $1 LIMIT 1"
}

private enum InstanceByMACQuery: LookupQuery {
    static let name = "vps_gateway_instance_by_mac"
    static let sql = instanceColumns + " AND mac_address IN ($1, $2) LIMIT 1"
}

private enum InstanceByNormalizedMACQuery: LookupQuery {
    static let name = "vps_gateway_instance_by_normalized_mac"
    static let sql = instanceColumns + " AND lower(trim(mac_address)) = $1 LIMIT 1"
}

private enum LeaseByIPQuery: LookupQuery {
    static let name = "vps_gateway_lease_by_ip"
    static let sql = leaseColumns + " AND l.ip_address = $1 LIMIT 1"
}

/// A lookup with its text arguments; every one answers (vps id, organization id).
private struct Lookup<Query: LookupQuery>: PostgresPreparedStatement {
    static var name: String { Query.name }
    static var sql: String { Query.sql }
    typealias Row = (String?, String?)
    var arguments: [String]

    init(_: Query.Type, _ arguments: String...) { self.arguments = arguments }

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings()
        for argument in arguments { bindings.append(argument) }
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}
