#!/usr/bin/env bash
# Idle RSS of a hangard binary with 100 apps declared (one tenant) and one in-memory component, no connections.
# Usage: bench/measure-idle-rss.sh PATH/TO/hangard
set -euo pipefail
bin=$1
work=$(mktemp -d /tmp/hr.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/t" "$work/r"
{
    printf 'apiVersion: hangar.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: bench\nspec:\n  apps:\n'
    for i in $(seq 0 99); do printf '    - appId: app-%d\n' "$i"; done
} > "$work/t/bench.yaml"
printf 'apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: memstore\nspec:\n  type: state.in-memory\n' \
    > "$work/r/mem.yaml"
"$bin" --tenancy "$work/t" --resources "$work/r" --socket-root "$work/s" --data-dir "$work/d" \
    --http-listen none --grpc-listen none --log-level warning &
pid=$!
sleep 2
grep -E "VmRSS|RssAnon|RssFile" "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' '
echo
kill -TERM "$pid"
wait "$pid"
