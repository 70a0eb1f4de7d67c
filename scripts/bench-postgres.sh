#!/usr/bin/env bash
#
# bench-postgres.sh — GetState/SaveState on state.postgresql beside the in-memory GetState, in one hangard run
# (the PostgreSQL part of scripts/bench-backends.sh alone, for profiling it), with hangard's RSS read before and
# after the PostgreSQL phases.
#
# Usage: scripts/bench-postgres.sh [--perf SECONDS] [extra `hangar-bench run` arguments]
#   --perf N   also records `perf record -F 1999 -g` on hangard for N seconds, starting 2 s into the 1-caller
#              get-postgresql phase, into bench-results/postgres-get.perf.data (report it with
#              `perf report -i bench-results/postgres-get.perf.data --no-children`). PERF_AFTER_PHASES=3 records
#              in the 32-caller GetState phase instead, 4 and 5 in the SaveState phases.
#
# Starts its own PostgreSQL (Debian's, as the postgres user when run as root, fsync=off) on a free port and a
# temporary directory, removed at the end. Writes bench-results/postgres-run.json.
set -euo pipefail

perf_seconds=""
if [ "${1:-}" = "--perf" ]; then
    perf_seconds="$2"
    shift 2
fi

source "$(dirname "$0")/lib/bench-build.sh"

source "$(dirname "$0")/lib/bench-postgres-server.sh"

pg_pid=""
pg_dir=""
work="$(mktemp -d /tmp/hb-pgrun.XXXXXX)"
cleanup() {
    if [ -n "$pg_pid" ]; then kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
    rm -rf "$work" "$pg_dir"
}
trap cleanup EXIT
start_bench_postgres

mkdir -p "$work/resources"
cp bench/resources/memstore.yaml "$work/resources/"
cat > "$work/resources/pgstore.yaml" <<YAML
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pgstore
spec:
  type: state.postgresql
  version: v2
  metadata:
    - name: connectionString
      value: "host=127.0.0.1 port=$pg_port user=hangar dbname=hangar sslmode=disable"
YAML

rss() { awk '/^VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$1/status"; }
"$bench" run --hangard "$hangard" --resources "$work/resources" \
    --scenario get-memory --scenario get-postgresql --scenario save-postgresql --backend-pid "$pg_pid" \
    --connect-apps 16 --duration 4 --patience 90 --json bench-results/postgres-run.json "$@" \
    > >(tee "$work/bench.log") 2>&1 &
bench_pid=$!
# hangard is the bench's child; follow its RSS at each phase's start, and record it during the PG GetState phase.
hangard_pid=""
for _ in $(seq 600); do
    hangard_pid="$(pgrep -P "$bench_pid" -f "^$hangard " | head -n 1 || true)"
    [ -n "$hangard_pid" ] && break
    sleep 0.1
done
# Each finished phase prints one line with "calls/s": after two (the in-memory GetState, 1 and 32 callers) the
# PostgreSQL GetState phase with 1 caller begins.
recorded=0
seen=-1
while kill -0 "$bench_pid" 2>/dev/null; do
    done_phases="$(grep -c 'calls/s' "$work/bench.log" || true)"
    if [ -n "$hangard_pid" ] && [ -e "/proc/$hangard_pid" ]; then
        if [ "$done_phases" != "$seen" ]; then
            echo "bench-postgres: hangard RSS $(rss "$hangard_pid") after $done_phases phases" >&2
            seen="$done_phases"
        fi
        if [ "$done_phases" = "${PERF_AFTER_PHASES:-2}" ] && [ -n "$perf_seconds" ] && [ "$recorded" = 0 ]; then
            recorded=1
            sleep 2
            perf record -F 1999 -g -p "$hangard_pid" -o bench-results/postgres-get.perf.data -- sleep "$perf_seconds" \
                >/dev/null 2>&1 || echo "bench-postgres: perf record failed" >&2
        fi
        rss "$hangard_pid" > "$work/last-rss"
    fi
    sleep 0.2
done
wait "$bench_pid"
echo "bench-postgres: hangard RSS $(cat "$work/last-rss" 2>/dev/null) at the end" >&2
