#!/usr/bin/env bash
#
# check-protos.sh — fail if the committed generated protobuf code is out of date.
#
# Usage:
#   scripts/check-protos.sh
#
# Regenerates the Swift code of both packages with scripts/generate-protos.sh (same protoc, protoc-gen-swift and
# well-known types) into a temporary directory and compares it with the committed Sources/HangarGRPC/Generated and
# Benchmarks/Sources/HangarBench/Generated. Exits 0 when identical, 1 (with a diff) when not.
# Runnable from any working directory; intended for CI and pre-commit use.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GENERATED=(Sources/HangarGRPC/Generated Benchmarks/Sources/HangarBench/Generated)

TMP="$(mktemp -d "${TMPDIR:-/tmp}/hangar-protos.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

"$ROOT/scripts/generate-protos.sh" "$TMP"

stale=0
for dir in "${GENERATED[@]}"; do
    if [ ! -d "$ROOT/$dir" ]; then
        echo "check-protos: $dir does not exist" >&2
        stale=1
    elif ! diff -r -u "$ROOT/$dir" "$TMP/$dir"; then
        stale=1
    fi
done
if [ "$stale" -ne 0 ]; then
    echo >&2
    echo "generated protobuf code is stale: run scripts/generate-protos.sh" >&2
    exit 1
fi
echo "check-protos: generated protobuf code is up to date"
