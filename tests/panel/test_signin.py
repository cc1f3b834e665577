"""The sign-in throttle on fake time: slowed after 3 failures, locked after 10 (account) or 30
(address) within 15 minutes, cleared by a success, and bounded in memory."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pbx.panel.signin import (
    ALLOWED,
    Outcome,
    Scope,
    SignInThrottle,
    ThrottleSettings,
    Verdict,
    address_key,
)

A = "198.51.100.7"
B = "203.0.113.9"
T0 = 1_764_000_000.0


@dataclass(frozen=True)
class Fail:
    at: float
    account: str = "yamada"
    address: str = A


@dataclass(frozen=True)
class Succeed:
    at: float
    account: str = "yamada"
    address: str = A


@dataclass(frozen=True)
class Expect:
    at: float
    outcome: Outcome
    until: float | None = None  # relative to T0
    scope: Scope | None = None
    account: str = "yamada"
    address: str = A


Step = Fail | Succeed | Expect


def fails(*instants: float, account: str = "yamada", address: str = A) -> list[Step]:
    return [Fail(t, account, address) for t in instants]


def run(steps: list[Step], settings: ThrottleSettings | None = None) -> None:
    throttle = SignInThrottle(settings)
    for number, step in enumerate(steps):
        now = T0 + step.at
        if isinstance(step, Fail):
            throttle.failed(step.address, step.account, now)
        elif isinstance(step, Succeed):
            throttle.succeeded(step.address, step.account, now)
        else:
            verdict = throttle.check(step.address, step.account, now)
            until = None if step.until is None else T0 + step.until
            got = (verdict.outcome, verdict.until, verdict.scope)
            assert got == (step.outcome, until, step.scope), f"step {number}: {step}"


ALLOW = Outcome.ALLOWED
SLOW = Outcome.SLOWED
LOCK = Outcome.LOCKED

CASES: dict[str, list[Step]] = {
    "two failures slow nothing": [*fails(0, 1), Expect(1, ALLOW)],
    "the third failure makes the next attempt wait one second": [
        *fails(0, 1, 2),
        Expect(2, SLOW, 3, "account"),
        Expect(2.999, SLOW, 3, "account"),
        Expect(3, ALLOW),
    ],
    "the wait counts from the last failure": [
        *fails(0, 1, 2, 10),  # 4 failures: 2 s
        Expect(11.5, SLOW, 12, "account"),
        Expect(12, ALLOW),
    ],
    "failures 15 minutes old no longer count": [
        *fails(0, 100, 200),
        Expect(200.5, SLOW, 201, "account"),
        Fail(300),  # 4 inside the window: 2 s
        Expect(301, SLOW, 302, "account"),
        Fail(900),  # the one at 0 has left the window: 4 inside (100, 200, 300, 900)
        Expect(901, SLOW, 902, "account"),
    ],
    "a failure exactly 15 minutes old has left the window": [
        *fails(0, 0, 0, 0, 0, 0, 0, 0, 0),  # 9 failures at 0
        Fail(900),  # the 9 at 0 are gone: this is the first
        Expect(900, ALLOW),
    ],
    "the tenth failure for an account locks it for 15 minutes": [
        *fails(*range(0, 500, 50)),  # 10 failures within 450 s
        Expect(450, LOCK, 450 + 900, "account"),
        Expect(450 + 899.9, LOCK, 450 + 900, "account"),
        Expect(450, LOCK, 450 + 900, "account", address=B),  # from anywhere
        Expect(450, SLOW, 450 + 60, "address", account="suzuki"),  # the address is only slowed
        Expect(450 + 900, ALLOW),  # the lock ends with a clean slate
    ],
    "nine failures spread over more than 15 minutes never lock": [
        *fails(0, 200, 300, 400, 500, 600, 700, 800, 850),
        Fail(901),  # 0 is out: 9 inside the window
        Expect(901, SLOW, 961, "account"),
    ],
    "failures during a lock do not lengthen it": [
        *fails(*range(10)),
        Expect(9, LOCK, 909, "account"),
        *fails(100, 200),
        Expect(200, LOCK, 909, "account"),
        Expect(909, ALLOW),
    ],
    "an address is slowed after three failures on different accounts": [
        Fail(0, "a1"),
        Fail(0, "a2"),
        Fail(0, "a3"),
        Expect(0.5, SLOW, 1, "address", account="a4"),
        Expect(0.5, ALLOW, address=B, account="a4"),
    ],
    "thirty failures from one address lock it": [
        *[Fail(t, f"user{t}") for t in range(30)],
        Expect(29, LOCK, 29 + 900, "address", account="someone-else"),
        Expect(29, ALLOW, account="someone-else", address=B),
    ],
    "ten failures on one account from ten addresses lock the account": [
        *[Fail(t, "yamada", f"192.0.2.{t}") for t in range(10)],
        Expect(9, LOCK, 909, "account", address="192.0.2.200"),
        Expect(9, ALLOW, account="suzuki", address="192.0.2.200"),
    ],
    "a success clears the account and the address": [
        *fails(0, 1, 2, 3, 4),
        Expect(5, SLOW, 4 + 4, "account"),
        Succeed(8),
        Expect(8, ALLOW),
        Fail(9),
        Expect(9, ALLOW),
    ],
    "account names are counted without case": [
        *fails(0, 1, account="Yamada"),
        Fail(2, "YAMADA", B),
        Expect(2, SLOW, 3, "account", account="yamada", address="192.0.2.1"),
    ],
    "an IPv6 /64 counts as one address": [
        Fail(0, "a1", "2001:db8::1"),
        Fail(0, "a2", "2001:db8::2"),
        Fail(0, "a3", "2001:db8::ffff:1"),
        Expect(0, SLOW, 1, "address", account="a4", address="2001:db8::99"),
        Expect(0, ALLOW, account="a4", address="2001:db8:0:1::1"),
    ],
    "the longer hold wins when both are held": [
        *[Fail(t, f"user{t}") for t in range(5)],  # the address: 5 failures, 4 s after 4
        *[Fail(4, "yamada", f"192.0.2.{i}") for i in range(3)],  # yamada: 3, 1 s after 4
        Fail(4),  # yamada 4 (2 s), the address 6 (8 s)
        Expect(4, SLOW, 12, "address"),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_throttle(steps: list[Step]) -> None:
    run(steps)


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(3, 1), (4, 2), (5, 4), (6, 8), (7, 16), (8, 32), (9, 60)],
)
def test_wait_doubles_from_one_second_up_to_a_minute(failures: int, wait: float) -> None:
    last = failures - 1
    run(
        [
            *fails(*range(failures)),
            Expect(last, SLOW, last + wait, "account"),
            Expect(last + wait - 0.001, SLOW, last + wait, "account"),
            Expect(last + wait, ALLOW),
        ]
    )


def test_failed_returns_the_verdict_that_follows() -> None:
    throttle = SignInThrottle()
    assert throttle.failed(A, "yamada", T0) == ALLOWED
    assert throttle.failed(A, "yamada", T0) == ALLOWED
    assert throttle.failed(A, "yamada", T0) == Verdict(Outcome.SLOWED, T0 + 1, 1, "account")


def test_wait_seconds_is_rounded_up_for_the_message() -> None:
    throttle = SignInThrottle()
    for _ in range(9):
        throttle.failed(A, "yamada", T0)
    verdict = throttle.check(A, "yamada", T0 + 0.5)
    assert (verdict.outcome, verdict.wait_seconds, verdict.allowed) == (SLOW, 60, False)
    assert throttle.check(A, "yamada", T0 + 59.2).wait_seconds == 1
    throttle.failed(A, "yamada", T0 + 60)
    assert throttle.check(A, "yamada", T0 + 60).wait_seconds == 900


def test_settings_change_the_policy() -> None:
    settings = ThrottleSettings(slow_after=1, lock_account_after=2, lock_seconds=60)
    run(
        [Fail(0), Expect(0, SLOW, 1, "account"), Fail(1), Expect(1, LOCK, 61, "account")],
        settings,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"slow_after": 0},
        {"slow_after": 10},
        {"lock_address_after": 3},
        {"window_seconds": 0},
        {"max_accounts": 0},
    ],
)
def test_inconsistent_settings_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        ThrottleSettings(**changes)  # type: ignore[arg-type]


def test_idle_entries_are_forgotten() -> None:
    throttle = SignInThrottle()
    for i in range(50):
        throttle.failed(f"192.0.2.{i}", f"user{i}", T0 + i)
    assert len(throttle) == 100
    throttle.check(A, "yamada", T0 + 49 + 900)
    assert len(throttle) == 0


def test_a_lock_longer_than_the_window_is_not_forgotten() -> None:
    settings = ThrottleSettings(lock_seconds=3600)
    throttle = SignInThrottle(settings)
    for i in range(10):
        throttle.failed(A, "yamada", T0 + i)
    assert throttle.check(B, "yamada", T0 + 2000).outcome is LOCK
    assert len(throttle) == 1  # the address's failures are forgotten, the account's lock is not
    assert throttle.check(B, "yamada", T0 + 9 + 3600).allowed


def test_memory_is_capped_with_the_least_recently_failed_forgotten_first() -> None:
    throttle = SignInThrottle(ThrottleSettings(max_accounts=100, max_addresses=50))
    for i in range(10_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"user{i}", T0 + i / 100)
    assert len(throttle) == 150
    now = T0 + 100
    assert throttle.check("10.0.0.1", "user9999", now).outcome is ALLOW  # both forgotten
    for _ in range(2):
        throttle.failed("10.0.39.15", "user9999", now)  # still tracked: 3 failures now
    assert throttle.check("192.0.2.1", "user9999", now).outcome is SLOW


def test_spraying_addresses_does_not_push_out_an_account_lock() -> None:
    throttle = SignInThrottle(ThrottleSettings(max_accounts=100, max_addresses=100))
    for _ in range(10):
        throttle.failed(A, "yamada", T0)
    for i in range(5000):
        throttle.check(f"10.1.{i // 256}.{i % 256}", "yamada", T0 + 1)
        throttle.failed(f"10.2.{i // 256}.{i % 256}", "yamada", T0 + 1)
    assert throttle.check(B, "yamada", T0 + 2).outcome is LOCK


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("[2001:db8:1:2:3:4:5:6]", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("not an address", "not an address"),
    ],
)
def test_address_keys(address: str, key: str) -> None:
    assert address_key(address) == key
