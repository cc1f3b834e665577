"""The real clock (adapter): the running event loop's time and the system's wall time."""

from __future__ import annotations

import asyncio
import time

from pbx.clock import Instant


class SystemClock:
    """The real clock: the running loop's time (``time.monotonic`` outside a loop) and
    ``time.time``."""

    def monotonic(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def now(self) -> Instant:
        try:
            monotonic = asyncio.get_running_loop().time()
        except RuntimeError:
            monotonic = time.monotonic()
        # tuple.__new__ directly: the named tuple's own __new__ is a Python function.
        return tuple.__new__(Instant, (monotonic, time.time()))
