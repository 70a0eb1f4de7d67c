#!/usr/bin/env bash
# Regenerates bench/hangard.order, the symbol ordering file the release link of hangard passes to lld
# (Package.swift, `releaseLink`). lld places the sections holding the listed functions first, in the file's order,
# so the code hangard runs (start-up, idle timers, serving calls, reconfiguration) lies together instead of spread
# over the ~24 MB of text. Each page fault in the text makes the kernel map the 64 KB around it (fault-around), so
# spread-out code costs its whole neighbourhood in RSS: packing it took idle RSS from about 29 MB to about 24 MB.
#
# When to rerun it: after changes that add or rename much of what runs at start-up or per call (new front-end
# paths, new dependencies, a toolchain or dependency upgrade), or when the idle RSS drifts up. A stale file is only a
# memory cost, never a correctness one: names lld does not find are skipped (--no-warn-symbol-ordering) and code
# missing from the list keeps its place.
#
# How: builds hangard and hangar-bench in release mode (scripts/lib/bench-build.sh), runs a copy of hangard under
# valgrind's callgrind, which records every function that executes, through `hangar-bench run --scenario all`
# (short phases), `hangar-bench attach`, and the development default on TCP (HTTP save/get/delete, metadata,
# healthz, /metrics, a few idle seconds), then lists the functions of hangard's own binary in their address order.
# Needs valgrind (Debian: valgrind) and curl; takes 2–4 minutes after the build. Then rebuild, e.g.
# `source scripts/lib/bench-build.sh`: the script removes the release hangard so that the next build links again
# (SwiftPM does not see the file change).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/bench-build.sh"
for tool in valgrind curl; do
    command -v "$tool" > /dev/null || { echo "gen-symbol-order.sh: $tool is required" >&2; exit 1; }
done
toolchain="$(dirname "$(readlink -f "$(command -v swift)")")"
objcopy="$toolchain/llvm-objcopy"; [[ -x "$objcopy" ]] || objcopy=objcopy
nm="$toolchain/llvm-nm"; [[ -x "$nm" ]] || nm=nm

work="$(mktemp -d /tmp/gso.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# valgrind (3.19 in bookworm) cannot read DWARF 5: profile a copy without debug information (symbols stay).
"$objcopy" --strip-debug "$hangard" "$work/hangard"
cat > "$work/hangard-vg" << EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" --demangle=no --compress-strings=no \
    --dump-instr=no --collect-jumps=no "$work/hangard" "\$@"
EOF
chmod +x "$work/hangard-vg"

echo "gen-symbol-order.sh: profiling hangard under callgrind (bench scenarios, attach, TCP default)" >&2
"$bench" run --hangard "$work/hangard-vg" --scenario all --concurrency 2 --rounds 1 --duration 1 \
    --warmup 0.2 --patience 0 --memory-apps 200 --memory-connected 50 > "$work/run.log" 2>&1 \
    || { tail -20 "$work/run.log" >&2; exit 1; }
"$bench" attach --hangard "$work/hangard-vg" --apps 10 --samples 3 --timeout 60 > "$work/attach.log" 2>&1 \
    || { tail -20 "$work/attach.log" >&2; exit 1; }

# The development default (embedded SQLite store, TCP listeners) with JSON logs, on ports derived from the pid.
port=$((20000 + $$ % 20000))
http="127.0.0.1:$port" grpc="127.0.0.1:$((port + 1))" metrics="127.0.0.1:$((port + 2))"
"$work/hangard-vg" --socket-root "$work/s" --data-dir "$work/d" --http-listen "$http" --grpc-listen "$grpc" \
    --metrics-listen "$metrics" --log-format json > "$work/default.log" 2>&1 &
pid=$!
for _ in $(seq 120); do grep -q 'hangard ready' "$work/default.log" && break; sleep 0.5; done
grep -q 'hangard ready' "$work/default.log" || { tail -20 "$work/default.log" >&2; kill "$pid"; exit 1; }
for _ in 1 2; do
    curl -sf -X POST -H 'content-type: application/json' -d '[{"key":"k","value":{"a":1}}]' \
        "http://$http/v1.0/state/statestore" > /dev/null
    curl -sf "http://$http/v1.0/state/statestore/k" > /dev/null
    curl -sf -X DELETE "http://$http/v1.0/state/statestore/k" > /dev/null
    curl -sf "http://$http/v1.0/metadata" > /dev/null
    curl -sf "http://$http/v1.0/healthz" > /dev/null
    curl -sf "http://$metrics/metrics" > /dev/null
done
sleep 5
kill -TERM "$pid"
wait "$pid" || true

# Every function of the profiled binary with a cost in some callgrind output ("fn=" under "ob=<binary>"), minus
# callgrind's recursion suffixes ('2), the unnamed ones (0x…: private functions have no symbol to order by) and
# valgrind's "(below main)".
awk -v target="$work/hangard" '
    /^ob=/ { object = substr($0, 4) }
    /^fn=/ && object == target { name = substr($0, 4); sub(/'\''[0-9]+$/, "", name); print name }
' "$work"/callgrind.* | grep -v -e '^0x' -e '^(' | sort -u > "$work/executed"
[[ -s "$work/executed" ]] || { echo "gen-symbol-order.sh: callgrind recorded no function of hangard" >&2; exit 1; }

# In address order (the layout the code had, so neighbours stay neighbours), then any name nm did not list.
"$nm" -n --defined-only "$work/hangard" | awk '$2 ~ /^[tTwW]$/ { print $3 }' > "$work/by-address"
{
    echo "# Functions hangard executes (start-up, idle, serving calls, reconfiguration), in the order lld lays"
    echo "# them out (Package.swift, releaseLink). Generated by scripts/gen-symbol-order.sh from" \
        "$(git rev-parse --short HEAD 2> /dev/null || echo '?'):"
    echo "# rerun it rather than editing. A stale list costs memory, never correctness."
    awk 'NR == FNR { executed[$0] = 1; next } ($0 in executed) && !seen[$0]++ { print }' \
        "$work/executed" "$work/by-address"
    awk 'NR == FNR { listed[$0] = 1; next } !($0 in listed)' "$work/by-address" "$work/executed"
} > bench/hangard.order
echo "gen-symbol-order.sh: bench/hangard.order lists $(grep -vc '^#' bench/hangard.order) functions" >&2

# SwiftPM does not know the link depends on the file: remove the binary so the next release build links again.
rm -f "$hangard"
echo "gen-symbol-order.sh: removed $hangard; rebuild (scripts/lib/build-hangard.sh) to link with it" >&2
