// libsystemd's service-manager and journal APIs (Debian: libsystemd-dev), for hangard's sd_notify, socket
// activation and native journal logging.
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
