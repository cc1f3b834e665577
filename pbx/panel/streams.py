"""The open status event streams (``pbx.panel.live``): counted per account, ended together.

Kept apart from ``live`` so ``PanelDeps`` can hold one without importing the routes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

MAX_STREAMS_PER_ACCOUNT = 3  # tabs of one account following the status at once
MAX_STREAMS = 100  # all accounts together


class StatusStreams:
    """The open status streams: counted per account, all ended when the panel closes."""

    def __init__(
        self,
        per_account: int = MAX_STREAMS_PER_ACCOUNT,
        total: int = MAX_STREAMS,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.per_account = per_account
        self.total = total
        self._sleep = sleep
        self._by_account: Counter[int] = Counter()
        self._closing: asyncio.Event | None = None
        self.closed = False

    @property
    def active(self) -> int:
        return sum(self._by_account.values())

    def acquire(self, account_id: int) -> bool:
        """Take a slot for one stream of ``account_id``; False when a cap is reached."""
        if self.closed or self._by_account[account_id] >= self.per_account:
            return False
        if self.active >= self.total:
            return False
        self._by_account[account_id] += 1
        return True

    def release(self, account_id: int) -> None:
        self._by_account[account_id] -= 1
        if self._by_account[account_id] <= 0:
            del self._by_account[account_id]

    async def pause(self, seconds: float) -> None:
        """Wait one interval, or less if the panel is closing."""
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        if self._closing is None:
            self._closing = asyncio.Event()
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def close(self) -> None:
        """End every stream at its next step (the panel is shutting down); refuse new ones."""
        self.closed = True
        if self._closing is not None:
            self._closing.set()
