# Sourced by the bench scripts. Builds, in release mode:
#   - hangard as it is deployed (scripts/lib/build-hangard.sh; the binary scripts/run.sh starts), into $hangard,
#     unless bench_only=1;
#   - the benchmark program, hangar-bench, from its own package (Benchmarks/, which depends on this one by path),
#     into $bench.
# Creates bench-results/ (git-ignored) and prints which source is measured.

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [ "${bench_only:-0}" != 1 ]; then
    hangard="$(scripts/lib/build-hangard.sh release)"
fi
# SwiftPM does not notice source files added to a path dependency (this package, seen from Benchmarks/) when it
# decides whether to re-plan the bench's build, and then fails on a stale file list: drop the plan (the objects
# are kept, so nothing is rebuilt that did not change).
rm -f Benchmarks/.build/release.yaml
swift build -c release --package-path Benchmarks --product hangar-bench
bench="$(swift build -c release --package-path Benchmarks --show-bin-path)/hangar-bench"

mkdir -p bench-results
if git rev-parse --git-dir > /dev/null 2>&1; then
    echo "source: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift || echo ' + uncommitted changes')" >&2
fi
