"""Abuse defences per source address: bans after failed authentications, and a rate limit.

Pure, time passed in (any clock in seconds, used consistently). DESIGN section 5 ``[security]``:

- ``ban_after_failures`` failed authentications from one source IP within ``ban_window_seconds``
  ban it for ``ban_seconds``: its requests are dropped without an answer;
- more than ``max_requests_per_second`` requests from one source are dropped (a token bucket:
  that many per second, with a burst of one second's worth);
- trunk addresses are never banned; they have their own, higher limit
  (``trunk_max_requests_per_second``) instead of none, so a spoofed or runaway trunk address
  cannot take the whole CPU (issue 17, item 6);
- the limit charges by cost, not by message: a message costs ``cost_of(size)`` tokens, one per
  started ``COST_UNIT_BYTES`` (at least one), so big messages pass at a lower rate (issue 17,
  items 2 and 3: bytes parsed and kept per source are bounded);
- a source that keeps hitting the limit (throttled in ``throttle_strikes`` report periods in a
  row, i.e. about a minute of continuous flooding) is escalated to a ban of ``ban_seconds``.

Memory is bounded: idle sources are forgotten (a full bucket and no failure inside the window
carry no information), and past ``max_sources`` the least recently seen source is forgotten first.

The guard emits events (``next_event``) for the adapter to log under their ``name``:
``source_banned``, ``source_released`` and ``source_throttled`` (once per throttling episode and
then at most every ``throttle_report_seconds``, with the count of dropped requests).
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from pbx.config.model import SecuritySettings
from pbx.immutable import immutable

_EPSILON = 1e-6
# One token per started this many bytes (a full-size Ethernet frame): every ordinary message
# costs one token, a 64 KB one costs 44.
COST_UNIT_BYTES = 1500


def cost_of(size: int) -> float:
    """The tokens a message of ``size`` bytes costs against the rate limit."""
    return float(max(1, -(-size // COST_UNIT_BYTES)))


def starts_work(data: bytes) -> bool:
    """Whether a message is charged against the rate limit (issue 16): a request that starts
    work. A response (to one of our requests, or a stray one), an ACK (it ends a transaction)
    and a keep-alive (CR, LF, SP, TAB or NUL only) are not, so a phone behind a busy NAT
    address never loses its next request to its own answers. Read from the first bytes only:
    nothing is parsed before the limit."""
    head = data.lstrip(b"\r\n \t\x00")
    return bool(head) and not head.startswith((b"SIP/", b"ACK "))


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    BANNED = "banned"  # drop silently
    THROTTLED = "throttled"  # drop silently


@immutable
class SourceBanned:
    name: ClassVar[str] = "source_banned"
    host: str
    failures: int
    until: float
    reason: str = "auth_failures"  # or "throttled" (kept hitting the rate limit)


@immutable
class SourceReleased:
    name: ClassVar[str] = "source_released"
    host: str


@immutable
class SourceThrottled:
    name: ClassVar[str] = "source_throttled"
    host: str
    dropped: int  # requests dropped since the previous report for this source
    limit: int  # requests per second


SecurityEvent = SourceBanned | SourceReleased | SourceThrottled


@dataclass(slots=True)
class _SourceState:
    tokens: float
    refreshed_at: float
    failures: deque[float] = field(default_factory=deque)
    banned_until: float | None = None
    dropped: int = 0  # throttled requests not yet reported
    reported_at: float | None = None  # last source_throttled event
    strikes: int = 0  # report periods in a row with throttling


class SourceGuard:
    """Failed-authentication bans and request-rate limits per source IP."""

    def __init__(
        self,
        settings: SecuritySettings,
        exempt: Iterable[str] = (),
        *,
        max_sources: int = 100_000,
        throttle_report_seconds: float = 10.0,
        throttle_strikes: int = 6,
    ) -> None:
        self.settings = settings
        self.exempt: frozenset[str] = frozenset(exempt)
        self.max_sources = max_sources
        self.throttle_report_seconds = throttle_report_seconds
        self.throttle_strikes = throttle_strikes
        # Trunk addresses: a bucket each, at their own rate; never banned, never forgotten.
        self._trunks: dict[str, _SourceState] = {}
        self._sources: OrderedDict[str, _SourceState] = OrderedDict()
        self._bans: list[tuple[float, str]] = []  # heap of (until, host); may hold stale entries
        self._events: deque[SecurityEvent] = deque()

    def update(self, settings: SecuritySettings, exempt: Iterable[str]) -> None:
        """Take new settings and trunk addresses (config reload). Running bans are kept."""
        self.settings = settings
        self.exempt = frozenset(exempt)
        self._trunks = {h: s for h, s in self._trunks.items() if h in self.exempt}
        for host in self.exempt & self._sources.keys():
            state = self._sources.pop(host)
            if state.banned_until is not None:
                self._events.append(SourceReleased(host))

    # -- per request ------------------------------------------------------------------------

    def admit(self, host: str, now: float, cost: float = 1.0) -> Verdict:
        """Whether to handle a message from ``host`` (call once per received message) that
        costs ``cost`` tokens (``cost_of`` its size)."""
        if host in self.exempt:
            state = self._trunks.get(host)
            if state is None:
                rate = float(self.settings.trunk_max_requests_per_second)
                state = self._trunks[host] = _SourceState(rate, now)
            return self._take(host, state, now, cost, self.settings.trunk_max_requests_per_second)
        self.handle_timer(now)
        state = self._state(host, now)
        if state.banned_until is not None:
            return Verdict.BANNED
        verdict = self._take(host, state, now, cost, self.settings.max_requests_per_second)
        if state.strikes >= self.throttle_strikes:
            # Flooding for a minute on end: not a phone retrying, an attack. Ban it.
            state.strikes = 0
            self._ban(host, state, now + self.settings.ban_seconds, 0, "throttled")
        return verdict

    def _take(self, host: str, state: _SourceState, now: float, cost: float, limit: int) -> Verdict:
        # A token bucket holding one second's worth; a message dearer than that (a 64 KB one
        # at a low limit) passes when the bucket is full, and leaves it in debt.
        rate = float(limit)
        state.tokens = min(rate, state.tokens + (now - state.refreshed_at) * rate)
        state.refreshed_at = now
        if state.tokens >= min(cost, rate) - _EPSILON:  # float time: 1.9999999 tokens
            state.tokens -= cost
            return Verdict.ALLOWED
        state.dropped += 1
        if state.reported_at is None or now - state.reported_at >= self.throttle_report_seconds:
            within = (
                state.reported_at is not None
                and now - state.reported_at < 2 * self.throttle_report_seconds
            )
            state.strikes = state.strikes + 1 if within else 1
            self._events.append(SourceThrottled(host, state.dropped, limit))
            state.dropped = 0
            state.reported_at = now
        return Verdict.THROTTLED

    def record_failure(self, host: str, now: float) -> bool:
        """Count a failed authentication from ``host``; True when this bans it."""
        if host in self.exempt:
            return False
        state = self._state(host, now)
        if state.banned_until is not None:
            return False
        window = self.settings.ban_window_seconds
        state.failures.append(now)
        while state.failures and now - state.failures[0] >= window:
            state.failures.popleft()
        # Only the last ban_after_failures instants matter.
        while len(state.failures) > self.settings.ban_after_failures:
            state.failures.popleft()
        if len(state.failures) < self.settings.ban_after_failures:
            return False
        self._ban(host, state, now + self.settings.ban_seconds, len(state.failures))
        return True

    def is_banned(self, host: str, now: float) -> bool:
        state = self._sources.get(host)
        return state is not None and state.banned_until is not None and state.banned_until > now

    # -- timers and events (the sans-IO verbs) ----------------------------------------------

    def get_timer(self) -> float | None:
        """When the next ban ends (``handle_timer`` is due then), or None."""
        while self._bans:
            until, host = self._bans[0]
            state = self._sources.get(host)
            if state is not None and state.banned_until == until:
                return until
            heapq.heappop(self._bans)  # stale: released early or re-banned
        return None

    def handle_timer(self, now: float) -> None:
        """Release the bans that have ended and forget idle sources."""
        while (due := self.get_timer()) is not None and due <= now:
            _, host = heapq.heappop(self._bans)
            state = self._sources[host]
            state.banned_until = None
            state.failures.clear()
            self._events.append(SourceReleased(host))
        self._forget_idle(now)

    def next_event(self) -> SecurityEvent | None:
        return self._events.popleft() if self._events else None

    # -- bans that survive a restart --------------------------------------------------------

    def bans(self) -> list[tuple[str, float]]:
        """The running bans as ``(host, until)``, for the store and the admin status."""
        return [
            (host, state.banned_until)
            for host, state in self._sources.items()
            if state.banned_until is not None
        ]

    def restore_ban(self, host: str, until: float, now: float) -> None:
        """Re-impose a ban loaded from the store (no event: it was logged when it began)."""
        if host in self.exempt or until <= now:
            return
        state = self._state(host, now)
        state.banned_until = until
        heapq.heappush(self._bans, (until, host))

    def __len__(self) -> int:
        """How many sources are tracked."""
        return len(self._sources)

    # -- internals --------------------------------------------------------------------------

    def _state(self, host: str, now: float) -> _SourceState:
        state = self._sources.get(host)
        if state is None:
            state = _SourceState(float(self.settings.max_requests_per_second), now)
            self._sources[host] = state
            if len(self._sources) > self.max_sources:
                self._forget_idle(now)
                self._evict_beyond_limit()
        else:
            self._sources.move_to_end(host)
        return state

    def _ban(
        self,
        host: str,
        state: _SourceState,
        until: float,
        failures: int,
        reason: str = "auth_failures",
    ) -> None:
        state.banned_until = until
        state.failures.clear()
        heapq.heappush(self._bans, (until, host))
        self._events.append(SourceBanned(host, failures, until, reason))

    def _is_idle(self, state: _SourceState, now: float) -> bool:
        if state.banned_until is not None:
            return False
        # A full bucket (no debt left from a dear message) carries no information.
        rate = float(self.settings.max_requests_per_second)
        unseen = now - state.refreshed_at
        bucket_full = unseen > 1.0 and state.tokens + unseen * rate >= rate - _EPSILON
        failures_old = not state.failures or (
            now - state.failures[-1] >= self.settings.ban_window_seconds
        )
        reported_long_ago = (
            state.reported_at is None or now - state.reported_at >= self.throttle_report_seconds
        )
        return bucket_full and failures_old and reported_long_ago

    def _forget_idle(self, now: float) -> None:
        # Least recently seen first; stop at the first source still active, so a sweep costs
        # about what it removes. Banned sources are passed over (they wait for their release).
        skips = 0
        while self._sources and skips < len(self._sources):
            host, state = next(iter(self._sources.items()))
            if state.banned_until is not None:
                self._sources.move_to_end(host)
                skips += 1
                continue
            if not self._is_idle(state, now):
                break
            self._forget(host)

    def _forget(self, host: str) -> None:
        state = self._sources.pop(host)
        if state.dropped:
            # Report the tail of a throttling episode before its count is lost.
            limit = self.settings.max_requests_per_second
            self._events.append(SourceThrottled(host, state.dropped, limit))

    def _evict_beyond_limit(self) -> None:
        # A flood from many addresses (spoofed UDP): forget the least recently seen sources that
        # are not banned. Bans are few (each needs ban_after_failures failures) and must stay.
        skips = 0
        while len(self._sources) > self.max_sources and skips < len(self._sources):
            host, state = next(iter(self._sources.items()))
            if state.banned_until is not None:
                self._sources.move_to_end(host)
                skips += 1
                continue
            self._forget(host)
