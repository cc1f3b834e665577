"""Session timers (RFC 4028) on the caller's leg: pure, monotonic time passed in.

What the call core does with them (issue 16, first part):

- an INVITE whose ``Session-Expires`` is below our ``MIN_SE`` gets 422 with ``Min-SE``
  (section 9);
- an INVITE with ``Session-Expires`` (at least ``MIN_SE``) makes a session timer of that many
  seconds once the call is answered; the 2xx to the caller states it (``Session-Expires`` with
  the refresher, ``Require: timer`` when the caller said ``Supported: timer``), and the refresher
  is the caller unless it asked otherwise (section 9: ``refresher=uas`` is honoured only as the
  caller's request; we then refresh toward the caller with UPDATE, section 10);
- every 2xx to a re-INVITE or UPDATE that crosses the call restarts the interval (section 10);
- without a refresh, both legs get BYE at the expiry minus a third of the interval or 32 s,
  whichever is less (section 10), and the record says ``session_timer``; so does a refresh of
  ours that fails.

The B legs carry no session timer of ours: the caller's refreshes are relayed to the callee.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pbx.sip.message import SipRequest

MIN_SE = 90  # RFC 4028 section 4: the minimum, and our Min-SE
Refresher = Literal["uac", "uas"]


@dataclass(frozen=True, slots=True)
class TooSmall:
    """Answer 422 with ``Min-SE: min_se``."""

    min_se: int


@dataclass(frozen=True, slots=True)
class Requested:
    """The caller asked for a session timer of ``interval`` seconds."""

    interval: int
    refresher: Refresher
    supported: bool  # the caller said ``Supported: timer``


def requested(
    invite: SipRequest, min_se: int = MIN_SE, most: int | None = None
) -> Requested | TooSmall | None:
    """What the caller's INVITE asks (None: no session timer). ``min_se`` is ours (``[sip]
    min_se``); ``most`` (``[sip] session_expires``) lowers a longer interval, never below the
    caller's own ``Min-SE`` (section 9)."""
    value = invite.header("Session-Expires") or invite.header("x")
    if value is None:
        return None
    delta, _, params = value.partition(";")
    try:
        interval = int(delta.strip())
    except ValueError:
        return None
    if interval < min_se:
        return TooSmall(min_se)
    if most is not None and interval > most:
        try:
            theirs = int((invite.header("Min-SE") or "0").partition(";")[0].strip())
        except ValueError:
            theirs = 0
        interval = max(most, theirs, min_se)
    refresher: Refresher = "uas" if "refresher=uas" in params.replace(" ", "").lower() else "uac"
    tokens = {t.strip().lower() for t in (invite.header("Supported") or "").split(",")}
    return Requested(interval, refresher, "timer" in tokens)


@dataclass(slots=True)
class SessionTimer:
    """The session timer of an answered call."""

    interval: int
    refresher: Refresher
    refreshed_at: float
    refreshing: bool = False  # our UPDATE is on its way (we are the refresher)

    def refreshed(self, now: float) -> None:
        self.refreshed_at = now
        self.refreshing = False

    @property
    def expires_at(self) -> float:
        """When both legs get BYE without a refresh (section 10)."""
        return self.refreshed_at + self.interval - min(32.0, self.interval / 3)

    @property
    def refresh_at(self) -> float | None:
        """When we send our refresh (half the interval), if we are the refresher."""
        if self.refresher != "uas" or self.refreshing:
            return None
        return self.refreshed_at + self.interval / 2

    def header(self) -> str:
        return f"{self.interval};refresher={self.refresher}"
