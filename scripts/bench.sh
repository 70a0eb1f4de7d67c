#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and runs the full measurement of the node daemon, each part
# writing JSON under bench-results/ (git-ignored):
#   1. `hangar-bench run --scenario all` (bench-results/latest.json): the memory scenario (RSS/PSS idle with 1 app,
#      with 1000 apps declared and 200 connected); RSS idle and with all 100 apps connected; GetState/SaveState on
#      state.in-memory and state.sqlite over gRPC and on state.in-memory over HTTP, with 1 caller and with 32 callers
#      spread over 16 apps; the same gRPC server with a trivial echo method as the baseline; service invocation
#      (`invoke`); a server stream proxied through hangard with a fast and a slow consumer beside GetState calls on
#      one connection, against the same stream read directly (`stream`). 3 rounds of 4 s phases.
#   2. `hangar-bench sidecar` (bench-results/sidecar.json): one hangard for 50 apps versus 50 hangards of one app.
#   3. `hangar-bench attach` (bench-results/attach.json): a new Tenant file to its app answering, and back.
#   4. `hangar-bench compare` against bench/baseline.json, when that file exists (bench-results/compare.json).
# Extra arguments go to `hangar-bench run` and override its defaults here, e.g. --rounds 1 or --duration 2.
# Takes 7–9 minutes after the build on a 2-core machine (the stream scenario adds about 2; at most about 10 with the
# patience budgets spent).
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
started=$SECONDS

"$bench" run --hangard "$hangard" --scenario all --connect-apps 16 --duration 4 --patience 90 \
    --json bench-results/latest.json "$@"
"$bench" sidecar --hangard "$hangard" --patience 30 --json bench-results/sidecar.json
"$bench" attach --hangard "$hangard" --json bench-results/attach.json

if [[ -f bench/baseline.json ]]; then
    "$bench" compare --baseline bench/baseline.json --current bench-results/latest.json \
        --json bench-results/compare.json
else
    echo "no bench/baseline.json: comparison skipped (it is committed from a release run of this script:" \
        "cp bench-results/latest.json bench/baseline.json)"
fi
echo "bench.sh: $((SECONDS - started)) s after the build" >&2
