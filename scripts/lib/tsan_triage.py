#!/usr/bin/env python3
"""Groups ThreadSanitizer reports (files written with TSAN_OPTIONS log_path) by what they name: the kind of report
and, for each stack in it (the access, the previous access, ...), its first frame in Hangar's own code
(Sources/ or Tests/), or its first frame when none is Hangar's. Prints one line per group, most frequent first, and
the full text of the first report of each group with --full. Used by scripts/tsan.sh."""
import collections
import re
import sys


def stacks(report):
    """The report's stacks, each as the list of its frames' (function, location)."""
    result, current = [], None
    for line in report.splitlines():
        if re.match(r"^  \S", line):
            current = []
            result.append((line.strip(), current))
        elif current is not None:
            frame = re.match(r"^\s+#\d+ (\S+) (\S+)", line)
            if frame:
                current.append(frame.groups())
    return result


def where(frames):
    for function, location in frames:
        match = re.search(r"/((?:Sources|Tests)/[^\s]+)", location)
        if match and "/checkouts/" not in location and "/.build" not in location:
            return match.group(1)
    return (frames[0][1].split("/checkouts/")[-1] if "/checkouts/" in frames[0][1] else frames[0][0][:80]) if frames else "?"


def main():
    full = "--full" in sys.argv
    groups, first = collections.Counter(), {}
    for path in [a for a in sys.argv[1:] if a != "--full"]:
        text = open(path, errors="replace").read()
        for report in text.split("==================\n"):
            kind = re.search(r"(?:WARNING|ERROR): ThreadSanitizer: ([^(\n]+)", report)
            if not kind:
                continue
            named = [where(frames) for title, frames in stacks(report)
                     if frames and not title.startswith(("Thread ", "Location", "Mutex"))]
            key = kind.group(1).strip() + ": " + "  <->  ".join(named[:2])
            groups[key] += 1
            first.setdefault(key, report)
    for key, count in groups.most_common():
        print(f"{count:5d}  {key}")
        if full:
            print(first[key])


if __name__ == "__main__":
    main()
