# Sourced by the scripts that build hangard outside scripts/test.sh (run.sh, the bench scripts): hangard links
# libsystemd (sd_notify, socket activation, the journal) through the CSystemd system-library target, whose headers
# come from Debian's libsystemd-dev. Installs it when missing (as root, or with sudo).
if [ ! -f /usr/include/systemd/sd-daemon.h ]; then
    _sudo=""
    [ "$(id -u)" -ne 0 ] && _sudo="sudo"
    echo "installing libsystemd-dev (hangard links libsystemd)" >&2
    DEBIAN_FRONTEND=noninteractive $_sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -qq --no-install-recommends libsystemd-dev pkg-config >&2
fi
# AsyncHTTPClient (the HTTP app channel) links zlib through swift-nio-extras.
if [ ! -f /usr/include/zlib.h ]; then
    _sudo=""
    [ "$(id -u)" -ne 0 ] && _sudo="sudo"
    echo "installing zlib1g-dev (hangard links zlib)" >&2
    DEBIAN_FRONTEND=noninteractive $_sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -qq --no-install-recommends zlib1g-dev >&2
fi
