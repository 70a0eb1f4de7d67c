#!/usr/bin/env bash
#
# soak.sh — issue 16's soak test: hangard under mixed load for a long time (30 minutes by default), its RSS, open
# file descriptors and threads sampled every 5 s. Not run by CI.
#
# Usage:
#   scripts/soak.sh [--duration SECONDS (default 1800)] [--hangard PATH] [--out DIR] [driver options]
#
#   --hangard PATH  the binary to soak; default: the release build as deployed (scripts/lib/build-hangard.sh,
#                   `swift build -c release --static-swift-stdlib --product hangard`, built here)
#   --out DIR       where soak.csv (one row per sample), summary.json and hangard.log go; default
#                   bench-results/soak-<date>-<time> (git-ignored)
#   other options go to the driver, scripts/lib/soak.py: --interval, --warmup, --reconfigure-every, --rate (calls/s
#   of each steady worker, default 25), --max-rss-growth (percent, default 5), --fd-slack (default 5)
#
# Starts a real redis-server and PostgreSQL on loopback (the end-to-end tests' helpers, Tests/e2e), hangard with
# five tenants and seven components (state on in-memory, SQLite, Redis and PostgreSQL; pub/sub in-memory, SQLite
# and Redis), an invocation callee (the SDK's dapr.ext.grpc.App), and drives them with the official Dapr Python SDK
# over the apps' Unix sockets: state on every store, publish + streaming subscription on every broker, invocation
# over gRPC and HTTP, clients connecting and disconnecting, a tenant whose small quotas refuse a few calls (the only
# expected errors), and a reconfiguration every minute (an app or a component added or removed, a quota changed),
# each checked to have taken effect. See scripts/lib/soak.py for the details.
#
# Prints a line per sample and a summary at the end: RSS at the end of the warm-up (the first 5 minutes, or a sixth
# of a shorter run), its maximum and final value and growth, fds and threads after the warm-up, calls by kind, events
# published and received, reconfigurations, expected refusals and unexpected errors. Exit code 1 on any unexpected
# error (including a lost event or a reconfiguration not applied within 10 s), RSS growth over 5 % from the end of
# the warm-up to the last sample, or more fds at the last sample than at the end of the warm-up plus 5.
# Needs redis-server and PostgreSQL (installed with apt-get when missing, as scripts/test.sh does); as root,
# PostgreSQL runs as the `postgres` user.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

hangard=""
passthrough=()
while [ $# -gt 0 ]; do
    case "$1" in
        --hangard) hangard="$2"; shift 2 ;;
        --hangard=*) hangard="${1#*=}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) passthrough+=("$1"); shift ;;
    esac
done

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    echo "soak: installing ${missing[*]} with apt-get" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -z "$hangard" ]; then
    hangard="$(scripts/lib/build-hangard.sh release)"
    if git rev-parse --git-dir >/dev/null 2>&1; then
        echo "soak: source $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift || echo ' + uncommitted changes')" >&2
    fi
fi
[ -x "$hangard" ] || { echo "soak: no hangard binary at $hangard" >&2; exit 1; }

scripts/setup-python.sh
exec .venv/bin/python scripts/lib/soak.py --hangard "$hangard" "${passthrough[@]}"
