#!/usr/bin/env bash
# Measures an upgrade under load: Tests/e2e/test_upgrade.py's load test (SDK clients over gRPC on an app's Unix
# socket and over TCP with a token, HTTP/1.1 clients over TCP and the Unix socket) run RUNS times (default 3), each
# replacing the running hangard with a second process that takes its sockets over. Prints, per run, the calls made,
# the failed ones (must be 0), the median and p99 call without an upgrade (the reference, same run), the upgrade
# time (the new process started → the old one exited), the take-over time the new process logs, and the longest
# stall one call saw. Writes bench-results/upgrade.jsonl (git-ignored).
#
# HANGARD selects the binary (default .build/debug/hangard, as the e2e tests); e.g.
#   HANGARD=$(scripts/lib/build-hangard.sh) scripts/bench-upgrade.sh     # the release build
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-3}"
export HANGARD="${HANGARD:-$ROOT/.build/debug/hangard}"
[ -x "$HANGARD" ] || { echo "bench-upgrade: no hangard at $HANGARD (swift build --product hangard)" >&2; exit 1; }
[ -x .venv/bin/python ] || scripts/setup-python.sh
mkdir -p bench-results
out=bench-results/upgrade.jsonl
: > "$out"
for run in $(seq 1 "$RUNS"); do
    report="$(mktemp)"
    HANGAR_UPGRADE_REPORT="$report" .venv/bin/python -m pytest Tests/e2e/test_upgrade.py -q -p no:cacheprovider \
        -k under_load >/dev/null
    cat "$report" >> "$out"
    rm -f "$report"
done
.venv/bin/python - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'run':>3} {'calls':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} {'upgrade s':>9} {'takeover ms':>11} {'longest stall ms':>16}  client")
for i, r in enumerate(rows, 1):
    print(f"{i:>3} {r['calls']:>6} {r['failed']:>6} {r['baseline_p50_ms']:>7} {r['baseline_p99_ms']:>7} {r['upgrade_s']:>9} "
          f"{str(r['takeover_ms']):>11} {r['longest_stall_ms']:>16}  {r['longest_stall_client']}")
PY
