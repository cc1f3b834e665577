"""The panel's sign-in throttle: failed sign-ins slow, then lock, an account and an address.

Pure, time passed in (POSIX seconds, used consistently). With the default ``ThrottleSettings``:

- after 3 failed sign-ins within 15 minutes, for one account name or from one address, each
  further attempt must wait 2^(n-3) seconds after the last failure (n failures: 1, 2, 4 ... s,
  at most 60 s): *slowed*;
- 10 failures for one account, or 30 from one address, within 15 minutes *lock* it for
  15 minutes; the failures that led to the lock are then forgotten;
- a successful sign-in clears the account's and the address's failures.

The web layer asks ``check`` before it verifies a password (a slowed or locked attempt costs no
argon2 work and gets no answer about the password), then reports ``failed`` or ``succeeded``.
Account names are counted whether the account exists or not, so the throttle's answers do not
tell which names exist. IPv6 addresses are counted by their /64 (one host usually holds a
whole /64).

Memory is bounded: accounts and addresses are kept apart (spraying addresses cannot push
accounts out), a key with no failure inside the window and no running lock is forgotten, and past
``max_accounts`` / ``max_addresses`` the least recently failed is forgotten first, lock or not.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

Scope = Literal["account", "address"]


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    SLOWED = "slowed"  # try again at ``until``
    LOCKED = "locked"  # locked until ``until``


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """The sign-in throttle's policy."""

    window_seconds: float = 15 * 60  # failures older than this do not count
    slow_after: int = 3  # failures before each attempt must wait
    max_wait_seconds: float = 60.0  # the longest wait between attempts
    lock_account_after: int = 10
    lock_address_after: int = 30
    lock_seconds: float = 15 * 60
    max_accounts: int = 10_000  # accounts tracked at once
    max_addresses: int = 10_000  # addresses (IPv6: /64 networks) tracked at once

    def __post_init__(self) -> None:
        if not 1 <= self.slow_after < min(self.lock_account_after, self.lock_address_after):
            raise ValueError("slow_after must be at least 1 and below the lock thresholds")
        if min(self.window_seconds, self.max_wait_seconds, self.lock_seconds) <= 0:
            raise ValueError("the throttle's durations must be positive")
        if min(self.max_accounts, self.max_addresses) < 1:
            raise ValueError("the throttle must track at least one account and one address")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a sign-in attempt may go ahead now, and if not, until when it must wait."""

    outcome: Outcome
    until: float | None = None  # when the next attempt may go ahead (slowed or locked)
    wait_seconds: int = 0  # until - now, rounded up (for the message to the user)
    scope: Scope | None = None  # what is slowed or locked: the account or the address

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED


ALLOWED = Verdict(Outcome.ALLOWED)

# A lock beats a wait, and a longer hold beats a shorter one.
_SEVERITY = {Outcome.ALLOWED: 0, Outcome.SLOWED: 1, Outcome.LOCKED: 2}


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)  # inside the window, oldest first
    locked_until: float | None = None


class _Tracker:
    """Failures per key of one scope (account names, or addresses)."""

    def __init__(self, scope: Scope, settings: ThrottleSettings, lock_after: int, cap: int) -> None:
        self.scope: Scope = scope
        self.settings = settings
        self.lock_after = lock_after
        self.cap = cap
        self.entries: OrderedDict[str, _Failures] = OrderedDict()  # least recently failed first

    def verdict(self, key: str, now: float) -> Verdict:
        entry = self.entries.get(key)
        if entry is None:
            return ALLOWED
        if entry.locked_until is not None and now < entry.locked_until:
            return self._hold(Outcome.LOCKED, entry.locked_until, now)
        window = self.settings.window_seconds
        count = sum(1 for t in entry.times if now - t < window)
        if count < self.settings.slow_after:
            return ALLOWED
        wait = min(2.0 ** (count - self.settings.slow_after), self.settings.max_wait_seconds)
        retry_at = entry.times[-1] + wait
        if now < retry_at:
            return self._hold(Outcome.SLOWED, retry_at, now)
        return ALLOWED

    def fail(self, key: str, now: float) -> None:
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Failures()
        else:
            self.entries.move_to_end(key)
        if entry.locked_until is not None:
            if now < entry.locked_until:
                return  # already locked: the lock is not lengthened
            entry.locked_until = None
        window = self.settings.window_seconds
        while entry.times and now - entry.times[0] >= window:
            entry.times.popleft()
        entry.times.append(now)
        if len(entry.times) >= self.lock_after:
            entry.locked_until = now + self.settings.lock_seconds
            entry.times.clear()
        self.forget(now)

    def clear(self, key: str) -> None:
        self.entries.pop(key, None)

    def forget(self, now: float) -> None:
        # Least recently failed first: stop at the first entry still in force, so a sweep costs
        # about what it removes.
        window = self.settings.window_seconds
        while self.entries:
            key, entry = next(iter(self.entries.items()))
            locked = entry.locked_until is not None and now < entry.locked_until
            recent = bool(entry.times) and now - entry.times[-1] < window
            if locked or recent:
                break
            del self.entries[key]
        while len(self.entries) > self.cap:
            self.entries.popitem(last=False)

    def _hold(self, outcome: Outcome, until: float, now: float) -> Verdict:
        return Verdict(outcome, until, max(1, math.ceil(until - now)), self.scope)


class SignInThrottle:
    """Failed panel sign-ins per account name and per address: slow, then lock."""

    def __init__(self, settings: ThrottleSettings | None = None) -> None:
        self.settings = settings or ThrottleSettings()
        s = self.settings
        self._accounts = _Tracker("account", s, s.lock_account_after, s.max_accounts)
        self._addresses = _Tracker("address", s, s.lock_address_after, s.max_addresses)

    def check(self, address: str, account: str, now: float) -> Verdict:
        """Whether a sign-in attempt for ``account`` from ``address`` may go ahead at ``now``."""
        self._accounts.forget(now)
        self._addresses.forget(now)
        by_account = self._accounts.verdict(account_key(account), now)
        by_address = self._addresses.verdict(address_key(address), now)
        return max(by_account, by_address, key=_hold_order)

    def failed(self, address: str, account: str, now: float) -> Verdict:
        """Count a failed sign-in (wrong password or unknown name); the verdict that follows."""
        self._accounts.fail(account_key(account), now)
        self._addresses.fail(address_key(address), now)
        return self.check(address, account, now)

    def succeeded(self, address: str, account: str, now: float) -> None:
        """Forget the failures of ``account`` and of ``address`` (a sign-in succeeded)."""
        self._accounts.clear(account_key(account))
        self._addresses.clear(address_key(address))

    def __len__(self) -> int:
        """How many accounts and addresses are tracked."""
        return len(self._accounts.entries) + len(self._addresses.entries)


def account_key(account: str) -> str:
    """How an account name is counted: names are case-insensitive."""
    return account.strip().casefold()


def address_key(address: str) -> str:
    """How an address is counted: IPv4 as is, IPv6 by its /64 (IPv4-mapped: the IPv4)."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _hold_order(verdict: Verdict) -> tuple[int, float]:
    return (_SEVERITY[verdict.outcome], verdict.until or 0.0)
