#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and runs the noisy-neighbour benchmark: tenant 'noisy' offers
# 10 × its requestsPerSecond quota (SaveState) while tenant 'steady' reads at 500 calls/s from the same state store;
# compares the steady tenant's latency with and without the flood, and checks that the flood is held to its quota.
# Prints a table and writes bench-results/noisy.json (git-ignored). Extra arguments go to
# `hangar-bench noisy-neighbour`, e.g. --store memstore or --quota 500 (see `hangar-bench help noisy-neighbour`).
# Takes about 30 seconds after the build.
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
"$bin/hangar-bench" noisy-neighbour --hangard "$bin/hangard" --json bench-results/noisy.json "$@"
