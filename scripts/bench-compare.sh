#!/usr/bin/env bash
# Regression check: compares a `hangar-bench run` result with a baseline. Per phase found in both (matched by
# server, operation, store, mode, callers and transport) it prints server CPU per call, p50, p99, calls/s and RSS:
# baseline, current, change, and whether the change is beyond noise (more than max(15 %, the baseline's own
# min–max spread over its rounds)); then hangard's memory figures. It only reports: exit status 0 whatever changed,
# non-zero only when an input cannot be read. Writes bench-results/compare.json (git-ignored).
# Usage: scripts/bench-compare.sh [BASELINE [CURRENT]]
#   defaults: bench/baseline.json and bench-results/latest.json (as written by scripts/bench.sh)
set -euo pipefail

here="$(pwd)"
bench_only=1
source "$(dirname "$0")/lib/bench-build.sh" # builds, and moves to the repository root
resolve() { case "$1" in /*) echo "$1" ;; *) echo "$here/$1" ;; esac }
baseline="bench/baseline.json"
current="bench-results/latest.json"
if [[ $# -ge 1 ]]; then baseline="$(resolve "$1")"; fi
if [[ $# -ge 2 ]]; then current="$(resolve "$2")"; fi
"$bench" compare --baseline "$baseline" --current "$current" --json bench-results/compare.json
