#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and measures pub/sub (issue 14, "Measure"), in one run so that
# the machine cancels out:
#   1. `hangar-bench run` on bench/pubsub-resources (memstore, mempubsub = pubsub.in-memory, sqlpubsub =
#      pubsub.sqlite), 3 rounds of: GetState on memstore (the reference), closed-loop PublishEvent on each pub/sub
#      component, each with 1 caller and with 32 callers over 16 apps (as scripts/bench.sh measures GetState); then
#      the `pubsub` scenario: publish → delivery with a streaming subscriber answering at once, paced at half the
#      rate pubsub.sqlite sustained with 32 publishers in that round and at a low rate, and the noisy neighbour
#      (tenant `noisy` flooding a subscriber that never answers while tenant `bench` publishes at the low rate).
#      Writes bench-results/pubsub.json (git-ignored).
#   2. The anchor: Redis Streams used directly, Debian's redis-server (installed with apt-get when missing) on a
#      Unix socket with an append-only file (appendfsync everysec: a write is in the file before the reply, as a
#      pubsub.sqlite publish is in its WAL), `redis-benchmark` running XADD with 1 and with 32 clients. Prints its CSV
#      lines (requests/s, latency avg/min/p50/p95/p99/max in ms) and writes bench-results/pubsub-redis.csv; then
#      `hangar-bench redis-stream`: XADD paced at the rates the pubsub scenario used, read by a consumer group
#      (XREADGROUP + XACK), publish → delivery p50/p99 measured as for hangard
#      (bench-results/pubsub-redis-stream.json).
# Extra arguments go to `hangar-bench run`, e.g. --rounds 1 or --pubsub-flood-rate 5000.
# Takes about 6 minutes after the build on a 2-core machine.
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
started=$SECONDS

"$bench" run --hangard "$hangard" --resources bench/pubsub-resources \
    --scenario get-memory --scenario publish-memory --scenario publish-sqlite --scenario pubsub \
    --connect-apps 16 --duration 4 --patience 90 --json bench-results/pubsub.json "$@"

# --- the Redis Streams anchor -------------------------------------------------------------------------------------
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "bench-pubsub: installing redis-server and redis-tools with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools
fi
redis_dir="$(mktemp -d /tmp/hb-redis.XXXXXX)"
redis_pid=""
cleanup() {
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
    rm -rf "$redis_dir"
}
trap cleanup EXIT
redis-server --port 0 --unixsocket "$redis_dir/redis.sock" --unixsocketperm 700 --dir "$redis_dir" \
    --appendonly yes --appendfsync everysec --save "" --daemonize no --logfile "$redis_dir/redis.log" &
redis_pid=$!
for _ in $(seq 50); do
    [ -S "$redis_dir/redis.sock" ] && redis-cli -s "$redis_dir/redis.sock" ping >/dev/null 2>&1 && break
    sleep 0.1
done
echo "redis: $(redis-server --version)"
{
    for clients in 1 32; do
        # An event of 100 bytes of data in one field, every client on one stream (the publishers share one topic).
        redis-cli -s "$redis_dir/redis.sock" del bench >/dev/null
        printf 'xadd_clients_%s,' "$clients"
        redis-benchmark -s "$redis_dir/redis.sock" -c "$clients" -n $((clients == 1 ? 50000 : 200000)) --csv \
            XADD bench '*' data "$(head -c 100 /dev/zero | tr '\0' 'a')" | tail -n 1
    done
} | tee bench-results/pubsub-redis.csv
echo "redis-benchmark columns: test, requests/s, latency avg, min, p50, p95, p99, max (ms)"
# Publish → delivery on Redis Streams (XADD, XREADGROUP + XACK) at the rates the pubsub scenario offered
# pubsub.sqlite (half rate, low rate), measured as that scenario measures hangard.
rates="$(python3 -c '
import json, sys
report = json.load(open("bench-results/pubsub.json"))
rates = [d["offeredPerSecond"]["median"] for d in (report.get("pubsub") or {}).get("delivery", [])
         if d["component"] == "sqlpubsub" and d["delivery"] == "streaming" and d["kind"] in ("half-rate", "low-rate")]
print(" ".join("--rate %d" % round(r) for r in rates))
')"
if [ -n "$rates" ]; then
    # shellcheck disable=SC2086
    "$bench" redis-stream --socket "$redis_dir/redis.sock" --redis-pid "$redis_pid" $rates --duration 4 \
        --json bench-results/pubsub-redis-stream.json
fi
echo "bench-pubsub.sh: $((SECONDS - started)) s after the build" >&2
