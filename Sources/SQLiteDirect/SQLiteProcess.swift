import CSQLiteProcess
import GRDBSQLite

/// SQLite's process-wide options, set by each command that runs the hot path (the gateway
/// and the worker) before anything opens a database.
///
/// The system SQLite is built with memory statistics on: every allocation and free locks a
/// global mutex to keep counters that nothing here reads. Counted with callgrind over a
/// call's two journal writes in a group commit, that is 9.7 % of SQLite's instructions.
/// (The other usual option, multi-thread mode, GRDB already sets on each connection it opens.)
public enum SQLiteProcess {
    /// Sets the options, or leaves them if SQLite is already initialized (then nothing
    /// changes; the startup log lines show what is in effect, so the refusal is not
    /// returned). Call it before any thread that may use SQLite starts: SQLite's
    /// configuration is not thread-safe.
    public static func configure() {
        _ = vpsgw_sqlite_configure_process()
    }

    /// Whether SQLite keeps memory statistics in this process, as a startup log line's field.
    /// Read once a connection is open: with statistics off the counter never leaves 0.
    public static var memoryStatisticsField: (key: String, value: String) {
        var current: sqlite3_int64 = 0, highest: sqlite3_int64 = 0
        sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &current, &highest, 0)
        return ("sqlite_memory_statistics", current != 0 ? "on" : "off")
    }
}
