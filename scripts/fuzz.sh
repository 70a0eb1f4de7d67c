#!/usr/bin/env bash
#
# fuzz.sh — coverage-guided fuzzing (libFuzzer, with AddressSanitizer) of the code that reads what peers send.
#
# Usage:
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER_OPTION...]   fuzz one target, e.g. `scripts/fuzz.sh http2 60`
#   scripts/fuzz.sh all SECONDS                            every target, SECONDS each (what scripts/test.sh runs)
#   scripts/fuzz.sh replay [TARGET [FILE...]]              run every committed input (or FILEs) once, no fuzzing
#   scripts/fuzz.sh seeds                                  rewrite Fuzz/Corpus (from HangarFuzz/FuzzSeeds.swift)
#   scripts/fuzz.sh list                                   the targets
#
# Targets (Fuzz/Sources/HangarFuzz/FuzzTarget.swift): http2 (the gRPC server's HTTP/2 connection, bytes after the
# preface), hpack (a request header block through NIOHPACK and the gRPC server), grpc-deframer, http1 (the HTTP/1.1
# server, router and Dapr routes), state-json (state route bodies), tenant-yaml, resource-yaml, cloudevent, resp.
#
# Builds `hangar-fuzz` first: a debug build with `-sanitize=fuzzer,address` in .build-fuzz (HANGAR_FUZZ=1 adds the
# target to Package.swift; a first build takes about 10 minutes on 2 cores). libFuzzer comes with the Swift
# toolchain (lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a), checked below: no Debian package is needed.
# Each run starts from the committed seeds (Fuzz/Corpus/TARGET) and the inputs earlier runs found
# (.build-fuzz/corpus/TARGET, not committed); a crash, a failed invariant or an input slower than 10 s is
# saved as .build-fuzz/crashes/TARGET-* and makes the script exit non-zero. Reproduce one with
# `scripts/fuzz.sh replay TARGET FILE...` (HANGAR_FUZZ_VERBOSE=1 also prints what the server wrote); once fixed,
# commit the file to Fuzz/Corpus/TARGET and add a regression test to the Swift test suite. Ends with one line per
# target:
#   fuzz http2: 41234 runs (1370/s), cov 5123, 37 new inputs, no crash (30 s)

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGETS=(http2 hpack grpc-deframer http1 state-json tenant-yaml resource-yaml cloudevent resp)
SCRATCH="$ROOT/.build-fuzz"
BIN="$SCRATCH/debug/hangar-fuzz"

log() { echo "fuzz.sh: $*" >&2; }
usage() { sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
MODE="$1"
shift

if [ "$MODE" = "list" ]; then
    printf '%s\n' "${TARGETS[@]}"
    exit 0
fi

if [ -z "$(command -v swift || true)" ] && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null || { log "swift is not installed"; exit 1; }
# libFuzzer's runtime ships with the toolchain's clang; without it `-sanitize=fuzzer` cannot link.
TOOLCHAIN="$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")"
if ! compgen -G "$TOOLCHAIN/lib/clang/*/lib/*/libclang_rt.fuzzer*.a" >/dev/null \
    && ! compgen -G "$TOOLCHAIN/lib/swift/clang/lib/*/libclang_rt.fuzzer*.a" >/dev/null; then
    log "the Swift toolchain at $TOOLCHAIN has no libFuzzer runtime (libclang_rt.fuzzer); cannot fuzz"
    exit 1
fi

build() {
    local started=$SECONDS
    log "building hangar-fuzz (debug, -sanitize=fuzzer,address, in .build-fuzz)"
    HANGAR_FUZZ=1 swift build --product hangar-fuzz --scratch-path "$SCRATCH" -Xswiftc -sanitize=fuzzer,address
    log "built in $((SECONDS - started)) s"
}

# The fuzzer's own handlers report a crash and save its input; Swift's backtracer would take the signal first.
export SWIFT_BACKTRACE=enable=no
# No leak checking: Swift keeps tag bits in the spare bits of references held in enums (Data's storage, NIO's
# thread pool state), so LeakSanitizer cannot see such a pointer and reports what the shared runtime still holds as
# leaked. AddressSanitizer's other checks stay on.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"

case "$MODE" in
seeds)
    build
    HANGAR_FUZZ_WRITE_SEEDS="$ROOT/Fuzz/Corpus" "$BIN"
    log "wrote Fuzz/Corpus"
    exit 0
    ;;
replay)
    build
    if [ $# -ge 2 ]; then
        target="$1"
        shift
        HANGAR_FUZZ_TARGET="$target" exec "$BIN" "$@"
    fi
    selected=("${@:-${TARGETS[@]}}")
    failed=0
    for target in "${selected[@]}"; do
        files=("$ROOT/Fuzz/Corpus/$target"/*)
        if HANGAR_FUZZ_TARGET="$target" "$BIN" "${files[@]}" >"$SCRATCH/replay-$target.log" 2>&1; then
            echo "replay $target: ${#files[@]} inputs, no crash"
        else
            echo "replay $target: CRASH (log: .build-fuzz/replay-$target.log)"
            failed=1
        fi
    done
    exit "$failed"
    ;;
esac

[ $# -ge 1 ] || usage
SECONDS_EACH="$1"
shift
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || usage
if [ "$MODE" = "all" ]; then
    selected=("${TARGETS[@]}")
else
    [[ " ${TARGETS[*]} " == *" $MODE "* ]] || { log "unknown target '$MODE' (scripts/fuzz.sh list)"; exit 2; }
    selected=("$MODE")
fi

build
mkdir -p "$SCRATCH/crashes"
SUMMARY=()
failed=0
for target in "${selected[@]}"; do
    work="$SCRATCH/corpus/$target"
    mkdir -p "$work"
    logfile="$SCRATCH/fuzz-$target.log"
    started=$SECONDS
    # New inputs go to the first directory (the working corpus); the committed seeds are only read.
    status=0
    HANGAR_FUZZ_TARGET="$target" "$BIN" -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$SCRATCH/crashes/$target-" "$@" \
        "$work" "$ROOT/Fuzz/Corpus/$target" >"$logfile" 2>&1 || status=$?
    runs="$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$logfile" | tail -1)"
    rate="$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$logfile" | tail -1)"
    added="$(sed -nE 's/^stat::new_units_added: *([0-9]+).*/\1/p' "$logfile" | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+' "$logfile" | tail -1 | cut -d' ' -f2)"
    line="fuzz $target: ${runs:-?} runs (${rate:-?}/s), cov ${cov:-?}, ${added:-?} new inputs"
    if [ "$status" -eq 0 ]; then
        line="$line, no crash ($((SECONDS - started)) s)"
    else
        artifact="$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$logfile" | tail -1)"
        line="$line, CRASH (exit $status; input ${artifact:-not saved}; log .build-fuzz/fuzz-$target.log)"
        grep -m1 -E 'Fatal error|Precondition failed|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' \
            "$logfile" >&2 || true
        failed=1
    fi
    echo "$line"
    SUMMARY+=("$line")
done

if [ "${#selected[@]}" -gt 1 ]; then
    echo
    printf '%s\n' "${SUMMARY[@]}"
fi
exit "$failed"
