"""Which inbound rule is in force at an instant (docs/design.md section 3, "Time").

Japanese public holidays come from the maintained ``holidays`` package, never from a list kept
here. A rule's window is inclusive at both ends to the second, in the tenant's time zone. If any
rule of a number lists ``holiday``, only those rules apply to that number on a holiday; otherwise
the weekday rules apply on holidays too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import holidays

from pbx.config.model import WEEKDAYS, DayName, IncomingRule
from pbx.errors import LocalProtocolError

HOLIDAY: DayName = "holiday"


@functools.lru_cache(maxsize=64)
def _japan(year: int) -> dict[date, str]:
    # One immutable copy per year: the package's objects grow lazily on lookup.
    table = holidays.country_holidays("JP", years=year, language="en_US")
    return {day: str(name) for day, name in table.items()}


def holiday_name(day: date) -> str | None:
    """The name of the Japanese public holiday on ``day``, or None on an ordinary day."""
    return _japan(day.year).get(day)


def is_holiday(day: date) -> bool:
    """Whether ``day`` is a Japanese public holiday (substitute and citizens' holidays included)."""
    return holiday_name(day) is not None


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_time(now: datetime, timezone: str) -> datetime:
    """``now`` (which must be aware) in the IANA zone ``timezone``, truncated to the second."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise LocalProtocolError("routing needs an aware datetime, got a naive one", 500)
    return now.astimezone(_zone(timezone)).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class DayKind:
    """How the rules of one number see a local date: its weekday, and its holiday if any."""

    weekday: DayName
    holiday: str | None  # the holiday's name

    def applies(self, rule: IncomingRule, number_has_holiday_rules: bool) -> bool:
        """Whether ``rule`` is a candidate on this day (section 3: holiday precedence)."""
        if self.holiday is not None and number_has_holiday_rules:
            return HOLIDAY in rule.days
        return self.weekday in rule.days


def day_kind(local: datetime) -> DayKind:
    """The weekday name and the holiday (if any) of a local date-time."""
    return DayKind(weekday=WEEKDAYS[local.weekday()], holiday=holiday_name(local.date()))


def rules_in_force(rules: Iterable[IncomingRule], local: datetime) -> tuple[IncomingRule, ...]:
    """Every rule of one number whose days and window contain the local instant ``local``.

    With a valid configuration (no overlap within a day kind) this holds at most one rule.
    """
    candidates = tuple(rules)
    has_holiday_rules = any(HOLIDAY in rule.days for rule in candidates)
    kind = day_kind(local)
    moment = local.time().replace(microsecond=0, tzinfo=None)
    return tuple(
        rule
        for rule in candidates
        if kind.applies(rule, has_holiday_rules) and rule.start <= moment <= rule.end
    )


def find_rule(rules: Iterable[IncomingRule], local: datetime) -> IncomingRule | None:
    """The rule in force at ``local``, or None when no rule covers it (the call gets 480)."""
    matched = rules_in_force(rules, local)
    # Overlaps are a configuration error; should one slip through, the first rule written wins.
    return min(matched, key=lambda rule: rule.position) if matched else None


def describe_instant(local: datetime) -> str:
    """``Fri 18:05:00 Asia/Tokyo``, plus the holiday when there is one, for traces."""
    # Every call of a busy second asks the same: cached on the wall-clock fields and the zone
    # (aware datetimes compare by instant, so the datetime itself would mix up zones).
    return _describe(local.replace(tzinfo=None), str(local.tzinfo))


@functools.lru_cache(maxsize=256)
def _describe(wall: datetime, zone: str) -> str:
    text = f"{wall.strftime('%a %H:%M:%S')} {zone}"
    name = holiday_name(wall.date())
    return f"{text} (holiday: {name})" if name else text
