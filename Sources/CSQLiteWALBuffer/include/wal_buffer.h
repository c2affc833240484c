#ifndef VPSGW_WAL_BUFFER_H
#define VPSGW_WAL_BUFFER_H

/// Registers, once per process, a VFS that wraps the default one and becomes the default.
/// Files other than write-ahead logs pass straight through. Writes to a WAL are gathered
/// while they are sequential and written with one call when the commit frame's page is
/// written, before any read, sync, truncate, size query or close of the file, when a write
/// is not sequential, and beyond 1 MiB. Returns an SQLite result code.
int vpsgw_wal_buffer_register(void);

/// Sequential writes gathered into one so far by this process (for tests).
long long vpsgw_wal_buffer_coalesced_writes(void);

#endif
