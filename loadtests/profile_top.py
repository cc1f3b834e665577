"""The top of a py-spy profile: where the samples are, by function.

    python -m loadtests.profile_top FILE [--top 30]

FILE is py-spy's raw output (``py-spy record --format raw``): one line per distinct stack,
``frame;frame;...;frame count``, outermost first. Prints two tables: functions by the share of
samples in which they are the innermost frame (their own time), and by the share in which they
appear anywhere (with what they call; a recursive function counts once per sample).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``: one function however many of its lines."""
    frame = _FRAME_LINE.sub(")", frame)
    return frame.replace(str(Path.cwd()) + "/", "")


def tally(raw: str) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        found = _LINE.match(line.strip())
        if found is None:
            continue
        count = int(found["count"])
        frames = [function(f) for f in found["stack"].split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            anywhere[name] += count
    return own, anywhere, total


def summary(raw: str, top: int = 30) -> str:
    own, anywhere, total = tally(raw)
    if not total:
        return "no samples"
    lines = [f"{total} samples; own time (innermost frame):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
    lines.append("with what they call:")
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in anywhere.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    print(summary(args.file.read_text(), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
