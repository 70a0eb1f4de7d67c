#!/usr/bin/env bash
#
# check-protos.sh — fail if the committed generated protobuf code is out of date.
#
# Usage:
#   scripts/check-protos.sh
#
# Regenerates the Swift code for Sources/HangarGRPC/Protos into a temporary directory with
# scripts/generate-protos.sh (same protoc / protoc-gen-swift setup) and compares it with the
# committed Sources/HangarGRPC/Generated. Exits 0 when identical, 1 (with a diff) when not.
# Runnable from any working directory; intended for CI and pre-commit use.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMITTED="$ROOT/Sources/HangarGRPC/Generated"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/hangar-protos.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

"$ROOT/scripts/generate-protos.sh" "$TMP/Generated"

if [ ! -d "$COMMITTED" ]; then
    echo "check-protos: $COMMITTED does not exist" >&2
    echo "generated protobuf code is stale: run scripts/generate-protos.sh" >&2
    exit 1
fi

if ! diff -r -u "$COMMITTED" "$TMP/Generated"; then
    echo >&2
    echo "generated protobuf code is stale: run scripts/generate-protos.sh" >&2
    exit 1
fi

echo "check-protos: generated protobuf code is up to date"
