"""Summarize a py-spy raw profile (``--format raw``): the functions with the most samples,
inclusive and on top of the stack. Prints a table; the profile file stays as it was.

    python bench/profile_summary.py /tmp/prof/boltorezka.txt --top 30
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarize(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return total, inclusive, own


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    total, inclusive, own = summarize(args.profile)
    print(f"{total} samples in {args.profile}")
    for title, counter in (("inclusive", inclusive), ("own", own)):
        print(f"\n{title:>9}  function")
        for frame, samples in counter.most_common(args.top):
            print(f"{100 * samples / max(total, 1):8.1f}%  {frame[:130]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
