"""Abuse defences per source address: bans after failed authentications, and a rate limit.

Pure, time passed in (any clock in seconds, used consistently). DESIGN section 5 ``[security]``:

- ``ban_after_failures`` failed authentications from one source IP within ``ban_window_seconds``
  ban it for ``ban_seconds``: its requests are dropped without an answer;
- more than ``max_requests_per_second`` requests from one source are dropped (a token bucket:
  that many per second, with a burst of one second's worth);
- trunk addresses are never banned or limited (DESIGN section 3, "Identity on the network").

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


class SourceGuard:
    """Failed-authentication bans and request-rate limits per source IP."""

    def __init__(
        self,
        settings: SecuritySettings,
        exempt: Iterable[str] = (),
        *,
        max_sources: int = 100_000,
        throttle_report_seconds: float = 10.0,
    ) -> None:
        self.settings = settings
        self.exempt: frozenset[str] = frozenset(exempt)
        self.max_sources = max_sources
        self.throttle_report_seconds = throttle_report_seconds
        self._sources: OrderedDict[str, _SourceState] = OrderedDict()
        self._bans: list[tuple[float, str]] = []  # heap of (until, host); may hold stale entries
        self._events: deque[SecurityEvent] = deque()

    def update(self, settings: SecuritySettings, exempt: Iterable[str]) -> None:
        """Take new settings and trunk addresses (config reload). Running bans are kept."""
        self.settings = settings
        self.exempt = frozenset(exempt)
        for host in self.exempt & self._sources.keys():
            state = self._sources.pop(host)
            if state.banned_until is not None:
                self._events.append(SourceReleased(host))

    # -- per request ------------------------------------------------------------------------

    def admit(self, host: str, now: float) -> Verdict:
        """Whether to handle a request from ``host`` (call once per received request)."""
        if host in self.exempt:
            return Verdict.ALLOWED
        self.handle_timer(now)
        state = self._state(host, now)
        if state.banned_until is not None:
            return Verdict.BANNED
        rate = float(self.settings.max_requests_per_second)
        state.tokens = min(rate, state.tokens + (now - state.refreshed_at) * rate)
        state.refreshed_at = now
        if state.tokens >= 1.0 - _EPSILON:  # float time: 0.4 s at 5/s is 1.9999999 tokens
            state.tokens = max(0.0, state.tokens - 1.0)
            return Verdict.ALLOWED
        state.dropped += 1
        if state.reported_at is None or now - state.reported_at >= self.throttle_report_seconds:
            self._events.append(SourceThrottled(host, state.dropped, int(rate)))
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

    def _ban(self, host: str, state: _SourceState, until: float, failures: int) -> None:
        state.banned_until = until
        state.failures.clear()
        heapq.heappush(self._bans, (until, host))
        self._events.append(SourceBanned(host, failures, until))

    def _is_idle(self, state: _SourceState, now: float) -> bool:
        if state.banned_until is not None:
            return False
        # The burst is one second's worth, so a source unseen for over a second has a full bucket.
        bucket_full = now - state.refreshed_at > 1.0
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
