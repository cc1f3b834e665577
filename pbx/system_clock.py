"""The real clock (adapter): the running event loop's time and the system's wall time."""

from __future__ import annotations

import asyncio
import time

from pbx.clock import Instant


class SystemClock:
    """The real clock: the running loop's time (``time.monotonic`` outside a loop) and
    ``time.time``.

    The server reads it a dozen times a call; finding the running loop each time cost twice
    what reading it does (issue 21), so the server binds its clock to its loop once
    (``bind``), for as long as that loop runs.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read ``loop``'s time from now on (while it runs; another loop's, once it stops)."""
        self._loop = loop

    def monotonic(self) -> float:
        loop = self._loop
        if loop is not None:
            if loop.is_running():
                return loop.time()
            self._loop = None
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def now(self) -> Instant:
        # tuple.__new__ directly: the named tuple's own __new__ is a Python function.
        return tuple.__new__(Instant, (self.monotonic(), time.time()))
