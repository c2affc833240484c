#include "sqlite_process.h"

#include <sqlite3.h>

int vpsgw_sqlite_configure_process(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
