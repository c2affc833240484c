public import Foundation
public import GRDB
import GRDBSQLite

/// A cached statement run with its values bound, and its first row read, through SQLite's C
/// API: for the statements every call runs (the journal's pending and final rows, the
/// inventory's lookups).
///
/// GRDB's `execute(arguments:)` and `Row.fetchOne` box each value as an existential, convert
/// the lot to an array of `DatabaseValue`s, build a row object with its column names and run
/// observation and authorizer hooks around the step. On the journal's writer thread that was
/// about as much CPU per row as SQLite's own work; in a worker, GRDB's part of a lookup cost
/// more than the query. The transactions around these statements are GRDB's, so nothing it
/// tracks is skipped.
///
/// Only for SQL no other caller runs through GRDB: GRDB remembers which arguments it bound
/// to a cached statement and would not know about these.
public struct DirectStatement: ~Copyable {
    private let statement: Statement
    private let handle: SQLiteStatement
    private var position: Int32 = 0
    /// The first value SQLite refused to bind (too big, out of memory), thrown by ``run(_:)``:
    /// SQLite leaves such a parameter NULL, and a nullable column would then be written
    /// without its value (a completed row without its answer) instead of failing.
    private var refusedBind: (position: Int32, code: Int32)?

    public init(_ db: Database, sql: String) throws {
        statement = try db.cachedStatement(sql: sql)
        handle = statement.sqliteStatement
        // A statement that failed last time may still hold its result; its values are
        // all bound again below.
        sqlite3_reset(handle)
    }

    public mutating func bind(_ value: String?) {
        guard var value else { return bindNull() }
        value.withUTF8 { bind(bytes: UnsafeRawBufferPointer($0), asText: true) }
    }

    public mutating func bind(_ value: Data?) {
        guard let value else { return bindNull() }
        value.withUnsafeBytes { bind(bytes: $0, asText: false) }
    }

    private mutating func bindNull() {
        position += 1
        check(sqlite3_bind_null(handle, position))
    }

    /// An empty value has no base address, and a NULL pointer would bind NULL: it is bound
    /// as an empty text or blob instead.
    private mutating func bind(bytes: UnsafeRawBufferPointer, asText: Bool) {
        position += 1
        let count = sqlite3_uint64(bytes.count)
        let base = bytes.isEmpty ? nil : bytes.baseAddress
        switch (asText, base) {
        case (true, let base?):
            check(sqlite3_bind_text64(handle, position, base.assumingMemoryBound(to: CChar.self), count, Self.transient, UInt8(SQLITE_UTF8)))
        case (true, nil):
            check(sqlite3_bind_text(handle, position, "", 0, nil))
        case (false, let base?):
            check(sqlite3_bind_blob64(handle, position, base, count, Self.transient))
        case (false, nil):
            check(sqlite3_bind_zeroblob(handle, position, 0))
        }
    }

    public mutating func bind(_ value: Int64) {
        position += 1
        check(sqlite3_bind_int64(handle, position, value))
    }

    public mutating func bind(_ value: Int) { bind(Int64(value)) }

    /// Steps the statement to its end. A failure is thrown as GRDB's `DatabaseError`, with
    /// the result code the journal's committer classifies (a full disk, a corrupt file, a
    /// refused row).
    public consuming func run(_ db: Database) throws {
        try checkBound()
        var code = sqlite3_step(handle)
        while code == SQLITE_ROW { code = sqlite3_step(handle) }
        try finish(db, code)
    }

    /// Steps to the statement's first row and reads it with `read`; nil when there is none.
    /// The statement is reset afterwards (a `LIMIT 1` query is not stepped to its end).
    public consuming func firstRow<Value>(_ db: Database, _ read: (FirstRow) -> Value) throws -> Value? {
        try checkBound()
        let code = sqlite3_step(handle)
        guard code == SQLITE_ROW else {
            try finish(db, code)
            return nil
        }
        let value = read(FirstRow(handle: handle))
        sqlite3_reset(handle)
        return value
    }

    /// The current row of a stepped statement: read it inside ``firstRow(_:_:)``'s closure
    /// only (the statement is reset after it).
    public struct FirstRow {
        fileprivate let handle: SQLiteStatement

        /// Column `index` (from 0) as text: nil for NULL, a number in SQLite's text form.
        public func text(_ index: Int32) -> String? {
            guard sqlite3_column_type(handle, index) != SQLITE_NULL, let bytes = sqlite3_column_text(handle, index) else { return nil }
            // Asked for after the text, as SQLite's documentation says: the count is of the
            // converted value's bytes.
            let count = Int(sqlite3_column_bytes(handle, index))
            return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
        }
    }

    private func checkBound() throws {
        precondition(position == sqlite3_bind_parameter_count(handle), "\(statement.sql): \(position) values bound")
        if let refused = refusedBind {
            throw DatabaseError(
                resultCode: ResultCode(rawValue: refused.code),
                message: "value \(refused.position) could not be bound (\(String(cString: sqlite3_errstr(refused.code))))",
                sql: statement.sql
            )
        }
    }

    /// Resets the statement after its last step; throws unless that step ended it.
    private func finish(_ db: Database, _ code: Int32) throws {
        guard code == SQLITE_DONE else {
            let message = db.sqliteConnection.map { String(cString: sqlite3_errmsg($0)) }
            sqlite3_reset(handle)
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: statement.sql)
        }
        sqlite3_reset(handle)
    }

    private mutating func check(_ code: Int32) {
        if code != SQLITE_OK && refusedBind == nil { refusedBind = (position, code) }
    }

    /// SQLite copies the value before the call returns (`SQLITE_TRANSIENT`).
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}
