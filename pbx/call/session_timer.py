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

Toward the callee's leg (issue 16, second part; section 7): our INVITE offers ``Supported:
timer``, ``Session-Expires`` (the caller's interval, else ``[sip] session_expires``) with
``refresher=uac`` (us) and our ``Min-SE``. The callee's 2xx decides: with ``Session-Expires`` its
interval and refresher (``uas``: the callee refreshes toward us); without, the callee does not
know session timers and we refresh on our own (section 7.2) -- but only when the caller's leg has
a session timer too: a call nobody asked timers for keeps none (no re-INVITE every 15 minutes to
phones that never asked for one). Our refresh is an UPDATE when the
callee's ``Allow`` names UPDATE, else a re-INVITE repeating the last SDP we offered it (the same
session version: nothing changes, RFC 3264 section 8). Every 2xx to a re-INVITE or UPDATE that
crosses the call refreshes both legs; a refresh of ours that fails, or the callee's that does not
come, ends both legs with ``session_timer`` like the caller's. A callee that answers our INVITE
with 422 (its ``Min-SE`` is above the interval we offered) gets the INVITE once more, offering its
``Min-SE`` as both interval and ``Min-SE`` (section 7.4); that leg's timer then starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from pbx.sip.message import SipRequest, SipResponse

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
    ours: Refresher = "uas"  # our role on this leg: the caller's leg "uas", the callee's "uac"
    method: str = "UPDATE"  # how we refresh ("INVITE" toward a callee without UPDATE)
    stated: bool = True  # the party knows session timers: our refresh carries Session-Expires
    offer: bytes = b""  # the last SDP we offered the callee (a re-INVITE refresh repeats it)

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
        if self.refresher != self.ours or self.refreshing:
            return None
        return self.refreshed_at + self.interval / 2

    def header(self) -> str:
        return f"{self.interval};refresher={self.refresher}"


def offer_headers(interval: int, min_se: int) -> tuple[tuple[str, str], ...]:
    """What our INVITE to a callee says (section 7.1): we refresh unless it takes it over."""
    return (
        ("Supported", "timer"),
        ("Session-Expires", f"{interval};refresher=uac"),
        ("Min-SE", str(min_se)),
    )


# The headers ``offer_headers`` writes, as ``OutgoingInvite.retried`` names them.
OFFER_HEADER_NAMES = ("supported", "session-expires", "min-se")
# The longest interval a callee's 422 may ask of us: a refresh a day.
MAX_RETRY_INTERVAL = 86_400


def retry_interval(response: SipResponse, offered: int) -> int | None:
    """After a callee's 422 to our INVITE (section 7.4): the interval to ask again with, the
    ``Min-SE`` it names. None when that is missing, unreadable, not above what we ``offered``
    (asking again would get the same 422) or above ``MAX_RETRY_INTERVAL``."""
    value = response.header("Min-SE")
    if value is None:
        return None
    delta = value.partition(";")[0].strip()
    if not delta.isdigit() or len(delta) > 10:
        return None
    interval = int(delta)
    if not offered < interval <= MAX_RETRY_INTERVAL:
        return None
    return interval


def _tokens(value: str | None) -> set[str]:
    return {t.strip().upper() for t in (value or "").split(",") if t.strip()}


def accepted(response: SipResponse) -> bool:
    """Whether the callee's 2xx took up our session timer (it states ``Session-Expires``)."""
    return (response.header("Session-Expires") or response.header("x")) is not None


def toward_callee(response: SipResponse, offered: int, now: float, offer: bytes) -> SessionTimer:
    """The callee leg's timer from its 2xx to our INVITE (section 7.2)."""
    method = "UPDATE" if "UPDATE" in _tokens(response.header("Allow")) else "INVITE"
    value = response.header("Session-Expires") or response.header("x")
    interval, refresher, stated = offered, "uac", False
    if value is not None:
        delta, _, params = value.partition(";")
        if delta.strip().isdigit():
            interval, stated = max(1, int(delta.strip())), True
        if "refresher=uas" in params.replace(" ", "").lower():
            refresher = "uas"
    return SessionTimer(
        interval,
        cast(Refresher, refresher),
        now,
        ours="uac",
        method=method,
        stated=stated,
        offer=offer,
    )
