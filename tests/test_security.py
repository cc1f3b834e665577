"""SourceGuard: bans after failed authentications, rate limits, trunk exemption, bounded memory."""

from __future__ import annotations

from pbx.config.model import SecuritySettings
from pbx.security import SourceBanned, SourceGuard, SourceReleased, SourceThrottled, Verdict

SETTINGS = SecuritySettings(
    ban_after_failures=3, ban_window_seconds=60, ban_seconds=120, max_requests_per_second=5
)
TRUNK = "127.0.0.2"
ATTACKER = "203.0.113.66"
T0 = 5_000.0


def events(guard: SourceGuard) -> list[object]:
    out: list[object] = []
    while (event := guard.next_event()) is not None:
        out.append(event)
    return out


def test_ban_after_n_failures_within_the_window() -> None:
    guard = SourceGuard(SETTINGS, exempt=[TRUNK])
    assert not guard.record_failure(ATTACKER, T0)
    assert not guard.record_failure(ATTACKER, T0 + 10)
    assert guard.admit(ATTACKER, T0 + 11) is Verdict.ALLOWED
    assert guard.record_failure(ATTACKER, T0 + 59)
    assert guard.admit(ATTACKER, T0 + 60) is Verdict.BANNED
    assert guard.is_banned(ATTACKER, T0 + 60)
    assert events(guard) == [SourceBanned(ATTACKER, 3, T0 + 59 + 120)]
    assert SourceBanned.name == "source_banned"


def test_failures_spread_beyond_the_window_do_not_ban() -> None:
    guard = SourceGuard(SETTINGS)
    for i in range(10):
        assert not guard.record_failure(ATTACKER, T0 + 30 * i)
    assert guard.admit(ATTACKER, T0 + 300) is Verdict.ALLOWED
    assert events(guard) == []


def test_window_boundary_is_exclusive() -> None:
    guard = SourceGuard(SETTINGS)
    guard.record_failure(ATTACKER, T0)
    guard.record_failure(ATTACKER, T0 + 1)
    assert not guard.record_failure(ATTACKER, T0 + 60)  # the first one just left the window
    assert guard.record_failure(ATTACKER, T0 + 60.5)


def test_release_after_ban_time() -> None:
    guard = SourceGuard(SETTINGS)
    for i in range(3):
        guard.record_failure(ATTACKER, T0 + i)
    until = T0 + 2 + 120
    assert guard.get_timer() == until
    guard.handle_timer(until - 0.001)
    assert guard.admit(ATTACKER, until - 0.001) is Verdict.BANNED
    events(guard)
    guard.handle_timer(until)
    assert events(guard) == [SourceReleased(ATTACKER)]
    assert guard.get_timer() is None
    assert guard.admit(ATTACKER, until + 1) is Verdict.ALLOWED
    # The slate is clean: it takes N new failures to ban again.
    assert not guard.record_failure(ATTACKER, until + 2)
    assert not guard.record_failure(ATTACKER, until + 3)


def test_release_also_happens_lazily_on_the_next_request() -> None:
    guard = SourceGuard(SETTINGS)
    for i in range(3):
        guard.record_failure(ATTACKER, T0 + i)
    events(guard)
    assert guard.admit(ATTACKER, T0 + 500) is Verdict.ALLOWED
    assert events(guard) == [SourceReleased(ATTACKER)]


def test_throttle_above_the_request_rate() -> None:
    guard = SourceGuard(SETTINGS)
    verdicts = [guard.admit("198.51.100.1", T0) for _ in range(8)]
    assert verdicts == [Verdict.ALLOWED] * 5 + [Verdict.THROTTLED] * 3
    # One event per episode, not one per dropped request.
    assert events(guard) == [SourceThrottled("198.51.100.1", 1, 5)]
    # Tokens come back at the configured rate: 0.4 s later, two more requests pass.
    assert guard.admit("198.51.100.1", T0 + 0.4) is Verdict.ALLOWED
    assert guard.admit("198.51.100.1", T0 + 0.4) is Verdict.ALLOWED
    assert guard.admit("198.51.100.1", T0 + 0.4) is Verdict.THROTTLED


def test_a_steady_rate_at_the_limit_is_never_throttled() -> None:
    guard = SourceGuard(SETTINGS)
    assert all(guard.admit("198.51.100.1", T0 + i * 0.2) is Verdict.ALLOWED for i in range(100))


def test_throttle_reports_dropped_counts_at_most_every_report_interval() -> None:
    guard = SourceGuard(SETTINGS, throttle_report_seconds=10)
    host = "198.51.100.1"
    for t in range(20):  # 20 requests per second for 20 s
        for _ in range(20):
            guard.admit(host, T0 + t)
    reports = events(guard)
    assert all(isinstance(e, SourceThrottled) for e in reports)
    assert len(reports) == 2


def test_throttling_is_per_source() -> None:
    guard = SourceGuard(SETTINGS)
    for _ in range(10):
        guard.admit("198.51.100.1", T0)
    assert guard.admit("198.51.100.2", T0) is Verdict.ALLOWED


def test_trunk_is_never_banned_or_throttled() -> None:
    guard = SourceGuard(SETTINGS, exempt=[TRUNK])
    for i in range(10):
        assert not guard.record_failure(TRUNK, T0 + i)
    assert all(guard.admit(TRUNK, T0 + 10) is Verdict.ALLOWED for _ in range(1000))
    assert events(guard) == []
    assert len(guard) == 0


def test_reload_exempting_a_banned_source_releases_it() -> None:
    guard = SourceGuard(SETTINGS)
    for i in range(3):
        guard.record_failure(TRUNK, T0 + i)
    events(guard)
    guard.update(SETTINGS, exempt=[TRUNK])
    assert events(guard) == [SourceReleased(TRUNK)]
    assert guard.admit(TRUNK, T0 + 5) is Verdict.ALLOWED


def test_memory_is_bounded_and_idle_sources_are_forgotten() -> None:
    guard = SourceGuard(SETTINGS, max_sources=100)
    for i in range(3):
        guard.record_failure(ATTACKER, T0 + i)
    for i in range(10_000):
        guard.admit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", T0 + 3)
    assert len(guard) <= 100
    assert guard.is_banned(ATTACKER, T0 + 4)  # bans survive the flood
    # Once everyone is idle (full buckets, failures out of the window), little is kept.
    guard.handle_timer(T0 + 100)
    assert len(guard) == 1  # only the banned source


def test_bans_can_be_saved_and_restored() -> None:
    guard = SourceGuard(SETTINGS)
    for i in range(3):
        guard.record_failure(ATTACKER, T0 + i)
    saved = guard.bans()
    assert saved == [(ATTACKER, T0 + 122)]
    fresh = SourceGuard(SETTINGS, exempt=[TRUNK])
    for host, until in [*saved, (TRUNK, T0 + 999), ("198.51.100.9", T0 - 1)]:
        fresh.restore_ban(host, until, T0 + 10)
    assert fresh.admit(ATTACKER, T0 + 10) is Verdict.BANNED
    assert fresh.admit(TRUNK, T0 + 10) is Verdict.ALLOWED
    assert fresh.admit("198.51.100.9", T0 + 10) is Verdict.ALLOWED
    assert events(fresh) == []
    assert fresh.get_timer() == T0 + 122
