#!/usr/bin/env bash
#
# install-systemd.sh — installs hangard as a systemd service on an edge/IoT host (daemonset/systemd/).
#
# Usage:
#   scripts/install-systemd.sh [--binary PATH] [--root DIR] [--no-start]
#
#   --binary PATH  install this hangard binary instead of building one (scripts/lib/build-hangard.sh)
#   --root DIR     install into DIR instead of / (an image being built, or a test): DIR/usr/local/bin/hangard,
#                  DIR/etc/systemd/system/..., DIR/etc/hangar/...; the units are then enabled offline
#                  (`systemctl --root=DIR enable`) and nothing is started
#   --no-start     install the files only: no `systemctl` at all
#   -h, --help     this text
#
# What it installs (under DIR, / by default):
#   /usr/local/bin/hangard                               0755  replaced when it differs (upgrade)
#   /usr/local/libexec/hangar/hangard-upgrade            0755  the unit's ExecReload= (a hand-over to a new process)
#   /etc/systemd/system/hangard.service, hangard.socket  0644  replaced when they differ (customise with drop-ins:
#                                                              `systemctl edit hangard.service`)
#   /usr/local/share/doc/hangar/README.systemd.md        0644
#   /etc/hangar/                                         0755  the example configuration, only where absent:
#     tenancy/       (0755, example.yaml 0644, telemetry.token 0600 with a fresh random token)
#     resources/     (0755, statestore.yaml 0644)
#   An existing /etc/hangar/tenancy or /etc/hangar/resources is never touched, not even a file in it.
#
# Then, on a host where systemd is running (/run/systemd/system exists) and without --no-start:
# `systemctl daemon-reload`, `systemctl enable --now hangard.socket hangard.service`, and on an upgrade: a new
# binary is put in service by `systemctl reload hangard.service` (the running hangard hands its sockets to a new
# process: no failed call), a new unit by a restart (TCP clients wait in hangard.socket's backlog meanwhile).
# Running it again changes nothing.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/daemonset/systemd"

usage() { sed -n '3,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
log() { echo "install-systemd: $*"; }
die() { echo "install-systemd: $*" >&2; exit 1; }

BINARY=""
ROOT=""
START=1
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; BINARY="$2"; shift 2 ;;
        --binary=*) BINARY="${1#*=}"; shift ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --no-start) START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# ROOT is "" for the live system, else an absolute path without a trailing slash.
if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" = "/" ] && ROOT=""
fi
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "installing into / needs root: run it with sudo (or use --root DIR)"
fi

# --- the binary ----------------------------------------------------------------------------------------------
if [ -z "$BINARY" ]; then
    command -v swift >/dev/null || die "swift is not on PATH: install the toolchain or pass --binary PATH"
    log "building hangard (scripts/lib/build-hangard.sh: swift build -c release --static-swift-stdlib --product hangard)"
    BINARY="$("$REPO/scripts/lib/build-hangard.sh" release)"
fi
[ -f "$BINARY" ] && [ -x "$BINARY" ] || die "$BINARY is not an executable file"

CHANGED=()   # what was installed or replaced, for the restart decision

# install_file SRC DEST MODE: copies SRC to DEST with MODE unless DEST already has that content and mode. The copy
# goes to a temporary file beside DEST that is renamed over it, so a running hangard keeps its (old) binary and a
# reader never sees half a file.
install_file() {
    local src="$1" dest="$2" mode="$3"
    if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
        log "unchanged  $dest"
        return
    fi
    local existed=0
    [ -e "$dest" ] && existed=1
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp="$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")"
    cp "$src" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    if [ "$existed" -eq 1 ]; then log "updated    $dest (mode $mode)"; else log "installed  $dest (mode $mode)"; fi
    CHANGED+=("$dest")
}

install_file "$BINARY" "$ROOT/usr/local/bin/hangard" 0755
install_file "$SRC/hangard-upgrade" "$ROOT/usr/local/libexec/hangar/hangard-upgrade" 0755
install_file "$SRC/hangard.service" "$ROOT/etc/systemd/system/hangard.service" 0644
install_file "$SRC/hangard.socket" "$ROOT/etc/systemd/system/hangard.socket" 0644
install_file "$SRC/README.md" "$ROOT/usr/local/share/doc/hangar/README.systemd.md" 0644

# --- the example configuration, only where there is none -----------------------------------------------------
CONF="$ROOT/etc/hangar"
if [ ! -d "$CONF" ]; then
    mkdir -p "$CONF"
    chmod 0755 "$CONF"
fi
if [ -e "$CONF/tenancy" ]; then
    log "kept       $CONF/tenancy (exists; the example is not installed)"
else
    mkdir -p "$CONF/tenancy"
    chmod 0755 "$CONF/tenancy"
    install -m 0644 "$SRC/etc-hangar/tenancy/example.yaml" "$CONF/tenancy/example.yaml"
    # The token in the repository is public; write a fresh one (32 random bytes, hex), readable by root only.
    # umask 077 so the file is never readable by others, not even between its creation and the chmod.
    (
        umask 077
        od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$CONF/tenancy/telemetry.token"
        echo >> "$CONF/tenancy/telemetry.token"
    )
    chmod 0600 "$CONF/tenancy/telemetry.token"
    log "installed  $CONF/tenancy (example tenant 'example', app 'telemetry'; random token in telemetry.token)"
    CHANGED+=("$CONF/tenancy")
fi
if [ -e "$CONF/resources" ]; then
    log "kept       $CONF/resources (exists; the example is not installed)"
else
    mkdir -p "$CONF/resources"
    chmod 0755 "$CONF/resources"
    install -m 0644 "$SRC/etc-hangar/resources/statestore.yaml" "$CONF/resources/statestore.yaml"
    log "installed  $CONF/resources (statestore: state.sqlite in /var/lib/hangar/state.db)"
    CHANGED+=("$CONF/resources")
fi

# --- systemd -------------------------------------------------------------------------------------------------
changed() { # changed PATH...: whether any of these paths was installed or replaced in this run
    local path item
    for path in "$@"; do
        for item in "${CHANGED[@]+"${CHANGED[@]}"}"; do [ "$item" = "$path" ] && return 0; done
    done
    return 1
}

if [ "$START" -eq 0 ]; then
    log "--no-start: systemd not touched"
    if [ -z "$ROOT" ]; then
        log "to start: systemctl daemon-reload && systemctl enable --now hangard.socket hangard.service"
    fi
elif [ -n "$ROOT" ]; then
    # An image or a test tree: enable offline (the [Install] symlinks), start nothing.
    command -v systemctl >/dev/null || die "systemctl is needed to enable the units in $ROOT (or pass --no-start)"
    systemctl --root="$ROOT" enable hangard.socket hangard.service
    log "enabled hangard.socket and hangard.service in $ROOT (they start when that system boots)"
elif [ ! -d /run/systemd/system ]; then
    log "systemd is not running on this host (no /run/systemd/system): nothing started"
    log "on a systemd host: systemctl daemon-reload && systemctl enable --now hangard.socket hangard.service"
else
    was_active=0
    systemctl is-active --quiet hangard.service && was_active=1
    systemctl daemon-reload
    log "systemctl daemon-reload"
    if changed /etc/systemd/system/hangard.socket && systemctl is-active --quiet hangard.socket; then
        # New listen addresses only take effect when systemd re-opens the sockets; this stops hangard.service too
        # (Requires=), so TCP clients see refused connections for a moment.
        systemctl restart hangard.socket
        log "restarted hangard.socket (its listeners changed)"
    fi
    systemctl enable --now hangard.socket hangard.service
    log "systemctl enable --now hangard.socket hangard.service"
    if [ "$was_active" -eq 1 ] && changed /etc/systemd/system/hangard.service; then
        # A new unit (its sandbox, its flags) applies only to a new start: restart. TCP clients wait in the socket's
        # backlog meanwhile; apps on Unix sockets reconnect.
        systemctl try-restart hangard.service
        log "restarted hangard.service (its unit changed)"
    elif [ "$was_active" -eq 1 ] && changed /usr/local/bin/hangard; then
        # A new binary: the running hangard hands its sockets to a new process of it (ExecReload=, hangard-upgrade),
        # with no failed call. If that fails the old process keeps serving, and so does this script say.
        if systemctl reload hangard.service; then
            log "hangard.service now runs the new binary (reload: the sockets were handed over, no call failed)"
        else
            die "the new hangard did not take over (the old one keeps serving): journalctl -u hangard.service"
        fi
    fi
    systemctl --no-pager --lines=0 status hangard.service || true
fi
