import Foundation
@testable import GatewayJournal
import GRDB
import GRDBSQLite
import Logging
import Synchronization
import Testing

/// The journal in process, on real SQLite files in a directory of each test's own: group
/// commit, a refused write in a batch, migrations, recovery queries and prune.
@Suite("Request journal")
struct RequestJournalTests {
    static let logger = Logger(label: "journal-test")
    /// The repository's `migrations/`, what the gateway ships.
    static let shippedMigrations = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("migrations").path

    @Test("a request is recorded once per id: a repeat gets the stored row back and changes nothing")
    func insertOncePerID() async throws {
        try await withRunningJournal { journal, _ in
            let record = Self.record("r-1", now: 1000, deadline: 9000)
            guard case .inserted = try await journal.insert(record) else {
                Issue.record("the first insert of r-1 did not insert")
                return
            }
            var repeated = record
            repeated.payload = Data("another payload".utf8)
            guard case .exists(let stored) = try await journal.insert(repeated) else {
                Issue.record("the repeat of r-1 inserted a second row")
                return
            }
            #expect(stored == record)
            #expect(try journal.record("r-1") == record)
            #expect(try journal.stats().countsByState["pending"] == 1)
        }
    }

    @Test("a row's every value reads back as written, through the insert and the final row: empty and absent text and blobs, non-ASCII text, 64-bit times")
    func rowValuesRoundTrip() async throws {
        try await withRunningJournal { journal, _ in
            var record = JournalRecord(
                requestID: "r-ü-\u{1F600}", method: "FindVPSByLease", payload: Data(),
                targetEnvironment: "", targetInstance: "instance ø", origin: "admin", now: 1_765_000_000_123, deadline: Int64.max - 1
            )
            record.state = .inFlight
            record.attempts = 1
            record.leaseOwner = "pid 1@host"
            guard case .inserted = try await journal.insert(record) else {
                Issue.record("the row was not inserted")
                return
            }
            #expect(try journal.record(record.requestID) == record, "the pending row read back differs")

            var final = record
            final.state = .completed
            final.outcome = .ok
            final.attempts = 2
            final.responderInstance = "prod-1"
            final.responderEnvironment = nil
            final.resultPayload = Data([0, 1, 2, 0xFF, 0])
            final.error = "über: a worker's error text"
            final.updatedAt = 1_765_000_000_999
            final.leaseOwner = nil
            let written = Mutex(false)
            journal.finish(final) { written.withLock { $0 = true } }
            #expect(await poll { written.withLock { $0 } }, "the final row was not written")
            let readBack = try journal.record(record.requestID)
            #expect(readBack == final, "the final row read back differs: \(String(describing: readBack))")

            var emptyResult = final
            emptyResult.requestID = "r-empty-result"
            emptyResult.resultPayload = Data()
            emptyResult.error = ""
            _ = try await journal.insert(record.with(id: "r-empty-result"))
            let emptyWritten = Mutex(false)
            journal.finish(emptyResult) { emptyWritten.withLock { $0 = true } }
            #expect(await poll { emptyWritten.withLock { $0 } })
            let stored = try journal.record("r-empty-result")
            #expect(stored?.resultPayload == Data(), "an empty answer is stored empty, not absent")
            #expect(stored?.error == "")
        }
    }

    @Test("a value SQLite refuses to bind fails its write, naming the value, instead of leaving that column NULL", .timeLimit(.minutes(5)))
    func refusedBindFailsTheWrite() async throws {
        try await withJournal { journal, _ in
            let committer = GroupCommitter(pool: journal.pool, logger: Self.logger)
            let writer = Task { await committer.run() }
            let pending = Self.record("r-1", now: 1000, deadline: 9000)
            try await committer.commit { db in try pending.insert(db) }
            var final = Self.final("r-1", .completed, updatedAt: 2000)
            final.resultPayload = Data(repeating: 7, count: 4096)
            let refused = await #expect(throws: JournalError.self) {
                try await committer.commit { [final] db in
                    // SQLite refuses to bind a value longer than the connection's length limit.
                    let previous = sqlite3_limit(db.sqliteConnection, SQLITE_LIMIT_LENGTH, 1000)
                    defer { sqlite3_limit(db.sqliteConnection, SQLITE_LIMIT_LENGTH, previous) }
                    try final.writeEnd(db)
                }
            }
            let cause = refused?.cause.map { "\($0)" } ?? ""
            #expect(cause.contains("value 6 could not be bound"), "\(String(describing: refused))")
            committer.finish()
            await writer.value
            let stored = try journal.record("r-1")
            #expect(stored?.state == .pending, "the row was ended without its answer: \(String(describing: stored))")
            #expect(stored?.resultPayload == nil)
        }
    }

    @Test("writes waiting together share one commit, and a refused write fails alone while the others are recorded")
    func groupCommitWithRefusedWrite() async throws {
        try await withJournal { journal, _ in
            let commits = Mutex(0)
            journal.observeCommits { _ in commits.withLock { $0 += 1 } }
            try await withThrowingTaskGroup(of: (String, Result<Bool, JournalError>).self) { group in
                // An empty request id breaks the table's CHECK constraint: SQLite refuses it.
                for id in (1...20).map({ "ok-\($0)" }) + [""] {
                    group.addTask {
                        do {
                            if case .inserted = try await journal.insert(Self.record(id, now: 1000, deadline: 9000)) { return (id, .success(true)) }
                            return (id, .success(false))
                        } catch let error as JournalError {
                            return (id, .failure(error))
                        }
                    }
                }
                // The writer starts once all 21 wait: they are one batch.
                #expect(await poll { journal.committer.queuedWrites == 21 }, "the inserts did not queue")
                group.addTask {
                    try await journal.run()
                    return ("writer", .success(true))
                }
                var results: [String: Result<Bool, JournalError>] = [:]
                for try await (id, result) in group where id != "writer" {
                    results[id] = result
                    if results.count == 21 { journal.finishWriting() }
                }
                for index in 1...20 {
                    #expect((try? results["ok-\(index)"]?.get()) == true, "ok-\(index): \(String(describing: results["ok-\(index)"]))")
                }
                guard case .failure(let refused)? = results[""] else {
                    Issue.record("the write with an empty request id was not refused: \(String(describing: results[""]))")
                    return
                }
                #expect(refused.code == .writeFailed)
            }
            #expect(commits.withLock { $0 } == 1, "21 waiting writes, one commit")
            #expect(try journal.stats().countsByState["pending"] == 20)
            #expect(journal.writeFailure == nil, "one refused write does not make the journal unhealthy")
        }
    }

    @Test("a submitted final row is written before the writer stops, and a write after the stop fails closed")
    func finishCommitsQueuedWrites() async throws {
        try await withJournal { journal, _ in
            let writer = Task { try await journal.run() }
            _ = try await journal.insert(Self.record("r-1", now: 1000, deadline: 9000))
            journal.markInFlight("r-1", attempt: 1, owner: "test@boot")
            var final = Self.record("r-1", now: 1000, deadline: 9000)
            final.state = .completed
            final.outcome = .ok
            final.attempts = 1
            final.responderInstance = "production-1"
            final.responderEnvironment = "production"
            final.resultPayload = Data("answer".utf8)
            final.updatedAt = 2000
            journal.finish(final)
            journal.finishWriting()
            try await writer.value
            let stored = try #require(try journal.record("r-1"))
            #expect(stored.state == .completed && stored.outcome == .ok && stored.responderInstance == "production-1")
            #expect(stored.resultPayload == Data("answer".utf8) && stored.leaseOwner == nil)
            let refused = await #expect(throws: JournalError.self) { _ = try await journal.insert(Self.record("r-2", now: 1000, deadline: 9000)) }
            #expect(refused?.code == .closed)
            #expect(try journal.record("r-2") == nil)
        }
    }

    @Test("a submitted write waits for the next awaited one and shares its commit; finishing does not wait for the delay", .timeLimit(.minutes(5)))
    func submittedWriteSharesTheNextCommit() async throws {
        try await withJournal { journal, _ in
            // A delay no test run reaches: only the awaited write or the finish can commit it.
            let committer = GroupCommitter(pool: journal.pool, logger: Self.logger, submittedWriteDelay: .seconds(3600))
            let commits = Mutex(0)
            committer.commitObserver.withLock { $0 = .init { _ in commits.withLock { $0 += 1 } } }
            let writer = Task { await committer.run() }
            let submittedDone = Mutex(false)
            committer.submit(whenDone: { submittedDone.withLock { $0 = true } }) { db in
                try Self.record("submitted", now: 1000, deadline: 9000).insert(db)
            }
            try await committer.commit { db in try Self.record("awaited", now: 1000, deadline: 9000).insert(db) }
            #expect(submittedDone.withLock { $0 }, "the submitted write was not committed with the awaited one")
            #expect(commits.withLock { $0 } == 1, "one commit for both writes")

            committer.submit { db in try Self.record("last", now: 1000, deadline: 9000).insert(db) }
            committer.finish()
            await writer.value
            #expect(commits.withLock { $0 } == 2, "finishing committed the lingering write at once")
            #expect(try journal.stats().countsByState["pending"] == 3)
        }
    }

    @Test("a submitted write arriving within its delay after a commit does not wake the writer; the next awaited write takes it along", .timeLimit(.minutes(5)))
    func submittedWriteAfterACommitWakesNobody() async throws {
        try await withJournal { journal, _ in
            let committer = GroupCommitter(pool: journal.pool, logger: Self.logger, submittedWriteDelay: .seconds(3600))
            let commits = Mutex(0)
            committer.commitObserver.withLock { $0 = .init { _ in commits.withLock { $0 += 1 } } }
            let writer = Task { await committer.run() }
            try await committer.commit { db in try Self.record("first", now: 1000, deadline: 9000).insert(db) }
            try #require(await poll { committer.writerSleeps }, "the writer did not go back to sleep after the commit")
            let wokenBefore = committer.wakingWrites
            for index in 1...3 {
                committer.submit { db in try Self.record("final-\(index)", now: 1000, deadline: 9000).insert(db) }
            }
            #expect(committer.wakingWrites == wokenBefore, "a submitted write woke the writer that had just committed")
            try await committer.commit { db in try Self.record("second", now: 1000, deadline: 9000).insert(db) }
            #expect(committer.wakingWrites == wokenBefore + 1, "the awaited write wakes the writer")
            #expect(commits.withLock { $0 } == 2, "the submitted writes shared the second commit")
            #expect(committer.queuedWrites == 0)
            committer.finish()
            await writer.value
            #expect(try journal.stats().countsByState["pending"] == 5)
        }
    }

    @Test("the commit observer is called at the same stack depth after hundreds of commits (no chain of closure thunks growing per commit)")
    func commitObserverDoesNotGrowPerCommit() async throws {
        try await withRunningJournal { journal, _ in
            // The observer's stack address at each commit: a chain of re-abstraction thunks
            // growing by two per commit put commit 300 69,600 bytes deeper than commit 10.
            let depths = Mutex<[UInt]>([])
            journal.observeCommits { _ in
                var marker = 0
                let address = withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) }
                depths.withLock { $0.append(address) }
            }
            for index in 1...300 {
                _ = try await journal.insert(Self.record("r-\(index)", now: 1000, deadline: 9000))
            }
            let seen = depths.withLock { $0 }
            try #require(seen.count >= 300, "300 awaited inserts one after another are 300 commits")
            let growth = Int(bitPattern: seen[9]) - Int(bitPattern: seen[299])
            #expect(abs(growth) < 1024, "the observer ran \(growth) bytes deeper at commit 300 than at commit 10")
        }
    }

    @Test("a submitted write with no other write to share a commit with is committed after its delay")
    func loneSubmittedWriteIsCommitted() async throws {
        try await withJournal { journal, _ in
            let committer = GroupCommitter(pool: journal.pool, logger: Self.logger, submittedWriteDelay: .milliseconds(20))
            let writer = Task { await committer.run() }
            let done = Mutex(false)
            committer.submit(whenDone: { done.withLock { $0 = true } }) { db in
                try Self.record("alone", now: 1000, deadline: 9000).insert(db)
            }
            let committed = await poll { done.withLock { $0 } }
            committer.finish()
            await writer.value
            #expect(committed, "the lone submitted write was not committed")
            let stored = try journal.record("alone")
            #expect(stored?.state == .pending)
        }
    }

    @Test("a cancelled writer commits what is queued once, then refuses new writes as closed", .timeLimit(.minutes(5)))
    func cancelledWriterCommitsQueuedWrites() async throws {
        try await withJournal { journal, _ in
            let committer = GroupCommitter(pool: journal.pool, logger: Self.logger, submittedWriteDelay: .seconds(3600))
            committer.submit { db in try Self.record("queued", now: 1000, deadline: 9000).insert(db) }
            let writer = Task { await committer.run() }
            writer.cancel()
            await writer.value
            let stored = try journal.record("queued")
            #expect(stored?.state == .pending)
            let refused = await #expect(throws: JournalError.self) {
                try await committer.commit { db in try Self.record("late", now: 1000, deadline: 9000).insert(db) }
            }
            #expect(refused?.code == .closed)
        }
    }

    @Test("recovery: unfinished rows oldest first, overdue ones expired as deadline_exceeded, and a replay makes only finished rows pending again under their ids")
    func recoveryQueries() async throws {
        try await withRunningJournal { journal, _ in
            _ = try await journal.insert(Self.record("b-overdue", now: 2000, deadline: 3000))
            _ = try await journal.insert(Self.record("a-oldest", now: 1000, deadline: 10_000))
            _ = try await journal.insert(Self.record("c-done", now: 3000, deadline: 10_000))
            try await journal.finishAndWait(Self.final("c-done", .completed, updatedAt: 3500))
            #expect(try journal.unfinished().map(\.requestID) == ["a-oldest", "b-overdue"])
            let counts = try journal.unfinishedCounts()
            #expect(counts.pending == 2 && counts.inFlight == 0)

            #expect(try await journal.expireOverdue(now: 5000) == 1)
            let expired = try #require(try journal.record("b-overdue"))
            #expect(expired.state == .expired && expired.outcome == .deadlineExceeded)
            #expect(expired.error?.contains("deadline passed") == true)

            let replayed = try await journal.resetForReplay(.init(requestIDs: ["c-done", "a-oldest"]), deadline: 20_000)
            #expect(replayed.map(\.requestID) == ["c-done"], "a-oldest is still running: a replay leaves it alone")
            let row = try #require(replayed.first)
            #expect(row.state == .pending && row.origin == "replay" && row.deadlineAt == 20_000)
            #expect(row.outcome == nil && row.resultPayload == nil && row.responderInstance == nil)

            let byState = try await journal.resetForReplay(.init(state: .expired), deadline: 20_000)
            #expect(byState.map(\.requestID) == ["b-overdue"])
        }
    }

    @Test("prune deletes only finished rows older than the cutoff, one bounded batch at a time")
    func pruneInBatches() async throws {
        try await withRunningJournal { journal, _ in
            for (index, state) in [JournalRecord.State.completed, .failed, .expired].enumerated() {
                _ = try await journal.insert(Self.record("old-\(index)", now: 1000, deadline: 90_000))
                try await journal.finishAndWait(Self.final("old-\(index)", state, updatedAt: 1000 + Int64(index)))
            }
            _ = try await journal.insert(Self.record("recent", now: 1000, deadline: 90_000))
            try await journal.finishAndWait(Self.final("recent", .completed, updatedAt: 9000))
            _ = try await journal.insert(Self.record("unfinished", now: 1000, deadline: 90_000))

            #expect(try await journal.pruneBatch(olderThan: 5000, batch: 2) == 2)
            #expect(try await journal.pruneBatch(olderThan: 5000, batch: 2) == 1)
            #expect(try await journal.pruneBatch(olderThan: 5000, batch: 2) == 0)
            let left = try journal.list(.init()).map(\.requestID).sorted()
            #expect(left == ["recent", "unfinished"])
            try await journal.checkpoint()
            #expect(try journal.stats().walBytes == 0, "a TRUNCATE checkpoint empties the WAL")
        }
    }

    @Test("a journal written by a newer build is refused as schemaTooNew, naming both versions, and is left as it was")
    func newerSchemaRefused() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/journal.db"
        let migrations = try MigrationSet.load(from: Self.shippedMigrations)
        _ = try await RequestJournal.open(at: path, migrations: migrations, durability: .normal, logger: Self.logger)
        let next = migrations.latestVersion + 1
        try Self.execute(path, "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (\(next), '\(String(format: "%04d", next))_future.sql', 'x', 'now')")
        let error = await #expect(throws: JournalError.self) {
            _ = try await RequestJournal.open(at: path, migrations: migrations, durability: .normal, logger: Self.logger)
        }
        #expect(error?.code == .schemaTooNew)
        #expect(error?.message.contains("schema version \(next)") == true && error?.message.contains("knows up to \(migrations.latestVersion)") == true, "\(String(describing: error))")
        #expect(try Self.versions(path) == Array(1...next), "the refusal wrote nothing")
    }

    @Test("an applied migration whose file was edited afterwards is refused as migrationChanged, naming the file")
    func editedMigrationRefused() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let copy = directory + "/migrations"
        try FileManager.default.copyItem(atPath: Self.shippedMigrations, toPath: copy)
        let path = directory + "/journal.db"
        _ = try await RequestJournal.open(at: path, migrations: try MigrationSet.load(from: copy), durability: .normal, logger: Self.logger)
        let first = try #require(try MigrationSet.load(from: copy).migrations.first)
        try (first.sql + "\n-- edited after it shipped\n").write(toFile: copy + "/" + first.name, atomically: true, encoding: .utf8)
        let error = await #expect(throws: JournalError.self) {
            _ = try await RequestJournal.open(at: path, migrations: try MigrationSet.load(from: copy), durability: .normal, logger: Self.logger)
        }
        #expect(error?.code == .migrationChanged)
        #expect(error?.message.contains(first.name) == true, "\(String(describing: error))")
    }

    @Test("a call's two row writes (pending and final) build no temporary b-tree: the state CHECK is comparisons, not an IN list")
    func rowWritesBuildNoTemporaryTable() async throws {
        try await withJournal { _, directory in
            let queue = try DatabaseQueue(path: directory + "/journal.db")
            defer { try? queue.close() }
            for sql in [JournalRecord.insertSQL, JournalRecord.writeEndSQL] {
                let opcodes = try await queue.read { db -> [String] in
                    let statement = try db.makeStatement(sql: "EXPLAIN " + sql)
                    let parameters = Int(sqlite3_bind_parameter_count(statement.sqliteStatement))
                    statement.arguments = StatementArguments(Array(repeating: DatabaseValue.null, count: parameters))
                    return try Row.fetchAll(statement).map { $0["opcode"] }
                }
                #expect(opcodes.contains("Insert"), "not the program of a row write: \(opcodes)")
                #expect(!opcodes.contains("OpenEphemeral"), "\(sql) builds a temporary b-tree for every row")
            }
        }
    }

    @Test("0002 rebuilds the requests table: every row keeps its values and rowid, the indexes are as before, and a state outside the five is still refused")
    func stateCheckRebuildKeepsRows() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let firstOnly = directory + "/migrations-0001"
        try FileManager.default.createDirectory(atPath: firstOnly, withIntermediateDirectories: true)
        let first = try #require(try MigrationSet.load(from: Self.shippedMigrations).migrations.first)
        try first.sql.write(toFile: firstOnly + "/" + first.name, atomically: true, encoding: .utf8)
        let path = directory + "/journal.db"
        _ = try await RequestJournal.open(at: path, migrations: try MigrationSet.load(from: firstOnly), durability: .normal, logger: Self.logger)
        #expect(try Self.versions(path) == [1])
        // Rows in every state, with NULLs, empty and binary blobs, a deleted row's rowid gap.
        try Self.execute(path, """
            INSERT INTO requests VALUES ('a', 'FindVPSByLease', NULL, NULL, x'0a00ff', 'admin', 'pending', 0, 1, 1, 1, 9, NULL, NULL, NULL, NULL, NULL, NULL);
            INSERT INTO requests VALUES ('gone', 'FindVPSByLease', NULL, NULL, x'', 'admin', 'pending', 0, 2, 2, 2, 9, NULL, NULL, NULL, NULL, NULL, NULL);
            INSERT INTO requests VALUES ('b', 'FindVPSByLease', 'beta', 'b-1', x'', 'dhcp', 'in_flight', 1, 3, 3, 3, 9, 'pid 1@host', NULL, NULL, NULL, NULL, NULL);
            INSERT INTO requests VALUES ('c', 'FindVPSByLease', NULL, NULL, x'01', 'replay', 'completed', 2, 4, 5, 4, 9, NULL, 'p-1', 'production', 'ok', x'0a0b', NULL);
            INSERT INTO requests VALUES ('d', 'FindVPSByLease', NULL, NULL, x'02', 'admin', 'failed', 3, 5, 6, 5, 9, NULL, NULL, NULL, 'failed', NULL, 'refused: ü');
            INSERT INTO requests VALUES ('e', 'FindVPSByLease', NULL, NULL, x'03', 'admin', 'expired', 1, 6, 7, 6, 9, NULL, NULL, NULL, 'deadline_exceeded', NULL, 'deadline passed');
            DELETE FROM requests WHERE request_id = 'gone';
            """)
        func snapshot() throws -> (rows: [Row], indexes: [Row]) {
            let queue = try DatabaseQueue(path: path)
            defer { try? queue.close() }
            return try queue.read { db in
                (try Row.fetchAll(db, sql: "SELECT rowid, * FROM requests ORDER BY rowid"),
                 try Row.fetchAll(db, sql: "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests' ORDER BY name"))
            }
        }
        let before = try snapshot()
        #expect(before.rows.count == 5 && before.indexes.count == 4)

        _ = try await RequestJournal.open(at: path, migrations: try MigrationSet.load(from: Self.shippedMigrations), durability: .normal, logger: Self.logger)
        #expect(try Self.versions(path) == [1, 2])
        let after = try snapshot()
        #expect(after.rows == before.rows)
        #expect(after.indexes == before.indexes)
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        #expect(try await queue.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") } == ["ok"])
        let refused = await #expect(throws: DatabaseError.self) {
            try await queue.write { db in
                try db.execute(sql: "INSERT INTO requests VALUES ('x', 'FindVPSByLease', NULL, NULL, x'', 'admin', 'done', 0, 1, 1, 1, 9, NULL, NULL, NULL, NULL, NULL, NULL)")
            }
        }
        #expect(refused?.extendedResultCode == .SQLITE_CONSTRAINT_CHECK, "\(String(describing: refused))")
        await #expect(throws: DatabaseError.self) {
            try await queue.write { db in try db.execute(sql: "UPDATE requests SET state = 'Completed' WHERE request_id = 'c'") }
        }
        #expect(try await queue.read { db in try String.fetchOne(db, sql: "SELECT state FROM requests WHERE request_id = 'c'") } == "completed")
    }

    @Test("migration files that skip a number, share one, or are missing are refused before any journal is touched")
    func badMigrationSetsRefused() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cases: [(files: [String], problem: String)] = [
            (["0001_a.sql", "0003_c.sql"], "breaks the numbering"),
            (["0001_a.sql", "0001_b.sql"], "have the same number"),
            (["1_a.sql"], "is not named NNNN_name.sql"),
            ([], "no NNNN_name.sql files"),
        ]
        for (index, example) in cases.enumerated() {
            let set = directory + "/set-\(index)"
            try FileManager.default.createDirectory(atPath: set, withIntermediateDirectories: true)
            for file in example.files { try "SELECT 1;".write(toFile: set + "/" + file, atomically: true, encoding: .utf8) }
            let error = #expect(throws: JournalError.self) { _ = try MigrationSet.load(from: set) }
            #expect(error?.code == .migrationsMissing && error?.message.contains(example.problem) == true, "\(example.files): \(String(describing: error))")
        }
    }

    @Test("a file that is not a SQLite database is refused as corrupt and left byte for byte as it was")
    func notADatabaseRefused() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/journal.db"
        let garbage = Data(String(repeating: "not a database, an operator's notes\n", count: 200).utf8)
        try garbage.write(to: URL(fileURLWithPath: path))
        let error = await #expect(throws: JournalError.self) {
            _ = try await RequestJournal.open(at: path, migrations: try MigrationSet.load(from: Self.shippedMigrations), durability: .full, logger: Self.logger)
        }
        #expect(error?.code == .corrupt, "\(String(describing: error))")
        #expect(FileManager.default.contents(atPath: path) == garbage)
    }

    @Test("a row whose outcome is not one the journal records is refused as corrupt, naming the value, and left as it was")
    func unknownOutcomeRefused() async throws {
        try await withRunningJournal { journal, directory in
            _ = try await journal.insert(Self.record("r-odd", now: 1000, deadline: 90_000))
            try await journal.finishAndWait(Self.final("r-odd", .completed, updatedAt: 2000))
            #expect(try journal.record("r-odd")?.outcome == .ok)
            // Another program (or a damaged page) wrote a value this build does not know.
            let other = try DatabaseQueue(path: directory + "/journal.db")
            try await other.write { db in try db.execute(sql: "UPDATE requests SET outcome = 'maybe' WHERE request_id = 'r-odd'") }
            let error = #expect(throws: JournalError.self) { _ = try journal.record("r-odd") }
            #expect(error?.code == .corrupt && error?.message.contains("unknown outcome 'maybe'") == true, "\(String(describing: error))")
            #expect(error?.message.contains("ok, not_found, no_receivers, deadline_exceeded, failed") == true)
            let stored = try await other.read { db in try String.fetchOne(db, sql: "SELECT outcome FROM requests WHERE request_id = 'r-odd'") }
            #expect(stored == "maybe")
            try other.close()
        }
    }

    @Test("a second exclusive opener of one journal is refused as inUse, naming the holder's pid")
    func secondWriterRefused() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/journal.db"
        let migrations = try MigrationSet.load(from: Self.shippedMigrations)
        let first = try await RequestJournal.open(at: path, migrations: migrations, durability: .normal, exclusive: true, logger: Self.logger)
        let error = await #expect(throws: JournalError.self) {
            _ = try await RequestJournal.open(at: path, migrations: migrations, durability: .normal, exclusive: true, logger: Self.logger)
        }
        #expect(error?.code == .inUse && error?.message.contains("pid \(getpid())") == true, "\(String(describing: error))")
        withExtendedLifetime(first) {}
    }

    // MARK: Support

    static func record(_ id: String, now: Int64, deadline: Int64) -> JournalRecord {
        JournalRecord(
            requestID: id, method: "FindVPSByLease", payload: Data("payload of \(id)".utf8),
            targetEnvironment: nil, targetInstance: nil, origin: "admin", now: now, deadline: deadline
        )
    }

    static func final(_ id: String, _ state: JournalRecord.State, updatedAt: Int64) -> JournalRecord {
        var row = record(id, now: 1000, deadline: 90_000)
        row.state = state
        row.outcome = state == .completed ? .ok : .failed
        row.attempts = 1
        row.updatedAt = updatedAt
        return row
    }

    /// A directory of the test's own, under the run's root when `make test` gives one (its
    /// leftover check then sees what a test forgot).
    static func temporaryDirectory() throws -> String {
        let root = ProcessInfo.processInfo.environment["VPSGW_TEST_ROOT"] ?? NSTemporaryDirectory()
        var template = Array((root + "/journal-test-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw JournalError(code: .cannotOpen, message: "mkdtemp in \(root) failed") }
        return String(cString: made)
    }

    /// A journal on a new file whose writer the test starts (or holds back).
    func withJournal(_ body: (RequestJournal, String) async throws -> Void) async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = try await RequestJournal.open(
            at: directory + "/journal.db", migrations: try MigrationSet.load(from: Self.shippedMigrations), durability: .normal, logger: Self.logger
        )
        try await body(journal, directory)
    }

    /// A journal whose writer runs for the body, and is stopped after it, failed or not.
    func withRunningJournal(_ body: (RequestJournal, String) async throws -> Void) async throws {
        try await withJournal { journal, directory in
            let writer = Task { try await journal.run() }
            do {
                try await body(journal, directory)
            } catch {
                journal.finishWriting()
                try? await writer.value
                throw error
            }
            journal.finishWriting()
            try await writer.value
        }
    }

    static func execute(_ path: String, _ sql: String) throws {
        let queue = try DatabaseQueue(path: path)
        try queue.write { try $0.execute(sql: sql) }
    }

    static func versions(_ path: String) throws -> [Int] {
        try DatabaseQueue(path: path).read { try Int.fetchAll($0, sql: "SELECT version FROM schema_migrations ORDER BY version") }
    }
}

extension RequestJournal {
    /// ``finish(_:whenWritten:)``, waited for.
    func finishAndWait(_ final: JournalRecord) async throws {
        await withCheckedContinuation { continuation in finish(final) { continuation.resume() } }
    }
}

/// Re-checks `condition` every millisecond until it holds, for at most `timeout`.
func poll(timeout: Duration = .seconds(20), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return condition()
}

extension JournalRecord {
    func with(id: String) -> JournalRecord {
        var copy = self
        copy.requestID = id
        return copy
    }
}
