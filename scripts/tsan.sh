#!/usr/bin/env bash
#
# tsan.sh — the Swift test suite under ThreadSanitizer (issue 16, part 2). Not run by CI: on 2 cores the
# instrumented build takes about 20 minutes from scratch (3–4 after a change to Hangar's code) and the run about
# 4.5 minutes, which CI's time limit cannot spare on every run.
#
# Usage:
#   scripts/tsan.sh [--build-only] [swift test options, e.g. --filter Redis]
#
# Builds the package and its tests with `--sanitize=thread` in .build-tsan (kept apart from .build, so the
# ordinary debug build is not invalidated) and HANGAR_TSAN=1, then runs `swift test --no-parallel` on it.
# HANGAR_TSAN=1 makes Hangar's `Locked` (Sources/HangarSync) a pthread mutex: Synchronization's `Mutex`, which it
# is in every other build, locks inside an uninstrumented library on Linux, and ThreadSanitizer would report every
# access it protects as a race. The tests run one at a time because ThreadSanitizer slows every test several times
# over, and the suites' deadlines are met more reliably that way; the tests' own threads (event loops, the thread
# pool, tasks) still race each other inside each test, which is what is checked.
# Needs redis-server and PostgreSQL like scripts/test.sh (run that once first on a fresh machine).
#
# Reports go to .build-tsan/reports/tsan.<pid> (TSAN_OPTIONS log_path), one file per process that had a report;
# the script prints them grouped by their first frames in Hangar's code (scripts/lib/tsan_triage.py; --full there
# shows one whole report per group) and exits 1 if there was any, or if a test
# failed. Known false positives are listed, with the reason each is one, in scripts/tsan-suppressions.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

build_only=0
passthrough=()
for argument in "$@"; do
    case "$argument" in
        --build-only) build_only=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) passthrough+=("$argument") ;;
    esac
done

scratch="$ROOT/.build-tsan"
reports="$scratch/reports"
started=$(date +%s)
echo "tsan: building with --sanitize=thread in $scratch" >&2
HANGAR_TSAN=1 swift build --build-tests --sanitize=thread --scratch-path "$scratch"
echo "tsan: built in $(( $(date +%s) - started )) s" >&2
[ "$build_only" -eq 1 ] && exit 0

rm -rf "$reports"
mkdir -p "$reports"
run_started=$(date +%s)
status=0
TSAN_OPTIONS="log_path=$reports/tsan halt_on_error=0 second_deadlock_stack=1 suppressions=$ROOT/scripts/tsan-suppressions.txt" \
    HANGAR_TSAN=1 swift test --skip-build --sanitize=thread --scratch-path "$scratch" --no-parallel ${passthrough[@]+"${passthrough[@]}"} \
    || status=$?
echo "tsan: tests ran in $(( $(date +%s) - run_started )) s (exit $status)" >&2

shopt -s nullglob
files=("$reports"/tsan.*)
if [ ${#files[@]} -eq 0 ]; then
    echo "tsan: no ThreadSanitizer report" >&2
    exit "$status"
fi
echo "tsan: ${#files[@]} process(es) reported; the reports grouped by where they are (full text in $reports):" >&2
python3 scripts/lib/tsan_triage.py "${files[@]}" >&2
exit 1
