#!/usr/bin/env bash
#
# generate-protos.sh — regenerate the committed Swift protobuf code for HangarGRPC.
#
# Usage:
#   scripts/generate-protos.sh [OUTPUT_DIR]
#
#   OUTPUT_DIR defaults to Sources/HangarGRPC/Generated. scripts/check-protos.sh passes a
#   temporary directory to verify that the committed code is up to date.
#
# Runnable from any working directory. What it does:
#   1. Installs `protoc` (Debian package protobuf-compiler) with apt-get if it is missing.
#   2. Builds `protoc-gen-swift` from swift-protobuf ${SWIFT_PROTOBUF_VERSION} into
#      .build-protoc/ (git-ignored) unless a binary of that exact version is already there.
#      The version must match the swift-protobuf runtime that Package.swift resolves.
#   3. Runs protoc over every .proto under Sources/HangarGRPC/Protos and writes one
#      <path_with_underscores>.pb.swift per proto file into OUTPUT_DIR, with `package`
#      visibility and `package import SwiftProtobuf` / `package import Foundation`
#      (UseAccessLevelOnImports=true — required because the HangarGRPC target enables the
#      InternalImportsByDefault upcoming feature, under which a plain `import` is internal
#      and could not be used in `package` declarations). Existing *.pb.swift files in OUTPUT_DIR are removed first so that a
#      deleted .proto does not leave stale Swift code behind.
#
# Well-known types (google/protobuf/any.proto, empty.proto, struct.proto, ...) are taken
# from protoc's include directory and are NOT generated: swift-protobuf maps them to its
# built-in types (Google_Protobuf_Any, Google_Protobuf_Empty, Google_Protobuf_Struct).
#
# Only messages and enums are generated; `service` blocks in the protos are documentation
# (HangarGRPC implements its own gRPC server), so no grpc-swift plugin is involved.
#
# Environment overrides:
#   PROTOC                 protoc binary to use (default: `protoc` from PATH)
#   PROTOC_INCLUDE         directory holding google/protobuf/*.proto (auto-detected)

set -euo pipefail

SWIFT_PROTOBUF_VERSION="1.39.0"
SWIFT_PROTOBUF_URL="https://github.com/apple/swift-protobuf.git"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="$ROOT/Sources/HangarGRPC/Protos"
OUT_DIR="${1:-$ROOT/Sources/HangarGRPC/Generated}"

TOOLS_DIR="$ROOT/.build-protoc"
PLUGIN_SRC="$TOOLS_DIR/swift-protobuf-$SWIFT_PROTOBUF_VERSION"
PLUGIN_SCRATCH="$TOOLS_DIR/build"
PLUGIN="$PLUGIN_SCRATCH/release/protoc-gen-swift"

log() { echo "generate-protos: $*" >&2; }

# --- 1. protoc -------------------------------------------------------------------------
PROTOC="${PROTOC:-protoc}"
if ! command -v "$PROTOC" >/dev/null 2>&1; then
    log "protoc not found; installing protobuf-compiler with apt-get"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends protobuf-compiler
    PROTOC="protoc"
fi

if [ -z "${PROTOC_INCLUDE:-}" ]; then
    for candidate in \
        "$(dirname "$(command -v "$PROTOC")")/../include" \
        /usr/include /usr/local/include; do
        if [ -f "$candidate/google/protobuf/any.proto" ]; then
            PROTOC_INCLUDE="$(cd "$candidate" && pwd)"
            break
        fi
    done
fi
if [ -z "${PROTOC_INCLUDE:-}" ] || [ ! -f "$PROTOC_INCLUDE/google/protobuf/any.proto" ]; then
    log "cannot find google/protobuf/any.proto; set PROTOC_INCLUDE to protoc's include directory"
    exit 1
fi

# --- 2. protoc-gen-swift ---------------------------------------------------------------
plugin_is_current() {
    [ -x "$PLUGIN" ] && "$PLUGIN" --version 2>/dev/null | grep -qx "protoc-gen-swift $SWIFT_PROTOBUF_VERSION"
}

if ! plugin_is_current; then
    log "building protoc-gen-swift $SWIFT_PROTOBUF_VERSION into $TOOLS_DIR (takes about a minute)"
    mkdir -p "$TOOLS_DIR"
    if [ ! -f "$PLUGIN_SRC/Package.swift" ]; then
        rm -rf "$PLUGIN_SRC"
        git -c advice.detachedHead=false clone --quiet --depth 1 \
            --branch "$SWIFT_PROTOBUF_VERSION" "$SWIFT_PROTOBUF_URL" "$PLUGIN_SRC"
    fi
    swift build -c release --product protoc-gen-swift \
        --package-path "$PLUGIN_SRC" --scratch-path "$PLUGIN_SCRATCH" >&2
    if ! plugin_is_current; then
        log "built $PLUGIN but it does not report version $SWIFT_PROTOBUF_VERSION"
        exit 1
    fi
fi

# --- 3. generate -----------------------------------------------------------------------
PROTO_FILES=()
while IFS= read -r -d '' f; do
    PROTO_FILES+=("${f#"$PROTO_DIR"/}")
done < <(find "$PROTO_DIR" -name '*.proto' -type f -print0 | LC_ALL=C sort -z)

if [ "${#PROTO_FILES[@]}" -eq 0 ]; then
    log "no .proto files under $PROTO_DIR"
    exit 1
fi

mkdir -p "$OUT_DIR"
find "$OUT_DIR" -maxdepth 1 -name '*.pb.swift' -type f -delete

# Paths are passed relative to PROTO_DIR so the `// Source:` headers are stable.
(
    cd "$PROTO_DIR"
    "$PROTOC" \
        --plugin=protoc-gen-swift="$PLUGIN" \
        --proto_path="$PROTO_DIR" \
        --proto_path="$PROTOC_INCLUDE" \
        --swift_opt=Visibility=Package \
        --swift_opt=UseAccessLevelOnImports=true \
        --swift_opt=FileNaming=PathToUnderscores \
        --swift_out="$OUT_DIR" \
        "${PROTO_FILES[@]}"
)

log "generated ${#PROTO_FILES[@]} file(s) into $OUT_DIR"
