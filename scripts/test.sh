#!/usr/bin/env bash
#
# test.sh — everything CI checks, in one command (what .ci/run runs).
#
# Usage:
#   scripts/test.sh
#
# Runnable from any working directory, on a fresh Debian machine (as root, or with sudo) and again
# quickly on one where it already ran. Stages:
#   1. system packages: libsystemd-dev (hangard links libsystemd), protoc (protobuf-compiler), setpriv
#      (util-linux), systemd-analyze and
#      systemd-socket-activate (systemd) and, if python3 cannot create a venv, python3-venv;
#      `apt-get update` runs once, and only when something is missing
#   2. swift build             debug build of every product and the test targets
#   3. swift test              Swift Testing unit and conformance tests (fails if none ran)
#   4. scripts/check-protos.sh the committed generated protobuf code is current
#   5. scripts/setup-python.sh .venv with the pinned Dapr SDK and pytest
#   6. pytest Tests/e2e        end-to-end tests: the real hangard binary driven by the official Dapr SDK
# A failing build stops the run; after it every stage runs, and the script exits non-zero if any failed.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive

START=$SECONDS
FAILED=()

log() { echo "test.sh: $*" >&2; }
stage() { log "== $* ($((SECONDS - START)) s)"; }

# --- 1. system packages ------------------------------------------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

stage "system packages"
if [ -z "$(command -v swift || true)" ] && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null || { log "swift is not installed"; exit 1; }
command -v git >/dev/null || apt_install git ca-certificates
# hangard links libsystemd (sd_notify, sd_listen_fds, the journal) through the CSystemd system-library target.
[ -f /usr/include/systemd/sd-daemon.h ] || apt_install libsystemd-dev pkg-config
command -v protoc >/dev/null || apt_install protobuf-compiler
# setpriv (util-linux) runs e2e clients under other uids, for the peer-credential and permission tests.
command -v setpriv >/dev/null || apt_install util-linux
# systemd-analyze checks the units in daemonset/systemd (test_deploy_systemd.py, which also uses systemd's
# dependency libseccomp2); systemd-socket-activate hands hangard inherited listeners in the socket-activation
# tests. Neither needs systemd running as PID 1.
command -v systemd-analyze >/dev/null || apt_install systemd
command -v systemd-socket-activate >/dev/null || apt_install systemd
# kubectl (with kustomize v5) renders daemonset/kubernetes in Tests/e2e/test_deploy_kubernetes.py. It comes with
# this machine image; Debian's kubernetes-client (kubectl 1.20) is too old to render the manifests, so there is no
# fallback here: without kubectl that test fails and says so.
command -v kubectl >/dev/null || log "kubectl is missing: the Kubernetes manifest tests will fail"
if ! command -v python3 >/dev/null; then
    apt_install python3 python3-venv
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for `python3 -m venv`; use that interpreter then.
    apt_install python3-venv
    export PYTHON=/usr/bin/python3
fi

# --- 2. build ----------------------------------------------------------------------------------
stage "swift build"
swift build --build-tests

# --- 3. unit and conformance tests -------------------------------------------------------------
stage "swift test"
SWIFT_TEST_LOG="$(mktemp "${TMPDIR:-/tmp}/hangar-swift-test.XXXXXX")"
trap 'rm -f "$SWIFT_TEST_LOG"' EXIT
if swift test --skip-build 2>&1 | tee "$SWIFT_TEST_LOG"; then
    # Swift Testing closes with "Test run with N tests ... passed"; N must not be 0.
    if ! grep -Eq 'Test run with [1-9][0-9]* tests? .*passed' "$SWIFT_TEST_LOG"; then
        log "swift test ran no Swift Testing test"
        FAILED+=("swift test (no tests ran)")
    fi
else
    FAILED+=("swift test")
fi

# --- 4. generated code -------------------------------------------------------------------------
stage "check-protos"
"$ROOT/scripts/check-protos.sh" || FAILED+=("check-protos")

# --- 5. python environment ---------------------------------------------------------------------
stage "setup-python"
"$ROOT/scripts/setup-python.sh"

# --- 6. end-to-end tests -----------------------------------------------------------------------
stage "pytest Tests/e2e"
export HANGARD="$ROOT/.build/debug/hangard"
.venv/bin/python -m pytest Tests/e2e -v || FAILED+=("e2e tests")

if [ "${#FAILED[@]}" -ne 0 ]; then
    log "FAILED after $((SECONDS - START)) s: ${FAILED[*]}"
    exit 1
fi
log "all stages passed in $((SECONDS - START)) s"
