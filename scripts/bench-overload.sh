#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and runs the overload benchmark of issue 16 (memory bounded per
# node): two attacking tenants, with no quotas set (the defaults), each open SaveState streams on their app's gRPC
# socket, send a message prefix declaring 4,000,000 bytes and all of the message but its last bytes, then one more
# byte every 4 s to stay under the request progress timeout, and never finish; a quiet tenant reads at 500 calls/s
# meanwhile. Three attack shapes, each on a fresh hangard: 'issue' (64 streams over 8 connections per attacker),
# 'wide' (512 over 32) and 'reopen' (the issue's shape, reopening every stream or connection hangard ends).
# Reports hangard's RSS once a second (baseline, max, growth; goal: under baseline + 300 MB and under the
# DaemonSet's 512 Mi), the quiet tenant's p99 beside its value before the attack (goal: <= 1.5x), and what each
# attacker got. Prints a table and writes bench-results/overload.json (git-ignored). Extra arguments go to
# `hangar-bench overload`, e.g. --shapes issue, --attackers 3, --max-buffered-bytes 201326592, or
# --trickle-bytes 1024 --hold-back 1000000 (an attacker trickling enough to count as progress, 1 KiB per stream
# every 4 s, where the default 1 byte is now ended by --request-progress-bytes) (see `hangar-bench help overload`).
# Takes about 4 minutes after the build.
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
"$bench" overload --hangard "$hangard" --json bench-results/overload.json "$@"
