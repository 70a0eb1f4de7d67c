#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and measures live attach and detach: with 100 apps declared,
# 20 times a new Tenant file (one app) is renamed into hangard's --tenancy directory and the time until the new
# app's gRPC socket answers a GetState is taken; then the file is removed and the time until the socket file is
# gone is taken. Prints a table and writes bench-results/attach.json (git-ignored). Extra arguments go to
# `hangar-bench attach`, e.g. --apps 1000 or --samples 50 (see `hangar-bench help attach`).
# Takes about 15 seconds after the build.
set -euo pipefail

cd "$(dirname "$0")/.."

# One product per invocation: `swift build` keeps only the last of several --product flags.
swift build -c release --product hangard
swift build -c release --product hangar-bench
bin="$(swift build -c release --show-bin-path)"

mkdir -p bench-results
if git rev-parse --git-dir > /dev/null 2>&1; then
    echo "source: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift || echo ' + uncommitted changes')" >&2
fi
"$bin/hangar-bench" attach --hangard "$bin/hangard" --json bench-results/attach.json "$@"
