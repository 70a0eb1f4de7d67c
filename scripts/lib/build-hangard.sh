#!/usr/bin/env bash
#
# build-hangard.sh — builds hangard as it is deployed and measured, and prints the binary's path on stdout.
#
# Usage:
#   scripts/lib/build-hangard.sh [release|debug]      (default: $HANGAR_BUILD, else release)
#
# release: `swift build -c release --static-swift-stdlib --product hangard`; Package.swift adds the release link
#          options (lld, packed relative relocations, the function order of bench/hangard.order). This one command
#          builds what scripts/run.sh starts, what the benchmarks measure (scripts/lib/bench-build.sh) and what
#          scripts/install-systemd.sh installs; daemonset/Containerfile runs the same flags (a test checks it).
# debug:   a debug build: quicker to build, several times the CPU per call. The end-to-end tests use it.
# Installs libsystemd-dev when it is missing (hangard links libsystemd). Runnable from any working directory.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        export PATH="/opt/swift/usr/bin:$PATH"
    else
        echo "build-hangard: the Swift toolchain (6.1 or later) is required and was not found on PATH" >&2
        exit 1
    fi
fi
source scripts/lib/require-libsystemd.sh

configuration="${1:-${HANGAR_BUILD:-release}}"
case "$configuration" in
    release) flags=(-c release --static-swift-stdlib) ;;
    debug) flags=(-c debug) ;;
    *)
        echo "build-hangard: unknown configuration '$configuration' (release or debug)" >&2
        exit 2
        ;;
esac
swift build "${flags[@]}" --product hangard >&2
echo "$(swift build "${flags[@]}" --show-bin-path)/hangard"
