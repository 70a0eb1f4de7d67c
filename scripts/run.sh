#!/usr/bin/env bash
# Builds hangard and runs it. With no arguments it runs the development default: tenant "default" with app
# "default", tokenless TCP access on 127.0.0.1:3500 (HTTP) and 127.0.0.1:50001 (gRPC), and an embedded SQLite state
# store named "statestore". Any arguments are passed to hangard (see `scripts/run.sh --help`).
# The binary is the one that is deployed and measured: a release build linked with --static-swift-stdlib and the
# release link options (scripts/lib/build-hangard.sh), so what you start is what BENCHMARKS.md describes.
#   HANGAR_BUILD=debug scripts/run.sh   builds a debug binary instead (faster to build, slower to run).
set -euo pipefail
hangard="$("$(dirname "$0")/lib/build-hangard.sh")"
exec "$hangard" "$@"
