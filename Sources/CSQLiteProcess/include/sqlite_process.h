#ifndef VPSGW_SQLITE_PROCESS_H
#define VPSGW_SQLITE_PROCESS_H

/// Sets SQLite's process-wide options, which it takes only before it initializes (the
/// first connection opened, or VFS registered): no memory statistics, so no global mutex
/// and counters around every allocation. Returns SQLITE_OK, or SQLITE_MISUSE once SQLite
/// is initialized (then nothing changed).
///
/// Not thread-safe, like sqlite3_config itself: call it before any other thread can use
/// SQLite. In C because sqlite3_config is variadic, which Swift cannot call.
int vpsgw_sqlite_configure_process(void);

#endif
