import CSQLiteWALBuffer
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GRDB
import GRDBSQLite
import ProcessLifecycle
import SQLiteDirect
import Synchronization
// Public: `run()` is the group-commit writer that a ServiceGroup runs.
public import Logging
public import ServiceLifecycle

/// The SQLite request journal: every request is recorded before it is sent, and every state
/// change after. One writer (this process), WAL readers that never block it.
///
/// Writes from concurrent callers share commits: ``run()`` takes every write that is waiting,
/// applies them in one `BEGIN IMMEDIATE` transaction (each in its own savepoint, so one bad
/// write fails alone) and then releases all their callers.
///
/// ```swift
/// let journal = try await RequestJournal.open(at: path, migrations: set, durability: .full, logger: logger)
/// try await journal.insert(record)      // returns once committed
/// ```
public final class RequestJournal: Service, Sendable {
    public enum Durability: String, Sendable, CaseIterable {
        /// `synchronous=FULL`: a committed request survives power loss.
        case full
        /// `synchronous=NORMAL`: may lose the last commits on power loss (not on a crash).
        case normal
    }

    public let path: String
    let pool: DatabasePool
    let committer: GroupCommitter
    let logger: Logger
    /// Held by the one gateway that writes this journal (see ``open(at:migrations:durability:exclusive:logger:)``).
    private let lock: InstanceLock?

    /// The journal file as it was opened (device, inode): a file deleted or replaced under a
    /// running gateway takes its writes into an inode nobody will read again.
    private let fileIdentity: (device: UInt64, inode: UInt64)?
    /// Set once the file is found deleted or replaced; stays (commits into the lost inode
    /// still succeed).
    private let lostFile = Mutex<JournalError?>(nil)

    private init(path: String, pool: DatabasePool, logger: Logger, lock: InstanceLock? = nil) {
        self.path = path
        self.pool = pool
        self.logger = logger
        self.lock = lock
        self.committer = GroupCommitter(pool: pool, logger: logger)
        self.fileIdentity = Self.identity(of: path)
    }

    private static func identity(of path: String) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Checks that the file at ``path`` is still the one this journal writes; when it was
    /// deleted or replaced, marks the journal failing (STATUS, health) and returns why.
    @discardableResult
    public func checkFile() -> JournalError? {
        guard let opened = fileIdentity else { return nil }
        let problem: String?
        switch Self.identity(of: path) {
        case nil: problem = "was deleted"
        case let current? where current != opened: problem = "was replaced by another file"
        default: problem = nil
        }
        guard let problem else { return nil }
        let failure = JournalError(
            code: .writeFailed,
            message: "the journal file '\(path)' \(problem) while the gateway runs: what it records now is lost at the next start; restart the gateway"
        )
        lostFile.withLock { $0 = failure }
        return failure
    }

    /// Opens (creating it and its directory when missing) and migrates the journal; refuses
    /// a corrupt file, a newer schema and edited migrations.
    ///
    /// - Parameter exclusive: take `PATH.lock` first and refuse (``JournalError/Code/inUse``,
    ///   naming the holder's pid) when another process holds it: two gateways on one journal
    ///   would both retry its unfinished rows.
    public static func open(
        at path: String,
        migrations: MigrationSet,
        durability: Durability,
        exclusive: Bool = false,
        logger: Logger
    ) async throws -> RequestJournal {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw JournalError(code: .cannotOpen, message: "cannot create the journal's directory '\(directory)'", cause: error)
            }
        }
        var lock: InstanceLock?
        if exclusive {
            do {
                lock = try InstanceLock(path: path + ".lock")
            } catch where error.code == .alreadyRunning {
                throw JournalError(
                    code: .inUse,
                    message: "journal '\(path)' is in use by another gateway (\(error.holderDescription)); stop it, or give this one another --journal"
                )
            } catch {
                throw JournalError(code: .cannotOpen, message: error.message)
            }
        }
        // Before the first open: the journal's WAL is written through it (one write per
        // commit). Without it the journal works the same, with a write per frame.
        let buffering = vpsgw_wal_buffer_register()
        if buffering != SQLITE_OK {
            logger.warning("journal WAL writes are not gathered (SQLite refused the VFS); commits take one write per page", metadata: ["sqlite_code": "\(buffering)"])
        }
        makePrivate(path)
        let pool = try openPool(path, readonly: false)
        makePrivate(path)
        do {
            let applied = try await Migrator.migrate(pool, migrations, path: path)
            for migration in applied {
                logger.info("journal migration applied", metadata: ["migration": "\(migration.name)", "journal": "\(path)"])
            }
            let effective = try await pool.writeWithoutTransaction { db -> String in
                // GRDB sets synchronous itself when it opens the writer; set ours after and read it back.
                try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
                return try String.fetchOne(db, sql: "PRAGMA synchronous") ?? "?"
            }
            let expected = durability == .full ? "2" : "1"
            guard effective == expected else {
                throw JournalError(code: .cannotOpen, message: "journal '\(path)' did not take synchronous=\(durability.rawValue) (reads back \(effective))")
            }
            // The schema table alone says nothing of damaged index or data pages: a journal
            // that passes it can still fail every write. quick_check reads every page.
            let check = try await pool.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check(5)") }
            guard check == ["ok"] else {
                throw JournalError(code: .corrupt, message: "journal '\(path)' is corrupt (\(check.joined(separator: "; "))); move it aside (the gateway then starts a new one) or restore it from a backup; `vps-gateway journal verify` lists the damage")
            }
            let memoryStatistics = SQLiteProcess.memoryStatisticsField
            logger.info("journal opened", metadata: [
                "journal": "\(path)", "synchronous": "\(durability.rawValue)", "sqlite_version": "\(String(cString: sqlite3_libversion()))",
                memoryStatistics.key: "\(memoryStatistics.value)",
            ])
        } catch let error as JournalError {
            throw error
        } catch {
            throw classify(error, path: path)
        }
        return RequestJournal(path: path, pool: pool, logger: logger, lock: lock)
    }

    /// The journal holds every MAC, address, VPS id and payload: owner-only. A new file is
    /// created 0600 before SQLite opens it (its WAL and shared-memory files take the database
    /// file's mode); an existing one, and its companions, are brought down to 0600.
    private static func makePrivate(_ path: String) {
        let fd = Glibc.open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        if fd >= 0 { close(fd) }
        for file in [path, path + "-wal", path + "-shm"] {
            var info = stat()
            if stat(file, &info) == 0 && info.st_uid == geteuid() && info.st_mode & 0o077 != 0 { chmod(file, 0o600) }
        }
    }

    /// Opens an existing journal for reading (`journal list|show|stats|verify`) while a gateway
    /// may be writing it. Nothing is created or migrated.
    public static func openExisting(at path: String, writable: Bool, logger: Logger) throws -> RequestJournal {
        guard FileManager.default.fileExists(atPath: path) else {
            throw JournalError(code: .cannotOpen, message: "no journal at '\(path)'; give --journal PATH (the gateway's --journal)")
        }
        let pool = try openPool(path, readonly: !writable)
        do {
            _ = try pool.read { db in try Migrator.applied(db) }
        } catch {
            throw classify(error, path: path)
        }
        return RequestJournal(path: path, pool: pool, logger: logger)
    }

    private static func openPool(_ path: String, readonly: Bool) throws -> DatabasePool {
        var configuration = Configuration()
        configuration.label = "journal"
        configuration.readonly = readonly
        configuration.busyMode = .timeout(5)
        configuration.maximumReaderCount = 4
        do {
            return try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw classify(error, path: path)
        }
    }

    static func classify(_ error: any Error, path: String) -> JournalError {
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_NOTADB, .SQLITE_CORRUPT:
                return JournalError(code: .corrupt, message: "journal '\(path)' is not a usable SQLite database; move it aside (the gateway then starts a new one) or restore it from a backup", cause: error)
            case .SQLITE_CANTOPEN, .SQLITE_READONLY, .SQLITE_PERM, .SQLITE_IOERR:
                return JournalError(code: .cannotOpen, message: "cannot open journal '\(path)' for writing; check that its directory exists and is writable by this user", cause: error)
            default:
                break
            }
        }
        return JournalError(code: .cannotOpen, message: "cannot open journal '\(path)'", cause: error)
    }

    /// The group-commit writer; writes wait for it, so it runs for the gateway's lifetime,
    /// until ``finishWriting()``.
    public func run() async throws {
        await committer.run()
    }

    /// Calls `observer` with the duration of every successful group commit.
    public func observeCommits(_ observer: @escaping @Sendable (Duration) -> Void) {
        committer.commitObserver.withLock { $0 = GroupCommitter.CommitObserver(observe: observer) }
    }

    /// Why the journal cannot record (the last commit failed, or the file was lost), or nil:
    /// a gateway whose journal cannot record is not healthy, whatever else works.
    public var writeFailure: JournalError? { lostFile.withLock { $0 } ?? committer.health.withLock { $0 } }

    /// Lets ``run()`` commit every write submitted so far, then return. Later writes fail
    /// with ``JournalError/Code/closed``.
    public func finishWriting() {
        committer.finish()
    }

    /// The schema version recorded in the file.
    public func schemaVersion() throws -> Int {
        try pool.read { db in try Migrator.applied(db).last?.version ?? 0 }
    }
}
