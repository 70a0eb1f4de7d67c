#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and runs the first measurement of the node daemon:
# RSS idle and with every app connected, GetState/SaveState on state.in-memory and state.sqlite over gRPC and on
# state.in-memory over HTTP (1 caller, and 32 callers spread over 16 apps), and the same gRPC server with a trivial
# echo method as the baseline. Prints a table and writes bench-results/latest.json (git-ignored). Extra arguments go
# to hangar-bench, e.g. --duration 5 or --scenario echo.
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
"$bin/hangar-bench" --hangard "$bin/hangard" --scenario all --connect-apps 16 --json bench-results/latest.json "$@"
