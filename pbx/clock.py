"""The one clock of the server: monotonic time for timers, wall time for records and calendars.

Adapters read it once per event (a datagram, a timer firing) and pass the ``Instant`` down; the
cores never read a clock. Tests inject a ``FakeClock`` and move it forward instead of sleeping.

Pure: the values and the fake live here; the real clock, which reads the system, is the adapter
``pbx.system_clock.SystemClock``. Monotonic time is the event loop's (``loop.time()``) while one
runs, so that deadlines computed from it can be handed to ``loop.call_at`` unchanged; wall time
is POSIX seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple, Protocol


class Instant(NamedTuple):
    """One reading of the clock: ``monotonic`` for deadlines, ``wall`` for what is stored.

    A named tuple: read on every datagram and timer, it is made without the per-field
    ``object.__setattr__`` of a frozen dataclass."""

    monotonic: float
    wall: float

    @property
    def utc(self) -> datetime:
        """The wall time as an aware UTC datetime (what the routing core's calendar takes)."""
        return datetime.fromtimestamp(self.wall, UTC)


class Clock(Protocol):
    """Where adapters get the time from."""

    def now(self) -> Instant: ...

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class FakeClock:
    """A clock that moves only when told (``advance``), for tests above the cores."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._monotonic = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall

    def now(self) -> Instant:
        return Instant(self._monotonic, self._wall)

    def advance(self, seconds: float) -> None:
        """Move both readings forward by ``seconds``."""
        self._monotonic += seconds
        self._wall += seconds
