"""The BYEs a graceful shutdown waits for (pure; the engine owns the asyncio event).

A BYE counts as done at its final answer, not when its client transaction ends: over UDP a
non-INVITE transaction lingers in Completed for timer K (T4, 5 s) after its 200, so waiting for
the transaction made every SIGTERM with answered calls take ``drain_seconds`` + 5 s (issue 16).
A BYE that is never answered is done when its transaction times out or fails.
"""

from __future__ import annotations

from collections.abc import Callable

from pbx.sip.transaction import ResponseReceived, TransactionTerminated, TxEvent


class ByeCounter:
    """How many BYEs are still waiting for their final answer."""

    def __init__(self) -> None:
        self.pending = 0

    def track(self, none_left: Callable[[], None]) -> Callable[[TxEvent], None]:
        """Count one more BYE; the returned callback takes its transaction's events and calls
        ``none_left`` when it was the last one waiting."""
        self.pending += 1
        done = False

        def on_event(event: TxEvent) -> None:
            nonlocal done
            final = isinstance(event, ResponseReceived) and event.response.status >= 200
            if done or not (final or isinstance(event, TransactionTerminated)):
                return
            done = True
            self.pending -= 1
            if self.pending == 0:
                none_left()

        return on_event
