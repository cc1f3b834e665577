"""The commit a benchmark compares against: a checkout of it, for the length of a run.

A benchmark's ``--before REV`` starts a second server from ``checkout(REV)`` and measures it
next to this one in the same run (the same machine, the same minutes). The checkout is a
detached git worktree in a temporary folder, removed when the run ends; the server imports it
first (``PYTHONPATH``) and runs with this project's virtual environment, so REV must need no
dependency this one lacks.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def describe(rev: str) -> str:
    """``abc1234 subject`` of a commit, for the report."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %s", rev],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A worktree of ``rev`` (a commit, tag or branch of this repository)."""
    with tempfile.TemporaryDirectory(prefix="pbx-before-") as tmp:
        path = Path(tmp) / "src"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(path), rev],
            check=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                check=False,
            )
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)
