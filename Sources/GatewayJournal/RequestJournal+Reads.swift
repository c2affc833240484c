import Foundation
import GRDB

extension RequestJournal {
    /// One request, or nil.
    public func record(_ requestID: String) throws -> JournalRecord? {
        try pool.read { db in try JournalRecord.fetchOne(db, key: requestID) }
    }

    public struct ListFilter: Sendable {
        public var state: JournalRecord.State?
        public var method: String?
        /// Created at or after (milliseconds).
        public var since: Int64?
        public var limit: Int

        public init(state: JournalRecord.State? = nil, method: String? = nil, since: Int64? = nil, limit: Int = 100) {
            self.state = state
            self.method = method
            self.since = since
            self.limit = limit
        }
    }

    /// Requests matching `filter`, newest first.
    public func list(_ filter: ListFilter) throws -> [JournalRecord] {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let state = filter.state { conditions.append("state = ?"); arguments += [state.rawValue] }
        if let method = filter.method { conditions.append("method = ?"); arguments += [method] }
        if let since = filter.since { conditions.append("created_at >= ?"); arguments += [since] }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        return try pool.read { db in
            try JournalRecord.fetchAll(
                db,
                sql: "SELECT * FROM requests \(whereClause) ORDER BY created_at DESC, request_id LIMIT \(max(filter.limit, 0))",
                arguments: arguments
            )
        }
    }

    /// How many rows are pending and in flight (the partial index makes this cheap).
    public func unfinishedCounts() throws -> (pending: Int, inFlight: Int) {
        try pool.read { db in
            var counts = (pending: 0, inFlight: 0)
            for row in try Row.fetchAll(db, sql: "SELECT state, count(*) AS n FROM requests WHERE state IN ('pending', 'in_flight') GROUP BY state") {
                if row["state"] == "pending" { counts.pending = row["n"] } else { counts.inFlight = row["n"] }
            }
            return counts
        }
    }

    /// Unfinished rows (pending or in flight), the oldest first: what a restarted gateway
    /// picks up again.
    public func unfinished(limit: Int = Int.max) throws -> [JournalRecord] {
        try pool.read { db in
            try JournalRecord.fetchAll(
                db,
                sql: "SELECT * FROM requests WHERE state IN ('pending', 'in_flight') ORDER BY next_attempt_at LIMIT ?",
                arguments: [limit]
            )
        }
    }

    public struct Stats: Sendable, Codable {
        public var countsByState: [String: Int]
        public var oldestPendingAgeSeconds: Double?
        public var databaseBytes: Int64
        public var walBytes: Int64
        public var schemaVersion: Int

        enum CodingKeys: String, CodingKey {
            case countsByState = "counts_by_state", oldestPendingAgeSeconds = "oldest_pending_age_s"
            case databaseBytes = "database_bytes", walBytes = "wal_bytes", schemaVersion = "schema_version"
        }
    }

    public func stats() throws -> Stats {
        let (counts, oldest, version) = try pool.read { db -> ([String: Int], Int64?, Int) in
            var counts = Dictionary(uniqueKeysWithValues: JournalRecord.State.allCases.map { ($0.rawValue, 0) })
            for row in try Row.fetchAll(db, sql: "SELECT state, count(*) AS n FROM requests GROUP BY state") {
                counts[row["state"]] = row["n"]
            }
            let oldest = try Int64.fetchOne(db, sql: "SELECT min(created_at) FROM requests WHERE state IN ('pending', 'in_flight')")
            return (counts, oldest, try Migrator.applied(db).last?.version ?? 0)
        }
        return Stats(
            countsByState: counts,
            oldestPendingAgeSeconds: oldest.map { Double(JournalClock.now() - $0) / 1000 },
            databaseBytes: Self.fileSize(path),
            walBytes: Self.fileSize(path + "-wal"),
            schemaVersion: version
        )
    }

    public struct Verification: Sendable, Codable {
        public var integrity: [String]
        public var schemaVersion: Int
        public var latestKnownVersion: Int
        public var ok: Bool

        enum CodingKeys: String, CodingKey {
            case integrity, ok
            case schemaVersion = "schema_version", latestKnownVersion = "latest_known_version"
        }
    }

    /// `PRAGMA integrity_check` plus the schema version against this build's migrations.
    public func verify(against migrations: MigrationSet) throws -> Verification {
        do {
            return try verifyReadable(against: migrations)
        } catch let error as JournalError {
            throw error
        } catch {
            // Damage that stops even the check (a damaged schema or data page) is damage.
            throw JournalError(code: .corrupt, message: "journal '\(path)' is corrupt: \(error)", cause: error)
        }
    }

    private func verifyReadable(against migrations: MigrationSet) throws -> Verification {
        try pool.read { db in
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            let applied = try Migrator.applied(db)
            var problems: [String] = []
            do { try Migrator.check(applied, against: migrations, path: path) } catch { problems.append("\(error)") }
            let version = applied.last?.version ?? 0
            if version < migrations.latestVersion {
                problems.append("schema version \(version) is behind this build's \(migrations.latestVersion); the gateway migrates it at start")
            }
            let ok = integrity == ["ok"] && problems.isEmpty
            return Verification(integrity: integrity + problems, schemaVersion: version, latestKnownVersion: migrations.latestVersion, ok: ok)
        }
    }

    static func fileSize(_ path: String) -> Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }
}
