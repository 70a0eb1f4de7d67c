#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and compares the node model with the sidecar model on the same
# workload: 50 apps, each with one paced caller at 100 calls/s alternating GetState and SaveState on state.in-memory,
# served first by one hangard declaring all 50 apps, then by 50 hangards declaring one app each. Reports summed
# RSS, PSS and CPU per call of each model, client latency, and the ratios sidecar ÷ node. Prints a table and writes
# bench-results/sidecar.json (git-ignored). Extra arguments go to `hangar-bench sidecar`, e.g. --apps 20 or
# --rate 200 (see `hangar-bench help sidecar`).
# Takes about a minute after the build.
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
"$bench" sidecar --hangard "$hangard" --json bench-results/sidecar.json "$@"
