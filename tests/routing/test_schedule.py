"""Which inbound rule is in force: boundary seconds, weekdays, holidays, time zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pbx.config.model import ConfigSnapshot
from pbx.errors import LocalProtocolError
from pbx.routing import (
    CallRequest,
    Decision,
    LineState,
    PlayAnnouncement,
    TimerKind,
    holiday_name,
    is_holiday,
    start_call,
)
from tests.routing.builders import (
    EVERY_DAY,
    NUMBER,
    WORKDAYS,
    forks,
    from_trunk,
    lines,
    manual_rules,
    rule,
    snapshot,
    tenant,
    tokyo,
    user,
)

ALL_ONLINE = lines(["1001", "1002", "1003", "1004"])
USERS = [user("1001"), user("1002"), user("1003"), user("1004")]


def call(
    cfg: ConfigSnapshot, at: datetime, number: str = NUMBER, state: LineState = ALL_ONLINE
) -> Decision:
    return start_call(cfg, CallRequest(from_trunk(), number), at, state)


MANUAL = snapshot(tenant(users=USERS, incoming=manual_rules()))


# 2026-11-20 is a Friday, 2026-11-21 a Saturday; 2026-11-23 (Monday) is Labor Thanksgiving Day.
@pytest.mark.parametrize(
    ("at", "expected", "rule_no"),
    [
        ("2026-11-20 07:59:59", ("009608",), 3),
        ("2026-11-20 08:00:00", ("1001", "1002"), 1),
        ("2026-11-20 12:34:56", ("1001", "1002"), 1),
        ("2026-11-20 19:59:59", ("1001", "1002"), 1),
        ("2026-11-20 19:59:59.999", ("1001", "1002"), 1),
        ("2026-11-20 20:00:00", ("1003",), 2),
        ("2026-11-20 23:59:59", ("1003",), 2),
        ("2026-11-21 00:00:00", ("009608",), 3),
        ("2026-11-21 00:00:00.500", ("009608",), 3),
        ("2026-11-22 08:00:00", ("1001", "1002"), 1),  # Sunday: the example lists every day
        ("2026-11-23 08:00:00", ("1001", "1002"), 1),  # holiday, no holiday rules: weekday rules
    ],
)
def test_manual_example_schedule_at_boundary_seconds(
    at: str, expected: tuple[str, ...], rule_no: int
) -> None:
    decision = call(MANUAL, tokyo(at))
    assert forks(decision) == expected
    assert decision.final is None
    matched = [line for line in decision.trace if " rule " in line]
    assert len(matched) == 1
    assert f"number {NUMBER} rule {rule_no} (" in matched[0]


def test_trace_names_only_the_matched_rule() -> None:
    decision = call(MANUAL, tokyo("2026-11-20 21:05:00"))
    assert "Fri 21:05:00 Asia/Tokyo: number 0312345678 rule 2 (20:00:00-23:59:59) -> 1003" in (
        decision.trace
    )
    assert not any("rule 1 " in line or "rule 3 " in line for line in decision.trace)


def test_after_hours_announcement_trace() -> None:
    decision = call(MANUAL, tokyo("2026-11-20 06:05:00"))
    assert (
        decision.trace[1]
        == "Fri 06:05:00 Asia/Tokyo: number 0312345678 rule 3 (00:00:00-07:59:59) -> 009608"
    )
    assert isinstance(decision.start[0], PlayAnnouncement)


WEEK = snapshot(
    tenant(
        users=USERS,
        incoming=[
            rule(1, "1001,1002", "8:00:00", "19:59:59", WORKDAYS),
            rule(2, "1003", "10:00:00", "16:00:00", ("sat", "sun")),
        ],
    )
)


@pytest.mark.parametrize(
    ("at", "expected", "final"),
    [
        ("2026-11-20 12:00:00", ("1001", "1002"), None),  # Friday
        ("2026-11-20 07:59:59", (), 480),  # before opening: no rule
        ("2026-11-20 20:00:00", (), 480),
        ("2026-11-21 09:59:59", (), 480),  # Saturday before the weekend window
        ("2026-11-21 10:00:00", ("1003",), None),
        ("2026-11-22 16:00:00", ("1003",), None),  # Sunday, last second
        ("2026-11-22 16:00:01", (), 480),
        ("2026-11-16 08:00:00", ("1001", "1002"), None),  # Monday
    ],
)
def test_weekdays_against_weekend(at: str, expected: tuple[str, ...], final: int | None) -> None:
    decision = call(WEEK, tokyo(at))
    assert forks(decision) == expected
    assert decision.final == final


def test_no_rule_in_force_traces_480() -> None:
    decision = call(WEEK, tokyo("2026-11-21 09:00:00"))
    assert "Sat 09:00:00 Asia/Tokyo: number 0312345678 no rule in force -> 480" in decision.trace
    assert decision.timers == ()


HOLIDAYS = snapshot(
    tenant(
        numbers=[NUMBER, "0612345678"],
        users=USERS,
        incoming=[
            *manual_rules(),
            rule(4, "009608", "0:00:00", "23:59:59", ("holiday",)),
            rule(5, "1004", "0:00:00", "23:59:59", EVERY_DAY, number="0612345678"),
        ],
    )
)


def test_calendar_comes_from_the_holidays_package() -> None:
    assert holiday_name(tokyo("2026-11-23 00:00:00").date()) == "Labor Thanksgiving Day"
    assert is_holiday(tokyo("2026-05-06 00:00:00").date())  # substitute holiday
    assert not is_holiday(tokyo("2026-11-24 00:00:00").date())


@pytest.mark.parametrize(
    ("at", "number", "expected"),
    [
        ("2026-11-23 12:00:00", NUMBER, ("009608",)),  # holiday: only holiday rules apply
        ("2026-11-23 23:59:59", NUMBER, ("009608",)),
        ("2026-11-24 00:00:00", NUMBER, ("009608",)),  # the day after, ordinary night rule
        ("2026-11-24 08:00:00", NUMBER, ("1001", "1002")),
        ("2026-05-03 12:00:00", NUMBER, ("009608",)),  # a holiday on a Sunday
        ("2026-11-23 12:00:00", "0612345678", ("1004",)),  # no holiday rules for this number
    ],
)
def test_holiday_rules_take_precedence_per_number(
    at: str, number: str, expected: tuple[str, ...]
) -> None:
    decision = call(HOLIDAYS, tokyo(at), number=number)
    assert forks(decision) == expected


def test_holiday_trace_names_the_holiday() -> None:
    decision = call(HOLIDAYS, tokyo("2026-11-23 12:00:00"))
    assert decision.trace[1] == (
        "Mon 12:00:00 Asia/Tokyo (holiday: Labor Thanksgiving Day): "
        "number 0312345678 rule 4 (00:00:00-23:59:59) -> 009608"
    )


def test_holiday_rules_without_a_covering_window_leave_the_holiday_uncovered() -> None:
    cfg = snapshot(
        tenant(
            users=USERS,
            incoming=[*manual_rules(), rule(4, "1004", "9:00:00", "17:00:00", ("holiday",))],
        )
    )
    assert forks(call(cfg, tokyo("2026-11-23 12:00:00"))) == ("1004",)
    assert call(cfg, tokyo("2026-11-23 18:00:00")).final == 480  # weekday rules don't apply


NEW_YORK = snapshot(
    tenant(users=USERS, incoming=manual_rules(), timezone="America/New_York"),
)


@pytest.mark.parametrize(
    ("utc", "expected", "local"),
    [
        ("2026-11-20T22:00:00", ("1001", "1002"), "Fri 17:00:00 America/New_York"),
        ("2026-11-21T00:59:59", ("1001", "1002"), "Fri 19:59:59 America/New_York"),
        ("2026-11-21T01:00:00", ("1003",), "Fri 20:00:00 America/New_York"),
        ("2026-11-21T05:00:00", ("009608",), "Sat 00:00:00 America/New_York"),
        ("2026-07-01T12:00:00", ("1001", "1002"), "Wed 08:00:00 America/New_York"),  # EDT
        ("2026-07-01T11:59:59", ("009608",), "Wed 07:59:59 America/New_York"),
    ],
)
def test_tenant_in_another_time_zone(utc: str, expected: tuple[str, ...], local: str) -> None:
    at = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    decision = call(NEW_YORK, at)
    assert forks(decision) == expected
    assert decision.trace[1].startswith(local + ": number")


def test_same_instant_differs_between_time_zones() -> None:
    at = datetime(2026, 11, 20, 22, 0, 0, tzinfo=UTC)  # Fri 17:00 in New York, Sat 07:00 in Tokyo
    assert forks(call(NEW_YORK, at)) == ("1001", "1002")
    assert forks(call(MANUAL, at)) == ("009608",)


def test_unknown_number_is_404() -> None:
    decision = call(MANUAL, tokyo("2026-11-20 12:00:00"), number="0399999999")
    assert decision.final == 404
    assert decision.start == ()


def test_plus81_number_reaches_the_tenant() -> None:
    decision = call(MANUAL, tokyo("2026-11-20 12:00:00"), number="+81312345678")
    assert forks(decision) == ("1001", "1002")


def test_a_call_with_forks_arms_the_max_ring_timer() -> None:
    at = tokyo("2026-11-20 12:00:00")
    decision = call(MANUAL, at)
    (timer,) = [t for t in decision.timers if t.kind is TimerKind.MAX_RING]
    assert timer.seconds == 60
    assert (timer.at - at).total_seconds() == 60


def test_naive_instants_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        call(MANUAL, datetime(2026, 11, 20, 12, 0, 0))
