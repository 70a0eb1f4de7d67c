#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and runs the first measurement of the node daemon:
# RSS idle and with every app connected, GetState/SaveState on state.in-memory and state.sqlite (1 caller and 32),
# and the same gRPC server with a trivial echo method as the baseline. Prints a table and writes
# bench-results/latest.json (git-ignored). Extra arguments go to hangar-bench, e.g. --duration 5 or --scenario echo.
# Takes about 2 minutes after the build on a 2-core machine.
set -euo pipefail

cd "$(dirname "$0")/.."

# One product per invocation: `swift build` keeps only the last of several --product flags.
swift build -c release --product hangard
swift build -c release --product hangar-bench
bin="$(swift build -c release --show-bin-path)"

mkdir -p bench-results
if git rev-parse --git-dir > /dev/null 2>&1; then
    echo "source: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift || echo ' + uncommitted changes')" >&2
fi
"$bin/hangar-bench" --hangard "$bin/hangard" --scenario all --json bench-results/latest.json "$@"
