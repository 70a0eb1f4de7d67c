# Sourced by the bench scripts: builds hangard and hangar-bench in release mode (or only the products listed in
# $bench_products, e.g. bench_products="hangar-bench"), sets $bin to their directory, creates bench-results/
# (git-ignored) and prints which source is measured.

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# One product per invocation: `swift build` keeps only the last of several --product flags. Linked with
# --static-swift-stdlib, as the container image and the systemd installer build it, so memory is measured as deployed.
source scripts/lib/require-libsystemd.sh
for product in ${bench_products:-hangard hangar-bench}; do
    swift build -c release --static-swift-stdlib --product "$product"
done
bin="$(swift build -c release --show-bin-path)"

mkdir -p bench-results
if git rev-parse --git-dir > /dev/null 2>&1; then
    echo "source: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift || echo ' + uncommitted changes')" >&2
fi
