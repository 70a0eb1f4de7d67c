#!/usr/bin/env bash
# Builds hangard (release) and runs it. With no arguments it runs the development default: tenant "default" with
# app "default", tokenless TCP access on 127.0.0.1:3500 (HTTP) and 127.0.0.1:50001 (gRPC), and an embedded SQLite
# state store named "statestore". Any arguments are passed to hangard (see `scripts/run.sh --help`).
#   HANGAR_BUILD=debug scripts/run.sh   builds a debug binary instead (faster to build, slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1; then
    echo "run.sh: the Swift toolchain (6.1 or later) is required and was not found on PATH" >&2
    exit 1
fi

source scripts/lib/require-libsystemd.sh

configuration="${HANGAR_BUILD:-release}"
swift build -c "$configuration" --product hangard >&2
exec ".build/$configuration/hangard" "$@"
