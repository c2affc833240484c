// libsystemd's readiness, watchdog and journal calls (Debian: libsystemd-dev).
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
