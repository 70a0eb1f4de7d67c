#!/usr/bin/env bash
#
# swift-protobuf-source.sh — the one place that says where protobuf's well-known types come from.
#
# Usage:
#   scripts/lib/swift-protobuf-source.sh            prints the swift-protobuf source directory
#   scripts/lib/swift-protobuf-source.sh --include  prints the directory holding google/protobuf/*.proto
#
# Hangar's protos import google/protobuf/{any,empty,struct}.proto. Those files are taken from swift-protobuf's own
# source at the version the generator's plugin is built from (Protos/Sources/SwiftProtobuf: the files its runtime's
# Google_Protobuf_* types are generated from), never from wherever the machine's protoc keeps them: Debian ships
# them in libprotobuf-dev, which protobuf-compiler only recommends, so a machine with protoc may lack them.
# scripts/generate-protos.sh (and so scripts/check-protos.sh) and Tests/e2e/test_proto_compat.py both ask this script.
#
# The source is a shallow clone in .build-protoc/swift-protobuf-<version> (git-ignored), made when missing; git
# resolves the URL to the machine's package mirror like every other Swift package.

set -euo pipefail

SWIFT_PROTOBUF_VERSION="1.39.0"   # must match the swift-protobuf runtime that Package.swift resolves
SWIFT_PROTOBUF_URL="https://github.com/apple/swift-protobuf.git"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SOURCE="$ROOT/.build-protoc/swift-protobuf-$SWIFT_PROTOBUF_VERSION"
INCLUDE="$SOURCE/Protos/Sources/SwiftProtobuf"

if [ ! -f "$SOURCE/Package.swift" ] || [ ! -f "$INCLUDE/google/protobuf/any.proto" ]; then
    echo "swift-protobuf-source: cloning swift-protobuf $SWIFT_PROTOBUF_VERSION into $SOURCE" >&2
    rm -rf "$SOURCE"
    mkdir -p "$(dirname "$SOURCE")"
    git -c advice.detachedHead=false clone --quiet --depth 1 \
        --branch "$SWIFT_PROTOBUF_VERSION" "$SWIFT_PROTOBUF_URL" "$SOURCE" >&2
fi
if [ ! -f "$INCLUDE/google/protobuf/any.proto" ]; then
    echo "swift-protobuf-source: $INCLUDE has no google/protobuf/any.proto" >&2
    exit 1
fi

case "${1:-}" in
    --include) echo "$INCLUDE" ;;
    --version) echo "$SWIFT_PROTOBUF_VERSION" ;;
    "") echo "$SOURCE" ;;
    *) echo "usage: $0 [--include|--version]" >&2; exit 2 ;;
esac
