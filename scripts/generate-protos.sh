#!/usr/bin/env bash
#
# generate-protos.sh — regenerate the committed Swift protobuf code of both packages.
#
# Usage:
#   scripts/generate-protos.sh [OUTPUT_ROOT]
#
#   OUTPUT_ROOT defaults to the repository root. Two directories are written under it:
#     Sources/HangarGRPC/Generated              the daemon's gRPC front-end: every .proto under
#                                               Sources/HangarGRPC/Protos, `package` visibility
#     Benchmarks/Sources/HangarBench/Generated  the benchmark program (its own package, Benchmarks/): the Dapr
#                                               messages it sends (dapr/proto/{common,runtime}/v1 from the same
#                                               Sources/HangarGRPC/Protos) and its echo service
#                                               (Benchmarks/Protos), internal visibility
#   scripts/check-protos.sh passes a temporary directory to verify that the committed code is current.
#
# Runnable from any working directory. What it does:
#   1. Installs `protoc` (Debian package protobuf-compiler) with apt-get if it is missing.
#   2. Builds `protoc-gen-swift` from swift-protobuf's source (scripts/lib/swift-protobuf-source.sh: the pinned
#      version, which must match the runtime Package.swift resolves) into .build-protoc/ (git-ignored), unless a
#      binary of that exact version is already there.
#   3. Runs protoc and writes one <path_with_underscores>.pb.swift per proto file into each output directory,
#      removing the *.pb.swift already there first (a deleted .proto leaves no stale code). The daemon's code uses
#      `package` visibility and `package import` (UseAccessLevelOnImports=true — required because the targets
#      enable the InternalImportsByDefault upcoming feature, under which a plain `import` is internal).
#
# Well-known types (google/protobuf/any.proto, empty.proto, struct.proto) are read from swift-protobuf's own source
# (scripts/lib/swift-protobuf-source.sh --include), not from protoc's packaging, and are not generated:
# swift-protobuf maps them to its built-in types (Google_Protobuf_Any, Google_Protobuf_Empty, ...).
#
# Only messages and enums are generated; `service` blocks in the protos are documentation (HangarGRPC implements
# its own gRPC server), so no grpc-swift plugin is involved.
#
# Environment overrides:
#   PROTOC                 protoc binary to use (default: `protoc` from PATH)
#   PROTOC_INCLUDE         directory holding google/protobuf/*.proto (default: from swift-protobuf's source)

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DAEMON_PROTOS="$ROOT/Sources/HangarGRPC/Protos"
BENCH_PROTOS="$ROOT/Benchmarks/Protos"
OUT_ROOT="${1:-$ROOT}"

log() { echo "generate-protos: $*" >&2; }

# --- 1. protoc -------------------------------------------------------------------------
PROTOC="${PROTOC:-protoc}"
if ! command -v "$PROTOC" >/dev/null 2>&1; then
    log "protoc not found; installing protobuf-compiler with apt-get"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends protobuf-compiler
    PROTOC="protoc"
fi

# --- 2. protoc-gen-swift and the well-known types ---------------------------------------
SWIFT_PROTOBUF_VERSION="$("$ROOT/scripts/lib/swift-protobuf-source.sh" --version)"
PLUGIN_SRC="$("$ROOT/scripts/lib/swift-protobuf-source.sh")"
PROTOC_INCLUDE="${PROTOC_INCLUDE:-$("$ROOT/scripts/lib/swift-protobuf-source.sh" --include)}"
PLUGIN_SCRATCH="$ROOT/.build-protoc/build"
PLUGIN="$PLUGIN_SCRATCH/release/protoc-gen-swift"

plugin_is_current() {
    [ -x "$PLUGIN" ] && "$PLUGIN" --version 2>/dev/null | grep -qx "protoc-gen-swift $SWIFT_PROTOBUF_VERSION"
}

if ! plugin_is_current; then
    log "building protoc-gen-swift $SWIFT_PROTOBUF_VERSION into $PLUGIN_SCRATCH (takes about a minute)"
    swift build -c release --product protoc-gen-swift \
        --package-path "$PLUGIN_SRC" --scratch-path "$PLUGIN_SCRATCH" >&2
    if ! plugin_is_current; then
        log "built $PLUGIN but it does not report version $SWIFT_PROTOBUF_VERSION"
        exit 1
    fi
fi

# --- 3. generate -----------------------------------------------------------------------
# generate VISIBILITY OUT_DIR PROTO_DIR... -- FILE...
# FILEs are paths under the PROTO_DIRs (protoc resolves them there), so the `// Source:` headers are stable.
generate() {
    local visibility="$1" out="$2"
    shift 2
    local paths=()
    while [ "$1" != "--" ]; do
        paths+=("--proto_path=$1")
        shift
    done
    shift
    local first="${paths[0]#--proto_path=}"
    local options=(--swift_opt=Visibility="$visibility" --swift_opt=FileNaming=PathToUnderscores)
    [ "$visibility" = "Package" ] && options+=(--swift_opt=UseAccessLevelOnImports=true)
    mkdir -p "$out"
    find "$out" -maxdepth 1 -name '*.pb.swift' -type f -delete
    (
        cd "$first"
        "$PROTOC" --plugin=protoc-gen-swift="$PLUGIN" "${paths[@]}" --proto_path="$PROTOC_INCLUDE" \
            "${options[@]}" --swift_out="$out" "$@"
    )
    log "generated $# file(s) into $out"
}

DAEMON_FILES=()
while IFS= read -r -d '' f; do
    DAEMON_FILES+=("${f#"$DAEMON_PROTOS"/}")
done < <(find "$DAEMON_PROTOS" -name '*.proto' -type f -print0 | LC_ALL=C sort -z)
if [ "${#DAEMON_FILES[@]}" -eq 0 ]; then
    log "no .proto files under $DAEMON_PROTOS"
    exit 1
fi

generate Package "$OUT_ROOT/Sources/HangarGRPC/Generated" "$DAEMON_PROTOS" -- "${DAEMON_FILES[@]}"
generate Internal "$OUT_ROOT/Benchmarks/Sources/HangarBench/Generated" "$BENCH_PROTOS" "$DAEMON_PROTOS" -- \
    hangar/bench/v1/echo.proto dapr/proto/common/v1/common.proto dapr/proto/runtime/v1/dapr.proto
