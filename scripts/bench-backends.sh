#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and measures the network backends (issue 15, "Measure"), in one
# run so that the machine cancels out. It starts its own servers on loopback (a free port, a temporary directory,
# removed at the end): Debian's redis-server (installed with apt-get when missing), persistence off.
#   1. `hangar-bench run` on memstore (state.in-memory, the reference) and redisstore (state.redis, poolSize left
#      at Hangar's default): GetState (and SaveState) with 1 caller and with 32 callers over 16 apps, 3 rounds, the
#      server's CPU read beside hangard's (bench-results/backends-run.json).
#   2. The anchors, Redis used directly over the same loopback TCP: `redis-benchmark` with 1 and 32 clients running
#      GET of a 100-byte string, HGETALL of an item in Dapr's layout, and EVALSHA of state.redis's own read script
#      (what a GetState sends) on that item (bench-results/backends-redis.csv, with Redis's CPU per request).
#   3. `hangar-bench sidecar` on redisstore: 50 apps, one hangard for all (poolSize left at Hangar's default)
#      against 50 one-app hangards with Dapr's default pool size (poolSize = 10 × cores, go-redis's 10 ×
#      GOMAXPROCS); the server's connections named hangard:state:redisstore counted (CLIENT LIST) through each
#      model (bench-results/backends-sidecar-redis.json).
#   4. With state.postgresql in this tree (Sources/HangarPostgres): PostgreSQL (Debian's, installed when missing) in a
#      temporary data directory, run as the `postgres` user (it refuses root), fsync off; `run` on memstore and pgstore
#      (bench-results/backends-run-postgresql.json), and `sidecar` on pgstore: the node with Hangar's default maxConns
#      (8) against 50 one-app hangards with pgx's default (max(4, cores)), counting pg_stat_activity's connections of
#      the user and database the component uses (bench-results/backends-sidecar-postgresql.json).
#   5. A summary of the ratios and goals (bench-results/backends-summary.txt).
# Extra arguments go to `hangar-bench run`, e.g. --rounds 1.
# Takes about 9 minutes after the build on a 2-core machine.
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
started=$SECONDS
cores="$(nproc)"

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "bench-backends: installing redis-server and redis-tools with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools
fi

work="$(mktemp -d /tmp/hb-backends.XXXXXX)"
redis_pid=""
pg_pid=""
pg_dir=""
cleanup() {
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
    # SIGINT: PostgreSQL's fast shutdown.
    if [ -n "$pg_pid" ]; then kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
    rm -rf "$work"
    if [ -n "$pg_dir" ]; then rm -rf "$pg_dir"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- Redis --------------------------------------------------------------------------------------------------------
redis_port="$(free_port)"
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save "" --appendonly no \
    --daemonize no --logfile "$work/redis/redis.log" &
redis_pid=$!
redis() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }
for _ in $(seq 100); do
    [ "$(redis PING 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
echo "redis: $(redis-server --version) on 127.0.0.1:$redis_port (pid $redis_pid)" >&2

# The components: the node keeps Hangar's default poolSize (8 for the whole node); a sidecar gets Dapr's default.
redis_component() { # <directory> [poolSize]
    mkdir -p "$1"
    {
        cat <<EOF
# state.redis on the bench's own redis-server (scripts/bench-backends.sh).
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: redisstore
spec:
  type: state.redis
  version: v1
  metadata:
    - name: redisHost
      value: "127.0.0.1:$redis_port"
EOF
        if [ -n "${2:-}" ]; then printf '    - name: poolSize\n      value: "%s"\n' "$2"; fi
    } > "$1/redisstore.yaml"
}
mkdir -p "$work/run-resources"
cp bench/resources/memstore.yaml "$work/run-resources/"
redis_component "$work/run-resources"
redis_component "$work/node-redis"
redis_component "$work/sidecar-redis" $((10 * cores))

# --- 1. GetState through hangard ----------------------------------------------------------------------------------
"$bench" run --hangard "$hangard" --resources "$work/run-resources" \
    --scenario get-memory --scenario get-redis --scenario save-redis --backend-pid "$redis_pid" \
    --connect-apps 16 --duration 4 --patience 90 --json bench-results/backends-run.json "$@"

# --- 2. The anchors: Redis used directly ------------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
value="$(head -c 100 /dev/zero | tr '\0' 'v')"
# redis-benchmark's GET reads the key `key:__rand_int__` (no -r: the name is taken literally).
redis SET 'key:__rand_int__' "$value" >/dev/null
# An item as state.redis (and Dapr) store it: a hash with data and version.
redis HSET bench-item data "$value" version 1 >/dev/null
# state.redis's read script, exactly as the component loads it (the Swift literal, its indentation removed).
read_sha="$(python3 - "$redis_port" <<'EOF'
import hashlib, re, subprocess, sys
source = open("Sources/HangarRedis/RedisStateStore+Script.swift").read()
body = re.search(r'static let readScript = """\n(.*?)\n\s*"""', source, re.S).group(1)
script = "\n".join(line[8:] for line in body.split("\n"))
loaded = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", sys.argv[1], "SCRIPT", "LOAD", script],
                        capture_output=True, check=True, text=True).stdout.strip()
assert loaded == hashlib.sha1(script.encode()).hexdigest(), loaded
print(loaded)
EOF
)"
echo "redis: state.redis's read script is $read_sha" >&2
{
    echo "test,clients,requests,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms,redis_cpu_us_per_request"
    for test in GET HGETALL EVALSHA; do
        case $test in
        GET) command=(GET 'key:__rand_int__') ;;
        HGETALL) command=(HGETALL bench-item) ;;
        EVALSHA) command=(EVALSHA "$read_sha" 1 bench-item) ;;
        esac
        for clients in 1 32; do
            requests=$((clients == 1 ? 50000 : 300000))
            before="$(cpu_ticks "$redis_pid")"
            line="$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$clients" -n "$requests" --csv "${command[@]}" |
                tail -n 1 | tr -d '"')"
            after="$(cpu_ticks "$redis_pid")"
            cpu="$(python3 -c "import os; print(round(($after - $before) * 1e6 / os.sysconf('SC_CLK_TCK') / $requests, 2))")"
            echo "$test,$clients,$requests,${line#*,},$cpu"
        done
    done
} | tee bench-results/backends-redis.csv
echo "columns: test, clients, requests, requests/s, latency avg/min/p50/p95/p99/max (ms), redis CPU µs per request"

# --- 3. Connections: the node against 50 sidecars ---------------------------------------------------------------
"$bench" sidecar --hangard "$hangard" --store redisstore --resources "$work/node-redis" \
    --sidecar-resources "$work/sidecar-redis" --backend-pid "$redis_pid" \
    --connections-command "redis-cli -h 127.0.0.1 -p $redis_port client list | grep -c ' name=hangard:state:redisstore '" \
    --json bench-results/backends-sidecar-redis.json

# --- 4. PostgreSQL, when state.postgresql is in this tree ---------------------------------------------------------
if [ -d Sources/HangarPostgres ]; then
    source scripts/lib/bench-postgres-server.sh
    start_bench_postgres
    pg_component() { # <directory> [maxConns]
        mkdir -p "$1"
        {
            cat <<EOF
# state.postgresql (v2) on the bench's own PostgreSQL (scripts/bench-backends.sh).
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
EOF
            if [ -n "${2:-}" ]; then printf '    - name: maxConns\n      value: "%s"\n' "$2"; fi
        } > "$1/pgstore.yaml"
    }
    mkdir -p "$work/run-pg-resources"
    cp bench/resources/memstore.yaml "$work/run-pg-resources/"
    pg_component "$work/run-pg-resources"
    pg_component "$work/node-pg"
    pg_component "$work/sidecar-pg" $((cores > 4 ? cores : 4))

    "$bench" run --hangard "$hangard" --resources "$work/run-pg-resources" \
        --scenario get-memory --scenario get-postgresql --scenario save-postgresql --backend-pid "$pg_pid" \
        --connect-apps 16 --duration 4 --patience 90 --json bench-results/backends-run-postgresql.json "$@"
    "$bench" sidecar --hangard "$hangard" --store pgstore --resources "$work/node-pg" \
        --sidecar-resources "$work/sidecar-pg" --backend-pid "$pg_pid" \
        --connections-command "psql -X -At -h $pg_dir -p $pg_port -U postgres -d postgres -c \"SELECT count(*) FROM pg_stat_activity WHERE usename = 'hangar' AND datname = 'hangar'\"" \
        --json bench-results/backends-sidecar-postgresql.json
fi

# --- 5. Summary -------------------------------------------------------------------------------------------------
python3 scripts/lib/backends-summary.py | tee bench-results/backends-summary.txt
echo "bench-backends.sh: $((SECONDS - started)) s after the build" >&2
