import Foundation
import GRDB
import NIOCore
import NIOPosix
import SQLiteDirect
import Synchronization
import GatewayProtocol
public import TextFormats

/// Who owns a lease, and how the inventory found out.
public struct LeaseOwner: Sendable, Hashable {
    public enum Match: String, Sendable {
        case leaseByMAC = "dhcp_leases.mac_address"
        case instanceByMAC = "vps_instances.mac_address"
        case leaseByIP = "dhcp_leases.ip_address"
    }

    public var vpsID: String
    public var organizationID: String
    public var matchedBy: Match
}

/// An environment's inventory in a SQLite file, opened read-only.
///
/// The lookup order is the platform's: `dhcp_leases` by MAC (leases of deleted VPSs do not
/// count), then `vps_instances` by MAC where not deleted, then `dhcp_leases` by IP. MACs are
/// compared case-insensitively after trimming.
public struct SQLiteInventory: Inventory {
    public let path: String
    private let database: DatabaseQueue
    /// Connections for lookups, one per lookup running at once (up to ``maximumConnections``),
    /// so concurrent lookups do not queue on one connection's dispatch queue: waiting there
    /// parked the thread (a futex round trip) and cost more than the query.
    private let lookupConnections: ConnectionStack
    /// The read transaction of each event loop's current turn (``ownerAtOnce(mac:ip:)``).
    private let turnReads = TurnReads()

    /// Opens and checks the file: it must exist, be a SQLite database and have the tables
    /// and columns the lookup reads.
    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw InventoryError(code: .unreadable, message: "inventory '\(path)' does not exist; create it with `vps-gateway inventory create \(path) --environment NAME` or point --inventory at a copy of the platform database")
        }
        var configuration = Configuration()
        configuration.readonly = true
        configuration.label = "inventory"
        // A lookup answered on an event loop leaves its read transaction open until the
        // loop's turn ends (`ownerAtOnce`); every other access closes its own.
        configuration.allowsUnsafeTransactions = true
        // A lock held by the platform's writer is waited out in `owner`, asleep, not inside
        // SQLite on a blocked thread.
        configuration.busyMode = .immediateError
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
            lookupConnections = ConnectionStack(first: database, path: path, configuration: configuration)
            try Self.waitingOutLocks { try database.read { db in try Self.checkSchema(db, path: path) } }
        } catch let error as InventoryError {
            throw error
        } catch {
            throw InventoryError(code: .unreadable, message: "inventory '\(path)' cannot be read as a SQLite database", cause: error)
        }
    }

    /// Parses `sqlite:PATH` (also `sqlite://PATH`) and opens it.
    public init(url: String) throws {
        guard case .sqlite(let path) = try InventoryLocation(url: url) else {
            throw InventoryError(code: .invalidURL, message: "inventory URL '\(url)' is not sqlite:PATH")
        }
        try self.init(path: path)
    }

    public var displayName: String { "sqlite:\(path)" }

    private static func checkSchema(_ db: Database, path: String) throws {
        for (table, columns) in InventorySchema.required {
            guard try db.tableExists(table) else {
                throw InventoryError(code: .wrongSchema, message: "inventory '\(path)' has no table '\(table)'; expected the platform's tables vps_instances and dhcp_leases")
            }
            let present = Set(try db.columns(in: table).map { $0.name.lowercased() })
            let missing = columns.filter { !present.contains($0) }
            if !missing.isEmpty {
                throw InventoryError(code: .wrongSchema, message: "inventory '\(path)': table '\(table)' lacks column(s) \(missing.joined(separator: ", "))")
            }
        }
    }

    /// Indexes a fast lookup needs that this inventory lacks, as `CREATE INDEX` statements an
    /// operator can run on a writable copy. Empty when the inventory has them all.
    public func missingIndexes() throws -> [String] {
        try Self.waitingOutLocks { try database.read { db in
            let indexSQL = try String.fetchAll(db, sql: "SELECT lower(sql) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
                .map { $0.replacingOccurrences(of: " ", with: "") }
            return InventorySchema.lookupIndexes.filter { statement in
                let expression = statement.expression.lowercased().replacingOccurrences(of: " ", with: "")
                return !indexSQL.contains { $0.contains("on\(statement.table)(\(expression))") }
            }.map(\.statement)
        } }
    }

    /// The owner of the lease with this MAC or IP, or nil when the inventory has none.
    ///
    /// The query runs on the caller's thread: it takes microseconds, and the hop to GRDB's
    /// queue and back cost more than the query (5 % of a loaded worker's CPU). A database
    /// locked by a writer would block that thread, so SQLite gives up at once instead and the
    /// lookup sleeps and tries again, for up to ``busyTimeout``.
    public func owner(mac: MACAddress?, ip: String?) async throws -> LeaseOwner? {
        let giveUp = ContinuousClock.now + Self.busyTimeout
        var pause = Duration.milliseconds(1)
        while true {
            do {
                let connection = try lookupConnections.take()
                defer { lookupConnections.giveBack(connection) }
                return try lookupHere(mac: mac, ip: ip, on: connection)
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && ContinuousClock.now < giveUp {
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .milliseconds(50))
            } catch {
                throw InventoryError(code: .queryFailed, message: "inventory '\(path)' lookup failed", cause: error)
            }
        }
    }

    public var answersAtOnce: Bool { true }

    /// The lookup without the wait for a writer's lock: `.wouldWait` while one holds it, and
    /// when every connection is busy with lookups in tasks (one of them would be waited for).
    ///
    /// On an event loop (the worker's stream reader) the lookups of one loop turn share one
    /// read transaction, opened by the first and committed once the loop has run what is
    /// queued on it: SQLite takes and drops its shared lock and checks the file (`fcntl`s
    /// and a `stat`) per transaction, and under load one read brings dozens of
    /// requests. They all see the file as it was at the turn's first lookup, a moment
    /// earlier; a writer waits (its busy timeout) for the turn to end, not longer.
    public func ownerAtOnce(mac: MACAddress?, ip: String?) throws -> AtOnce<LeaseOwner?> {
        do {
            if let loop = MultiThreadedEventLoopGroup.currentEventLoop {
                return try lookupInTurn(of: loop, mac: mac, ip: ip)
            }
            guard let connection = try lookupConnections.takeIdle() else { return .wouldWait }
            defer { lookupConnections.giveBack(connection) }
            return .answered(try lookupHere(mac: mac, ip: ip, on: connection))
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY {
            return .wouldWait
        } catch {
            throw InventoryError(code: .queryFailed, message: "inventory '\(path)' lookup failed", cause: error)
        }
    }

    /// How long a lookup waits for a writer's lock before it fails.
    static let busyTimeout = Duration.seconds(2)

    /// `body`, tried again while a writer holds the lock, for up to ``busyTimeout``; for the
    /// synchronous work outside lookups (opening, `inventory check`).
    private static func waitingOutLocks<T>(_ body: () throws -> T) throws -> T {
        let giveUp = ContinuousClock.now + busyTimeout
        while true {
            do {
                return try body()
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && ContinuousClock.now < giveUp {
                usleep(5_000)
            }
        }
    }

    /// One lookup in a read transaction of its own on `connection`. Not async, so it can only
    /// be GRDB's synchronous read.
    private func lookupHere(mac: MACAddress?, ip: String?, on connection: DatabaseQueue) throws -> LeaseOwner? {
        // One read transaction around the (up to five) queries: outside one, each statement
        // takes and drops SQLite's shared lock and checks for a hot journal (three fcntl
        // calls and a stat), and most lookups are misses that run them all, since every
        // environment is asked and only one knows the MAC.
        // GRDB's `read` parses its BEGIN and COMMIT anew on every call (5 % of a loaded
        // worker); prepared once per connection here, on a connection opened read-only.
        return try connection.unsafeRead { db in
            try db.cachedStatement(sql: "BEGIN DEFERRED TRANSACTION").execute()
            do {
                let owner = try self.lookup(db, mac: mac, ip: ip)
                try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
                return owner
            } catch {
                if db.isInsideTransaction { try? db.rollback() }
                throw error
            }
        }
    }

    /// A lookup in the read transaction of `loop`'s current turn, opening it (and queueing its
    /// commit for the turn's end) when it is the turn's first.
    private func lookupInTurn(of loop: any EventLoop, mac: MACAddress?, ip: String?) throws -> AtOnce<LeaseOwner?> {
        if let connection = turnReads.connection(of: loop) {
            do {
                return .answered(try connection.unsafeRead { db in try self.lookup(db, mac: mac, ip: ip) })
            } catch {
                endTurn(of: loop, committing: false)
                throw error
            }
        }
        guard let connection = try lookupConnections.takeIdle() else { return .wouldWait }
        do {
            let owner = try connection.unsafeRead { db in
                try db.cachedStatement(sql: "BEGIN DEFERRED TRANSACTION").execute()
                return try self.lookup(db, mac: mac, ip: ip)
            }
            turnReads.open(connection, on: loop)
            loop.execute { self.endTurn(of: loop, committing: true) }
            return .answered(owner)
        } catch {
            connection.unsafeRead { db in if db.isInsideTransaction { try? db.rollback() } }
            lookupConnections.giveBack(connection)
            throw error
        }
    }

    /// Closes `loop`'s turn transaction, if one is open, and gives its connection back.
    private func endTurn(of loop: any EventLoop, committing: Bool) {
        guard let connection = turnReads.close(on: loop) else { return }
        connection.unsafeRead { db in
            if committing { try? db.cachedStatement(sql: "COMMIT TRANSACTION").execute() }
            // Not committed (or the commit failed): nothing is left open on the connection.
            if db.isInsideTransaction { try? db.rollback() }
        }
        lookupConnections.giveBack(connection)
    }

    /// Lookups running at once beyond this share the connections (and queue on them).
    static let maximumConnections = 4

    private func lookup(_ db: Database, mac: MACAddress?, ip: String?) throws -> LeaseOwner? {
        if let mac {
            // The platform's form first, then upper case, each probing the plain index:
            // `IN (?, ?)` made SQLite build a temporary b-tree of the two values on every run
            // (4.2–6.6 µs a query against 1.7–3.3 for both probes, timed through the C API),
            // and a worker that does not know the MAC runs two such queries per request.
            let canonical = mac.canonical
            let uppercased = canonical.uppercased()
            // nil when the MAC has no letters, so the same probe is not run twice.
            let upper = uppercased == canonical ? nil : uppercased
            if let owner = try Self.owner(db, Self.leaseByMAC.exact, canonical, .leaseByMAC)
                ?? upper.flatMap({ try Self.owner(db, Self.leaseByMAC.exact, $0, .leaseByMAC) })
                ?? Self.owner(db, Self.leaseByMAC.normalized, canonical, .leaseByMAC) {
                return owner
            }
            if let owner = try Self.owner(db, Self.instanceByMAC.exact, canonical, .instanceByMAC)
                ?? upper.flatMap({ try Self.owner(db, Self.instanceByMAC.exact, $0, .instanceByMAC) })
                ?? Self.owner(db, Self.instanceByMAC.normalized, canonical, .instanceByMAC) {
                return owner
            }
        }
        if let ip, !ip.isEmpty, let owner = try Self.owner(db, Self.leaseByIP, ip, .leaseByIP) {
            return owner
        }
        return nil
    }

    /// The owner in the first row of `sql` (its `vps_id` and `organization_id` columns, in
    /// that order) with `value` bound; nil when it has no row. Bound and read through
    /// SQLite's C API: a lookup that misses runs six of these, and GRDB's arguments and row
    /// objects cost more than the queries (14 % of a loaded worker's CPU).
    private static func owner(_ db: Database, _ sql: String, _ value: String, _ match: LeaseOwner.Match) throws -> LeaseOwner? {
        var statement = try DirectStatement(db, sql: sql)
        statement.bind(value)
        return try statement.firstRow(db) { row in
            LeaseOwner(vpsID: row.text(0) ?? "", organizationID: row.text(1) ?? "", matchedBy: match)
        }
    }

    /// The exact-form query uses a plain index on the column and finds MACs stored the way
    /// the platform writes them. The normalized one catches other case and stray spaces; it
    /// uses an index on `lower(trim(mac_address))` when the inventory has one (ours do, see
    /// `InventorySchema`) and scans the table otherwise, which `inventory check` warns about.
    private static let leaseByMAC = (
        exact: leaseQuery + " AND l.mac_address = ? LIMIT 1",
        normalized: leaseQuery + " AND lower(trim(l.mac_address)) = ? LIMIT 1"
    )
    private static let instanceByMAC = (
        exact: instanceQuery + " AND mac_address = ? LIMIT 1",
        normalized: instanceQuery + " AND lower(trim(mac_address)) = ? LIMIT 1"
    )

    private static let leaseQuery = """
        SELECT l.vps_id AS vps_id, l.organization_id AS organization_id
        FROM dhcp_leases l LEFT JOIN vps_instances v ON v.id = l.vps_id
        WHERE l.vps_id IS NOT NULL AND l.vps_id != '' AND v.deleted_at IS NULL
        """

    private static let leaseByIP = leaseQuery + " AND l.ip_address = ? LIMIT 1"

    /// Every query a lookup runs (a test reads their programs).
    static let lookupQueries = [leaseByMAC.exact, leaseByMAC.normalized, instanceByMAC.exact, instanceByMAC.normalized, leaseByIP]

    private static let instanceQuery = """
        SELECT id AS vps_id, organization_id FROM vps_instances WHERE deleted_at IS NULL
        """
}

/// The connection whose read transaction each event loop's current turn holds.
private final class TurnReads: Sendable {
    private let open = Mutex<[ObjectIdentifier: DatabaseQueue]>([:])

    func connection(of loop: any EventLoop) -> DatabaseQueue? {
        open.withLock { $0[ObjectIdentifier(loop)] }
    }

    func open(_ connection: DatabaseQueue, on loop: any EventLoop) {
        open.withLock { $0[ObjectIdentifier(loop)] = connection }
    }

    func close(on loop: any EventLoop) -> DatabaseQueue? {
        open.withLock { $0.removeValue(forKey: ObjectIdentifier(loop)) }
    }
}

/// Idle read-only connections to one inventory file, opened on demand.
private final class ConnectionStack: Sendable {
    private let path: String
    private let configuration: Configuration
    private let state: Mutex<(idle: [DatabaseQueue], opened: [DatabaseQueue], opening: Int)>

    init(first: DatabaseQueue, path: String, configuration: Configuration) {
        self.path = path
        self.configuration = configuration
        state = Mutex(([first], [first], 0))
    }

    /// An idle connection, a new one while fewer than the maximum are open, or else one of
    /// the open ones to share.
    func take() throws -> DatabaseQueue {
        // Sharing, it always has one to give.
        try take(sharing: true)!
    }

    /// An idle connection or a new one; nil when every allowed connection is in use (the
    /// caller would wait for another's lookup).
    func takeIdle() throws -> DatabaseQueue? {
        try take(sharing: false)
    }

    private func take(sharing: Bool) throws -> DatabaseQueue? {
        enum Choice { case idle(DatabaseQueue), open, share(DatabaseQueue) }
        let choice = state.withLock { state -> Choice in
            if let idle = state.idle.popLast() { return .idle(idle) }
            if state.opened.count + state.opening < SQLiteInventory.maximumConnections {
                state.opening += 1
                return .open
            }
            return .share(state.opened[Int.random(in: 0..<state.opened.count)])
        }
        switch choice {
        case .idle(let connection): return connection
        case .share(let connection): return sharing ? connection : nil
        case .open:
            defer { state.withLock { $0.opening -= 1 } }
            let connection = try DatabaseQueue(path: path, configuration: configuration)
            state.withLock { $0.opened.append(connection) }
            return connection
        }
    }

    func giveBack(_ connection: DatabaseQueue) {
        state.withLock { state in
            // A shared connection is idle already (or will be given back by its other user).
            if !state.idle.contains(where: { $0 === connection }) { state.idle.append(connection) }
        }
    }
}
