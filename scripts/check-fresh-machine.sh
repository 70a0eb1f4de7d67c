#!/usr/bin/env bash
#
# check-fresh-machine.sh — the README's test command, on what a machine that has never seen the project has.
#
# Usage:
#   scripts/check-fresh-machine.sh [--keep] [BRANCH]        (as root, or with sudo; BRANCH defaults to main)
#
# CI runs on the developer's machine, where everything installed by hand is still there, so a green CI can hide a
# missing install step (it has: protoc's well-known types). This script:
#   1. clones BRANCH (committed work only) into a temporary directory: no .build, .build-protoc or .venv;
#   2. removes the Debian packages that scripts/test.sh installs and a fresh machine of this kind lacks, with the
#      dependencies they brought (FRESH_MACHINE_LACKS below) — after checking with `apt-get -s` that removing them
#      takes nothing else along;
#   3. runs `CI=true bash .ci/run` (which is scripts/test.sh) in the clone, as CI does, and reports how long it took;
#   4. on exit, reinstalls whatever of those packages is still missing (the verdict is already taken by then) and
#      removes the clone (kept with --keep).
# Packages that test.sh installs only when missing but that the machine image ships (util-linux, systemd, git,
# python3-venv, postgresql's client) are left in place: they are on every machine of this kind, and removing systemd
# would take half the image with it. Run it before you stop; it takes about as long as a CI run (10–15 minutes).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEEP=0
BRANCH=main
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h | --help) sed -n '3,22p' "$0"; exit 0 ;;
        -*) echo "check-fresh-machine: unknown option $arg" >&2; exit 2 ;;
        *) BRANCH="$arg" ;;
    esac
done

# What scripts/test.sh installs (and what those bring) that a fresh machine of this kind (swift-packages) lacks.
# libprotobuf-dev and its libraries are listed although test.sh does not install them: a machine where they were
# once installed by hand hid the missing well-known types before, so they must not be there during the check.
FRESH_MACHINE_LACKS=(
    libsystemd-dev pkg-config
    protobuf-compiler libprotoc32 libprotobuf32
    libprotobuf-dev libprotobuf-lite32 libprotoc-dev
    nghttp2-client libev4 libjemalloc2
    redis-server redis-tools liblzf1
    # This image has PostgreSQL, but test.sh installs it where it is missing: removed to prove that step.
    postgresql postgresql-15 postgresql-contrib
)

log() { echo "check-fresh-machine: $*" >&2; }
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
    log "note: uncommitted changes in $ROOT are not part of the check (it clones $BRANCH)"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/hangar-fresh.XXXXXX")"
# mktemp makes it 0700; the end-to-end tests run clients under other uids from the clone's .venv, so the clone must
# be traversable by them, as a clone in an ordinary directory (and CI's) is.
chmod 0755 "$WORK"
REMOVED=()
restore() {
    local missing=()
    for p in "${REMOVED[@]}"; do installed "$p" || missing+=("$p"); done
    if [ "${#missing[@]}" -ne 0 ]; then
        log "reinstalling what the run did not: ${missing[*]}"
        $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || true
    fi
    if [ "$KEEP" -eq 1 ]; then log "clone kept at $WORK/hangar"; else rm -rf "$WORK"; fi
}
trap restore EXIT

# --- 1. the clone ------------------------------------------------------------------------------------------
log "cloning $BRANCH of $ROOT into $WORK/hangar"
git clone --quiet --branch "$BRANCH" "$ROOT" "$WORK/hangar"
log "at $(git -C "$WORK/hangar" log -1 --format='%h %s' | cut -c1-100)"

# --- 2. the packages -----------------------------------------------------------------------------------------
TO_REMOVE=()
for p in "${FRESH_MACHINE_LACKS[@]}"; do installed "$p" && TO_REMOVE+=("$p"); done
if [ "${#TO_REMOVE[@]}" -ne 0 ]; then
    others="$(apt-get remove -s "${TO_REMOVE[@]}" 2>/dev/null | awk '/^Remv/ {print $2}' \
        | grep -vxF -f <(printf '%s\n' "${FRESH_MACHINE_LACKS[@]}") || true)"
    if [ -n "$others" ]; then
        log "removing ${TO_REMOVE[*]} would also remove: $(echo $others); not touching this machine"
        exit 1
    fi
    log "removing ${TO_REMOVE[*]}"
    $SUDO apt-get remove -y -qq "${TO_REMOVE[@]}" >/dev/null
    REMOVED=("${TO_REMOVE[@]}")
else
    log "none of ${FRESH_MACHINE_LACKS[*]} is installed"
fi
if command -v protoc >/dev/null; then
    log "protoc is still on PATH ($(command -v protoc)), from no package listed here: the check is weaker"
fi

# --- 3. the README's test command ------------------------------------------------------------------------------
log "running CI=true bash .ci/run in $WORK/hangar"
started=$SECONDS
status=0
(cd "$WORK/hangar" && CI=true bash .ci/run </dev/null) || status=$?
elapsed=$((SECONDS - started))
if [ "$status" -eq 0 ]; then
    log "PASSED in ${elapsed} s (removed first: ${REMOVED[*]:-nothing})"
else
    log "FAILED (exit $status) after ${elapsed} s (removed first: ${REMOVED[*]:-nothing})"
fi
exit "$status"
