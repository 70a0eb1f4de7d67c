#!/usr/bin/env bash
#
# check-locks.sh — fail if Hangar's code takes Synchronization's `Mutex` directly instead of `Locked`
# (Sources/HangarSync). `Locked` is that `Mutex` in every build but ThreadSanitizer's (scripts/tsan.sh), where it is a
# lock ThreadSanitizer sees; state under a bare `Mutex` would make every access to it a false report there.
#
# Usage:
#   scripts/check-locks.sh
#
# Exits 0 when no Swift file under Sources/ or Tests/ (Sources/HangarSync apart) names `Mutex(` or `Mutex<` outside
# a comment, 1 with the offending lines otherwise. Run by scripts/test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

found=$(grep -rnE '\bMutex *[(<]' --include='*.swift' Sources Tests Fuzz 2>/dev/null \
    | grep -v '^Sources/HangarSync/' \
    | grep -vE '^[^:]+:[0-9]+: *//' || true)
if [ -n "$found" ]; then
    echo "check-locks: use Locked (HangarSync) instead of Synchronization's Mutex:" >&2
    echo "$found" >&2
    exit 1
fi
echo "check-locks: every lock is Locked" >&2
