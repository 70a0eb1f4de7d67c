#!/usr/bin/env bash
# What a state write costs the shared Redis server: its CPU per call, both as the server's whole CPU (INFO cpu,
# user + sys: command execution and the network I/O around it) and as the command's own execution time (INFO
# commandstats, usec_per_call), for
#   - what a daprd sidecar sends for a SaveState (components-contrib state/redis), the anchor: Dapr's set script,
#     then PERSIST (no TTL) or EXPIRE (a TTL) as a second command, each measured on its own and added up;
#   - state.redis's write script (Sources/HangarRedis/RedisStateStore+Script.swift, taken from the source), which
#     also keeps the tenant's byte count: an overwrite of the same size, new keys (the count grows), and new keys
#     with a TTL (also indexed by expiry).
# 32 clients (redis-benchmark -c 32), 100-byte values, 200,000 calls per case, 3 rounds, all in one run against one
# redis-server on loopback (persistence off, started here, removed at the end). Server CPU per call is what the
# shared server pays, and it does not depend on the client machine's load as throughput does.
# Usage: scripts/bench-redis-scripts.sh [CALLS]
set -euo pipefail

calls="${1:-200000}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "bench-redis-scripts: installing redis-server and redis-tools with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/hb-redis-scripts.XXXXXX)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cleanup() {
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

python3 - "$root/Sources/HangarRedis/RedisStateStore+Script.swift" "$work/hangar.lua" <<'EOF'
import re, sys
source = open(sys.argv[1]).read()
body = re.search(r'static let writeScript = """\n(.*?)\n        """', source, re.S).group(1)
open(sys.argv[2], "w").write("\n".join(line[8:] for line in body.splitlines()) + "\n")
EOF
cp "$root/Tests/dapr/state-redis-set.lua" "$work/dapr.lua"

redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save "" --appendonly no --daemonize yes \
    --logfile "$work/redis.log" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
dapr="$(redis-cli -p "$port" -x SCRIPT LOAD <"$work/dapr.lua")"
hangar="$(redis-cli -p "$port" -x SCRIPT LOAD <"$work/hangar.lua")"
value="$(head -c 100 /dev/zero | tr '\0' x)"
accounting=(hangar:state:bytes:t hangar:state:expiries:t hangar:state:sizes:t hangar:state:partitions)

# The server's CPU (user + sys) so far, in microseconds.
server_cpu() {
    redis-cli -p "$port" INFO cpu | tr -d '\r' | python3 -c '
import sys
fields = dict(line.split(":", 1) for line in sys.stdin if ":" in line)
print(int((float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])) * 1e6))'
}

# Runs one case; prints Redis's whole CPU per call (µs), the command's execution time per call (µs) and the calls
# per second redis-benchmark saw.
measure() {
    local random="$1" command="$2"
    shift 2
    redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
    local before rate after
    before="$(server_cpu)"
    rate="$(redis-benchmark -p "$port" -n "$calls" -c 32 $random -q "$@" 2>&1 | tr '\r' '\n' \
        | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)"
    after="$(server_cpu)"
    local usec
    usec="$(redis-cli -p "$port" INFO commandstats | tr -d '\r' | grep "^cmdstat_$command:" \
        | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/')"
    echo "$(python3 -c "print(round(($after - $before) / $calls, 2))") $usec $rate"
}

printf '%-24s %6s %16s %16s %12s\n' "case" "round" "server µs/call" "command µs/call" "calls/s"
declare -A sums execs
for round in 1 2 3; do
    redis-cli -p "$port" FLUSHALL >/dev/null
    while read -r name random; do
        case "$name" in
            dapr-overwrite) args=(EVALSHA "$dapr" 1 "a||k" 0 "$value" 1) ;;
            dapr-new-keys) args=(EVALSHA "$dapr" 1 "a||k:__rand_int__" 0 "$value" 1) ;;
            dapr-persist) args=(PERSIST "a||k") ;;
            dapr-expire) args=(EXPIRE "a||k" 3600) ;;
            hangar-overwrite) args=(EVALSHA "$hangar" 5 "t||a||k" "${accounting[@]}" 1 s "" u "" "$value" 1 7 1073741824 t) ;;
            hangar-new-keys) args=(EVALSHA "$hangar" 5 "t||a||k:__rand_int__" "${accounting[@]}" 1 s "" u "" "$value" 1 20 1073741824 t) ;;
            hangar-new-keys-ttl) args=(EVALSHA "$hangar" 5 "t||a||x:__rand_int__" "${accounting[@]}" 1 s "" u 3600000 "$value" 1 20 1073741824 t) ;;
        esac
        [ "$random" = "-" ] && random="" || random="-r 100000000"
        command=evalsha
        case "$name" in dapr-persist) command=persist ;; dapr-expire) command=expire ;; esac
        read -r cpu usec rate < <(measure "$random" "$command" "${args[@]}")
        printf '%-24s %6s %16s %16s %12s\n' "$name" "$round" "$cpu" "$usec" "$rate"
        sums[$name]="$(python3 -c "print(${sums[$name]:-0} + $cpu)")"
        execs[$name]="$(python3 -c "print(${execs[$name]:-0} + $usec)")"
    done <<'CASES'
dapr-overwrite -
dapr-new-keys r
dapr-persist -
dapr-expire -
hangar-overwrite -
hangar-new-keys r
hangar-new-keys-ttl r
CASES
done
echo
mean() { python3 -c "print(round(($1) / 3, 2))"; }
row() {  # name, server µs, command µs, anchor name, anchor server µs
    printf '  %-44s %8s µs %8s µs   %5s× %s\n' "$1" "$2" "$3" "$(python3 -c "print(round($2 / $5, 2))")" "$4"
}
dapr_plain="$(mean "${sums[dapr-overwrite]} + ${sums[dapr-persist]}")"
dapr_new="$(mean "${sums[dapr-new-keys]} + ${sums[dapr-persist]}")"
dapr_ttl="$(mean "${sums[dapr-new-keys]} + ${sums[dapr-expire]}")"
echo "mean over 3 rounds: the server's CPU per SaveState (whole, then the commands' own execution), and the ratio"
echo "to what a daprd costs it for the same write (Dapr's set script + PERSIST, or + EXPIRE for a TTL):"
row "daprd overwrite (script + PERSIST)" "$dapr_plain" "$(mean "${execs[dapr-overwrite]} + ${execs[dapr-persist]}")" "itself" "$dapr_plain"
row "daprd new keys (script + PERSIST)" "$dapr_new" "$(mean "${execs[dapr-new-keys]} + ${execs[dapr-persist]}")" "itself" "$dapr_new"
row "daprd new keys with a TTL (script + EXPIRE)" "$dapr_ttl" "$(mean "${execs[dapr-new-keys]} + ${execs[dapr-expire]}")" "itself" "$dapr_ttl"
row "state.redis overwrite" "$(mean "${sums[hangar-overwrite]}")" "$(mean "${execs[hangar-overwrite]}")" "daprd overwrite" "$dapr_plain"
row "state.redis new keys" "$(mean "${sums[hangar-new-keys]}")" "$(mean "${execs[hangar-new-keys]}")" "daprd new keys" "$dapr_new"
row "state.redis new keys with a TTL" "$(mean "${sums[hangar-new-keys-ttl]}")" "$(mean "${execs[hangar-new-keys-ttl]}")" "daprd new keys with a TTL" "$dapr_ttl"
