import Crypto
import Foundation
import GRDB

/// One numbered SQL file of `migrations/`.
public struct Migration: Sendable, Hashable {
    public var version: Int
    /// The file name, like `0001_create_requests.sql`.
    public var name: String
    public var sql: String
    /// SHA-256 of the file, hex.
    public var checksum: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
        self.checksum = SHA256.hash(data: Data(sql.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

/// The migrations of this build, in order, and where they came from.
///
/// GRDB's own `DatabaseMigrator` records only identifiers; we also keep each file's checksum
/// and the time it was applied, and refuse a database newer than the binary, so the journal
/// is applied from plain SQL files by this small runner instead.
public struct MigrationSet: Sendable {
    public var migrations: [Migration]
    public var directory: String

    public var latestVersion: Int { migrations.last?.version ?? 0 }

    /// Reads every `NNNN_name.sql` in `directory`.
    public static func load(from directory: String) throws -> MigrationSet {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw JournalError(code: .migrationsMissing, message: "cannot list the migrations directory '\(directory)'", cause: error)
        }
        var migrations: [Migration] = []
        for name in names.sorted() where name.hasSuffix(".sql") {
            guard let prefix = name.split(separator: "_").first, prefix.count == 4, let version = Int(prefix) else {
                throw JournalError(code: .migrationsMissing, message: "migration file '\(name)' in '\(directory)' is not named NNNN_name.sql")
            }
            let path = (directory as NSString).appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw JournalError(code: .migrationsMissing, message: "cannot read migration '\(path)'")
            }
            if let previous = migrations.last, previous.version == version {
                throw JournalError(code: .migrationsMissing, message: "migrations '\(previous.name)' and '\(name)' have the same number")
            }
            migrations.append(Migration(version: version, name: name, sql: String(decoding: data, as: UTF8.self)))
        }
        guard !migrations.isEmpty else {
            throw JournalError(code: .migrationsMissing, message: "no NNNN_name.sql files in the migrations directory '\(directory)'")
        }
        for (index, migration) in migrations.enumerated() where migration.version != index + 1 {
            throw JournalError(code: .migrationsMissing, message: "migration '\(migration.name)' breaks the numbering; expected version \(index + 1)")
        }
        return MigrationSet(migrations: migrations, directory: directory)
    }

    /// Finds the migrations directory: `explicit` (a flag or `VPS_GATEWAY_MIGRATIONS`), else
    /// `../share/vps-gateway/migrations` next to the binary (`make install`), else a
    /// `migrations/` directory in the binary's directory or one of its parents (the source
    /// tree, for `swift build` and `swift test`).
    public static func locate(explicit: String?, executable: String) throws -> MigrationSet {
        if let explicit { return try load(from: explicit) }
        let binaryDirectory = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
        var candidates = [binaryDirectory.appendingPathComponent("../share/vps-gateway/migrations").standardized.path]
        var directory = binaryDirectory
        for _ in 0..<6 {
            candidates.append(directory.appendingPathComponent("migrations").path)
            directory = directory.deletingLastPathComponent()
        }
        for candidate in candidates {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), isDirectory.boolValue {
                return try load(from: candidate)
            }
        }
        throw JournalError(
            code: .migrationsMissing,
            message: "cannot find the journal migrations; looked in \(candidates.joined(separator: ", ")); give --migrations DIR or set VPS_GATEWAY_MIGRATIONS"
        )
    }
}

/// Applies a ``MigrationSet`` to a database.
enum Migrator {
    static let table = "schema_migrations"

    struct Applied {
        var version: Int
        var name: String
        var checksum: String
    }

    /// The versions recorded in the database.
    static func applied(_ db: Database) throws -> [Applied] {
        guard try db.tableExists(table) else { return [] }
        return try Row.fetchAll(db, sql: "SELECT version, name, checksum FROM \(table) ORDER BY version").map {
            Applied(version: $0["version"], name: $0["name"], checksum: $0["checksum"])
        }
    }

    /// Refuses a database that is newer than `set` or whose applied files changed.
    static func check(_ applied: [Applied], against set: MigrationSet, path: String) throws {
        if let newest = applied.last, newest.version > set.latestVersion {
            throw JournalError(
                code: .schemaTooNew,
                message: "journal '\(path)' has schema version \(newest.version) (\(newest.name)) but this vps-gateway knows up to \(set.latestVersion); run a newer vps-gateway or point --journal elsewhere"
            )
        }
        for record in applied {
            guard let file = set.migrations.first(where: { $0.version == record.version }) else { continue }
            if file.checksum != record.checksum {
                throw JournalError(
                    code: .migrationChanged,
                    message: "migration \(file.name) in '\(set.directory)' changed after it was applied to '\(path)' (checksum \(record.checksum.prefix(12))… then, \(file.checksum.prefix(12))… now); shipped migrations must not be edited: restore the file and add a new one"
                )
            }
        }
    }

    /// Applies what is missing, each migration in its own immediate transaction.
    static func migrate(_ writer: any DatabaseWriter, _ set: MigrationSet, path: String) async throws -> [Migration] {
        try await writer.writeWithoutTransaction { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS \(table) (
                    version INTEGER PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    checksum TEXT NOT NULL,
                    applied_at TEXT NOT NULL
                )
                """)
            let applied = try applied(db)
            try check(applied, against: set, path: path)
            let done = Set(applied.map(\.version))
            var newlyApplied: [Migration] = []
            for migration in set.migrations where !done.contains(migration.version) {
                try db.inTransaction(.immediate) {
                    try db.execute(sql: migration.sql)
                    try db.execute(
                        sql: "INSERT INTO \(table) (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                        arguments: [migration.version, migration.name, migration.checksum, Date().formatted(.iso8601)]
                    )
                    return .commit
                }
                newlyApplied.append(migration)
            }
            return newlyApplied
        }
    }
}
