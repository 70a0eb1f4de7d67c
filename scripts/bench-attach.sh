#!/usr/bin/env bash
# Builds hangard and hangar-bench in release mode and measures live attach and detach: with 100 apps declared,
# 20 times a new Tenant file (one app) is renamed into hangard's --tenancy directory and the time until the new
# app's gRPC socket answers a GetState is taken; then the file is removed and the time until the socket file is
# gone is taken. Prints a table and writes bench-results/attach.json (git-ignored). Extra arguments go to
# `hangar-bench attach`, e.g. --apps 1000 or --samples 50 (see `hangar-bench help attach`).
# Takes about 15 seconds after the build.
set -euo pipefail

source "$(dirname "$0")/lib/bench-build.sh"
"$bench" attach --hangard "$hangard" --json bench-results/attach.json "$@"
