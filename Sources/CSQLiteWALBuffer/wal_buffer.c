// Written by hand because no library does it: SQLite writes each WAL frame as two calls (a
// 24-byte header, then the page), so a commit of five pages is ten pwrite(2)s, each a
// system call and a trip through the file system. This VFS gathers a commit's frames into
// one write. Nothing is reordered and nothing is held past its commit: the frames are found
// by their offsets (the page size is read from the WAL's header as SQLite writes or reads
// it), and the buffer is written as soon as it holds the whole of a commit frame (one whose
// header carries a non-zero database size): before SQLite publishes the commit to readers
// in the WAL index, with or without a sync. Anything else (a read, sync, truncate, size
// query, file control or close of the file, a write that does not follow the last) writes
// it first too.
// Until the page size is known, writes pass straight through.
#include "wal_buffer.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { BUFFER_LIMIT = 1 << 20, WRITE_PIECE = 1 << 16, WAL_HEADER = 32, FRAME_HEADER = 24 };

typedef struct BufferedFile {
    sqlite3_file base;
    sqlite3_file *real;
    int isWAL;
    unsigned char *buffer;
    int length;
    int capacity;
    sqlite3_int64 start;
    /// From the WAL header; 0 until seen (then nothing is buffered).
    int pageSize;
    /// Where the last commit frame seen ends: the buffer is written once it reaches it.
    sqlite3_int64 commitEnd;
} BufferedFile;

static sqlite3_vfs *underlying;
static sqlite3_vfs buffered;
static _Atomic long long coalescedWrites;

static unsigned int bigEndian32(const unsigned char *bytes) {
    return ((unsigned int)bytes[0] << 24) | ((unsigned int)bytes[1] << 16) | ((unsigned int)bytes[2] << 8) | bytes[3];
}

/// Learns the page size from a WAL header (offset 0) being written or read.
static void noteHeader(BufferedFile *file, const unsigned char *bytes, int amount, sqlite3_int64 offset) {
    if (offset != 0 || amount < WAL_HEADER) return;
    unsigned int magic = bigEndian32(bytes);
    if (magic != 0x377f0682 && magic != 0x377f0683) return;
    unsigned int size = bigEndian32(bytes + 8);
    if (size == 1) size = 65536;
    file->pageSize = (size >= 512 && size <= 65536 && (size & (size - 1)) == 0) ? (int)size : 0;
}

/// Marks the end of any commit frame whose header's database-size field (bytes 4-7) the
/// append at `appendedFrom` completed. Read from the buffer, so a header that came in pieces
/// is still seen.
static void noteCommitFrames(BufferedFile *file, sqlite3_int64 appendedFrom) {
    sqlite3_int64 frame = FRAME_HEADER + (sqlite3_int64)file->pageSize;
    sqlite3_int64 end = file->start + file->length;
    sqlite3_int64 low = appendedFrom - 7;
    if (low < file->start) low = file->start;
    if (low < WAL_HEADER) low = WAL_HEADER;
    sqlite3_int64 header = WAL_HEADER + ((low - WAL_HEADER + frame - 1) / frame) * frame;
    for (; header + 8 <= end; header += frame) {
        if (bigEndian32(file->buffer + (header - file->start) + 4) != 0) file->commitEnd = header + frame;
    }
}

static int flushBuffer(BufferedFile *file) {
    int length = file->length;
    file->length = 0;
    // In pieces of at most 64 KiB: the unix VFS keeps only the low 17 bits of a write's size
    // (a write of exactly 128 KiB would write nothing and be reported as a full disk). A
    // failed write fails SQLite's transaction, whose frames are then never published; the
    // gathered bytes are dropped with it.
    for (int done = 0; done < length;) {
        int piece = length - done < WRITE_PIECE ? length - done : WRITE_PIECE;
        int rc = file->real->pMethods->xWrite(file->real, file->buffer + done, piece, file->start + done);
        if (rc != SQLITE_OK) return rc;
        done += piece;
    }
    return SQLITE_OK;
}

static int bufferedClose(sqlite3_file *handle) {
    BufferedFile *file = (BufferedFile *)handle;
    int flushed = flushBuffer(file);
    int closed = file->real->pMethods ? file->real->pMethods->xClose(file->real) : SQLITE_OK;
    free(file->buffer);
    file->buffer = NULL;
    return flushed != SQLITE_OK ? flushed : closed;
}

static int bufferedRead(sqlite3_file *handle, void *data, int amount, sqlite3_int64 offset) {
    BufferedFile *file = (BufferedFile *)handle;
    int rc = flushBuffer(file);
    if (rc != SQLITE_OK) return rc;
    rc = file->real->pMethods->xRead(file->real, data, amount, offset);
    if (file->isWAL && rc == SQLITE_OK) noteHeader(file, data, amount, offset);
    return rc;
}

static int bufferedWrite(sqlite3_file *handle, const void *data, int amount, sqlite3_int64 offset) {
    BufferedFile *file = (BufferedFile *)handle;
    if (!file->isWAL) return file->real->pMethods->xWrite(file->real, data, amount, offset);
    noteHeader(file, data, amount, offset);
    if (file->length > 0 && offset != file->start + file->length) {
        int rc = flushBuffer(file);
        if (rc != SQLITE_OK) return rc;
    }
    if (file->pageSize == 0 || file->length + amount > BUFFER_LIMIT) {
        int rc = flushBuffer(file);
        if (rc != SQLITE_OK) return rc;
        if (file->pageSize == 0 || amount > BUFFER_LIMIT) return file->real->pMethods->xWrite(file->real, data, amount, offset);
    }
    if (file->length + amount > file->capacity) {
        int capacity = file->capacity ? file->capacity : 64 * 1024;
        while (capacity < file->length + amount) capacity *= 2;
        unsigned char *grown = realloc(file->buffer, (size_t)capacity);
        if (grown == NULL) {
            int rc = flushBuffer(file);
            if (rc != SQLITE_OK) return rc;
            return file->real->pMethods->xWrite(file->real, data, amount, offset);
        }
        file->buffer = grown;
        file->capacity = capacity;
    }
    if (file->length == 0) file->start = offset;
    else atomic_fetch_add_explicit(&coalescedWrites, 1, memory_order_relaxed);
    memcpy(file->buffer + file->length, data, (size_t)amount);
    file->length += amount;
    noteCommitFrames(file, offset);
    if (file->commitEnd > file->start && file->start + file->length >= file->commitEnd) {
        file->commitEnd = 0;
        return flushBuffer(file);
    }
    return SQLITE_OK;
}

static int bufferedTruncate(sqlite3_file *handle, sqlite3_int64 size) {
    BufferedFile *file = (BufferedFile *)handle;
    int rc = flushBuffer(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xTruncate(file->real, size);
}

static int bufferedSync(sqlite3_file *handle, int flags) {
    BufferedFile *file = (BufferedFile *)handle;
    int rc = flushBuffer(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xSync(file->real, flags);
}

static int bufferedFileSize(sqlite3_file *handle, sqlite3_int64 *size) {
    BufferedFile *file = (BufferedFile *)handle;
    int rc = flushBuffer(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xFileSize(file->real, size);
}

static int bufferedLock(sqlite3_file *handle, int level) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xLock(file->real, level);
}

static int bufferedUnlock(sqlite3_file *handle, int level) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xUnlock(file->real, level);
}

static int bufferedCheckReservedLock(sqlite3_file *handle, int *reserved) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xCheckReservedLock(file->real, reserved);
}

static int bufferedFileControl(sqlite3_file *handle, int op, void *argument) {
    BufferedFile *file = (BufferedFile *)handle;
    int rc = flushBuffer(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xFileControl(file->real, op, argument);
}

static int bufferedSectorSize(sqlite3_file *handle) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xSectorSize(file->real);
}

static int bufferedDeviceCharacteristics(sqlite3_file *handle) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xDeviceCharacteristics(file->real);
}

static int bufferedShmMap(sqlite3_file *handle, int region, int size, int extend, void volatile **address) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xShmMap(file->real, region, size, extend, address);
}

static int bufferedShmLock(sqlite3_file *handle, int offset, int count, int flags) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xShmLock(file->real, offset, count, flags);
}

static void bufferedShmBarrier(sqlite3_file *handle) {
    BufferedFile *file = (BufferedFile *)handle;
    file->real->pMethods->xShmBarrier(file->real);
}

static int bufferedShmUnmap(sqlite3_file *handle, int deleteFlag) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xShmUnmap(file->real, deleteFlag);
}

static int bufferedFetch(sqlite3_file *handle, sqlite3_int64 offset, int amount, void **pointer) {
    BufferedFile *file = (BufferedFile *)handle;
    int rc = flushBuffer(file);
    if (rc != SQLITE_OK) return rc;
    return file->real->pMethods->xFetch(file->real, offset, amount, pointer);
}

static int bufferedUnfetch(sqlite3_file *handle, sqlite3_int64 offset, void *pointer) {
    BufferedFile *file = (BufferedFile *)handle;
    return file->real->pMethods->xUnfetch(file->real, offset, pointer);
}

/// The methods of version 1, 2 and 3 files: the wrapper offers what the real file offers.
static const sqlite3_io_methods methodsV3 = {
    3, bufferedClose, bufferedRead, bufferedWrite, bufferedTruncate, bufferedSync, bufferedFileSize,
    bufferedLock, bufferedUnlock, bufferedCheckReservedLock, bufferedFileControl, bufferedSectorSize,
    bufferedDeviceCharacteristics, bufferedShmMap, bufferedShmLock, bufferedShmBarrier, bufferedShmUnmap,
    bufferedFetch, bufferedUnfetch,
};
static const sqlite3_io_methods methodsV2 = {
    2, bufferedClose, bufferedRead, bufferedWrite, bufferedTruncate, bufferedSync, bufferedFileSize,
    bufferedLock, bufferedUnlock, bufferedCheckReservedLock, bufferedFileControl, bufferedSectorSize,
    bufferedDeviceCharacteristics, bufferedShmMap, bufferedShmLock, bufferedShmBarrier, bufferedShmUnmap,
    NULL, NULL,
};
static const sqlite3_io_methods methodsV1 = {
    1, bufferedClose, bufferedRead, bufferedWrite, bufferedTruncate, bufferedSync, bufferedFileSize,
    bufferedLock, bufferedUnlock, bufferedCheckReservedLock, bufferedFileControl, bufferedSectorSize,
    bufferedDeviceCharacteristics, NULL, NULL, NULL, NULL, NULL, NULL,
};

static int bufferedOpen(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *handle, int flags, int *outFlags) {
    (void)vfs;
    BufferedFile *file = (BufferedFile *)handle;
    memset(file, 0, sizeof(*file));
    file->real = (sqlite3_file *)&file[1];
    int rc = underlying->xOpen(underlying, name, file->real, flags, outFlags);
    const sqlite3_io_methods *real = file->real->pMethods;
    if (real == NULL) {
        file->base.pMethods = NULL;
        return rc;
    }
    file->isWAL = (flags & SQLITE_OPEN_WAL) != 0;
    file->base.pMethods = real->iVersion >= 3 ? &methodsV3 : real->iVersion == 2 ? &methodsV2 : &methodsV1;
    return rc;
}

static int forwardDelete(sqlite3_vfs *vfs, const char *name, int syncDirectory) {
    (void)vfs;
    return underlying->xDelete(underlying, name, syncDirectory);
}
static int forwardAccess(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
    (void)vfs;
    return underlying->xAccess(underlying, name, flags, result);
}
static int forwardFullPathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    (void)vfs;
    return underlying->xFullPathname(underlying, name, size, out);
}
static void *forwardDlOpen(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return underlying->xDlOpen(underlying, name);
}
static void forwardDlError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    underlying->xDlError(underlying, size, message);
}
static void (*forwardDlSym(sqlite3_vfs *vfs, void *library, const char *symbol))(void) {
    (void)vfs;
    return underlying->xDlSym(underlying, library, symbol);
}
static void forwardDlClose(sqlite3_vfs *vfs, void *library) {
    (void)vfs;
    underlying->xDlClose(underlying, library);
}
static int forwardRandomness(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return underlying->xRandomness(underlying, size, out);
}
static int forwardSleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return underlying->xSleep(underlying, microseconds);
}
static int forwardCurrentTime(sqlite3_vfs *vfs, double *now) {
    (void)vfs;
    return underlying->xCurrentTime(underlying, now);
}
static int forwardGetLastError(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    return underlying->xGetLastError ? underlying->xGetLastError(underlying, size, message) : 0;
}
static int forwardCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
    (void)vfs;
    return underlying->xCurrentTimeInt64(underlying, now);
}
static int forwardSetSystemCall(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr call) {
    (void)vfs;
    return underlying->xSetSystemCall(underlying, name, call);
}
static sqlite3_syscall_ptr forwardGetSystemCall(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return underlying->xGetSystemCall(underlying, name);
}
static const char *forwardNextSystemCall(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return underlying->xNextSystemCall(underlying, name);
}

static int registration = SQLITE_OK;
static pthread_once_t registered = PTHREAD_ONCE_INIT;

static void registerOnce(void) {
    underlying = sqlite3_vfs_find(NULL);
    if (underlying == NULL || underlying->iVersion < 3) {
        registration = SQLITE_ERROR;
        return;
    }
    buffered = (sqlite3_vfs){
        .iVersion = 3,
        .szOsFile = (int)sizeof(BufferedFile) + underlying->szOsFile,
        .mxPathname = underlying->mxPathname,
        .zName = "vpsgw-wal-buffer",
        .xOpen = bufferedOpen,
        .xDelete = forwardDelete,
        .xAccess = forwardAccess,
        .xFullPathname = forwardFullPathname,
        .xDlOpen = forwardDlOpen,
        .xDlError = forwardDlError,
        .xDlSym = forwardDlSym,
        .xDlClose = forwardDlClose,
        .xRandomness = forwardRandomness,
        .xSleep = forwardSleep,
        .xCurrentTime = forwardCurrentTime,
        .xGetLastError = forwardGetLastError,
        .xCurrentTimeInt64 = forwardCurrentTimeInt64,
        .xSetSystemCall = forwardSetSystemCall,
        .xGetSystemCall = forwardGetSystemCall,
        .xNextSystemCall = forwardNextSystemCall,
    };
    registration = sqlite3_vfs_register(&buffered, 1);
}

int vpsgw_wal_buffer_register(void) {
    pthread_once(&registered, registerOnce);
    return registration;
}

long long vpsgw_wal_buffer_coalesced_writes(void) {
    return atomic_load_explicit(&coalescedWrites, memory_order_relaxed);
}
