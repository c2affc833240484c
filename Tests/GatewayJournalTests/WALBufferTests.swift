import CSQLiteWALBuffer
import Foundation
import GRDB
import GRDBSQLite
import Testing

/// The VFS that gathers a commit's WAL frames into one write, on real files: a reader on
/// another connection must see every commit the moment it is made.
@Suite("WAL write buffer")
struct WALBufferTests {
    @Test("with synchronous=NORMAL (no sync at commit) every commit is in the WAL before another connection reads it; a transaction that spills pages before its commit reads back whole")
    func commitsReachTheFileBeforeReaders() async throws {
        #expect(vpsgw_wal_buffer_register() == SQLITE_OK)
        let directory = try RequestJournalTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/buffered.db"
        var configuration = Configuration()
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        let writer = try DatabasePool(path: path, configuration: configuration)
        try await writer.write { db in try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)") }
        // A connection of its own, reading the WAL through its own descriptor.
        let reader = try DatabaseQueue(path: path)
        defer { try? reader.close() }
        let gatheredBefore = vpsgw_wal_buffer_coalesced_writes()
        for id in 1...200 {
            let body = Data(repeating: UInt8(id % 251), count: 700 + id * 13)
            try await writer.write { db in try db.execute(sql: "INSERT INTO t VALUES (?, ?)", arguments: [id, body]) }
            let (count, read) = try await reader.read { db in
                (try Int.fetchOne(db, sql: "SELECT count(*) FROM t"), try Data.fetchOne(db, sql: "SELECT body FROM t WHERE id = ?", arguments: [id]))
            }
            #expect(count == id && read == body, "commit \(id) read back as \(String(describing: count)) rows")
            if count != id || read != body { break }
        }
        #expect(vpsgw_wal_buffer_coalesced_writes() > gatheredBefore, "no WAL write went through the buffer")

        // Bigger than the page cache: SQLite writes frames before the commit and rewrites some.
        try await writer.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA cache_size = 10")
            try db.inTransaction {
                for id in 1000..<3000 { try db.execute(sql: "INSERT INTO t VALUES (?, ?)", arguments: [id, Data(repeating: 7, count: 900)]) }
                try db.execute(sql: "UPDATE t SET body = zeroblob(950) WHERE id % 3 = 0")
                return .commit
            }
        }
        let (total, zeroed) = try await reader.read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM t"), try Int.fetchOne(db, sql: "SELECT count(*) FROM t WHERE length(body) = 950"))
        }
        #expect(total == 2200)
        #expect(zeroed == (1...200).count(where: { $0 % 3 == 0 }) + (1000..<3000).count(where: { $0 % 3 == 0 }))
        #expect(try await reader.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") } == ["ok"])
        try writer.close()
    }
}
