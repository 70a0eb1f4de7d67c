#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and runs the noisy-neighbour benchmark: tenant 'noisy' offers
# 10 × its requestsPerSecond quota (SaveState) while tenant 'steady' reads at 500 calls/s from the same state store;
# compares the steady tenant's latency with and without the flood, and checks that the flood is held to its quota.
# Prints a table and writes bench-results/noisy.json (git-ignored). Extra arguments go to
# `hangar-bench noisy-neighbour`, e.g. --store memstore or --quota 500 (see `hangar-bench help noisy-neighbour`).
# Takes about 30 seconds after the build.
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
"$bench" noisy-neighbour --hangard "$hangard" --json bench-results/noisy.json "$@"
