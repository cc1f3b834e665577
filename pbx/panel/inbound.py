"""着信設定 (inbound rules) as the panel's forms give them: parsing, the midnight split, and the
test call's summary (pure).

A rule's form has 着信先 (typed comma-separated and/or picked from the tenant's users), the days
(mon..sun, holiday) and 着信時間設定 (start and end as ``8:00``, ``8:00:00`` or ``08:00:00``).
An end written without seconds means the whole minute (``19:59`` = through ``19:59:59``), as in
the tenant files.

The midnight rule (docs/design.md 2): a window may not cross midnight. An admin who types
18:00-9:00 means "from 18:00 until 9:00 the next morning"; the manual writes that as two rules,
``18:00~23:59:59`` and ``0:00~08:59:59``, so an end typed without seconds *before* the start is
read as the moment the window stops (9:00 -> through 8:59:59). An end typed with seconds is
inclusive as always (18:00:00-09:00:00 -> through 9:00:00).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pbx.config.model import WEEKDAYS, DayName
from pbx.panel.forms import (
    FormError,
    parse_extension,
    parse_targets,
    parse_time,
)
from pbx.panel.timeline import LAST_SECOND, Window, clock

__all__ = [
    "DAY_CHOICES",
    "RuleDraft",
    "TestCall",
    "parse_rule",
    "parse_seconds",
    "parse_test_call",
    "split_at_midnight",
    "summarize_call",
]

Lang = Literal["ja", "en"]
DAY_CHOICES: tuple[DayName, ...] = (*WEEKDAYS, "holiday")
AFTER_HOURS = "009608"

_MESSAGES: dict[str, tuple[str, str]] = {
    "days": ("曜日を1つ以上選んでください", "Choose at least one day"),
    "date": (
        "日付は 2026-04-01 のように 年-月-日 で入力してください",
        "Enter the date as YYYY-MM-DD, e.g. 2026-04-01",
    ),
    "extensions": (
        "内線番号（0000〜8999）をカンマ（,）区切りで入力してください: {value}",
        "Enter extensions (0000 to 8999) separated by commas: {value}",
    ),
}
_SEPARATORS = re.compile(r"[,、\s]+")


class FieldError(Exception):
    """A field the admin must fix; ``message(lang)`` says how (``FormError``'s shape)."""

    def __init__(self, code: str, value: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.value = value

    def message(self, lang: str = "ja") -> str:
        japanese, english = _MESSAGES[self.code]
        return (english if lang == "en" else japanese).format(value=self.value)


@dataclass(frozen=True, slots=True)
class RuleDraft:
    """One rule as typed, normalised. ``end`` may be before ``start`` (crossing midnight)."""

    targets: tuple[str, ...]
    days: tuple[DayName, ...]
    start: int  # seconds since midnight, inclusive
    end: int  # inclusive (an end typed without seconds: its :59)
    end_seconds_typed: bool = True

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    def window(self, index: int) -> Window:
        return Window(index, self.targets, frozenset(self.days), self.start, self.end)

    def values(self) -> dict[str, Any]:
        """The form's values that show this draft again."""
        return {
            "targets": ",".join(self.targets),
            "days": list(self.days),
            "start": clock(self.start),
            "end": clock(self.end),
        }


def parse_seconds(text: str, *, is_end: bool) -> tuple[int, bool]:
    """Seconds since midnight of ``8:00`` / ``8:00:00`` / ``08:00:00`` (full-width folded),
    and whether seconds were typed. Raises ``FormError`` ("time")."""
    normalised = parse_time(text)
    parts = [int(p) for p in normalised.split(":")]
    typed = len(parts) == 3
    seconds = parts[2] if typed else (59 if is_end else 0)
    return parts[0] * 3600 + parts[1] * 60 + seconds, typed


def parse_rule(
    targets_text: str, picked: Sequence[str], days: Sequence[str], start: str, end: str
) -> tuple[RuleDraft | None, dict[str, FormError | FieldError]]:
    """The rule the form describes, or the errors by field name."""
    errors: dict[str, FormError | FieldError] = {}
    targets: list[str] = []
    try:
        for ext in picked:
            targets.append(parse_extension(ext))
        if targets_text.strip() or not targets:
            targets.extend(parse_targets(targets_text))
    except FormError as exc:
        errors["targets"] = exc
    chosen = tuple(day for day in DAY_CHOICES if day in set(days))
    if not chosen or any(day not in DAY_CHOICES for day in days):
        errors["days"] = FieldError("days")
    bounds: dict[str, tuple[int, bool]] = {}
    for name, text in (("start", start), ("end", end)):
        try:
            bounds[name] = parse_seconds(text, is_end=name == "end")
        except FormError as exc:
            errors[name] = exc
    if errors:
        return None, errors
    draft = RuleDraft(
        targets=tuple(dict.fromkeys(targets)),
        days=chosen,
        start=bounds["start"][0],
        end=bounds["end"][0],
        end_seconds_typed=bounds["end"][1],
    )
    return draft, {}


def split_at_midnight(draft: RuleDraft) -> tuple[RuleDraft, ...]:
    """A window crossing midnight as the manual writes it: start-23:59:59 and 0:00:00-end.

    An end typed without seconds is the moment the window stops (see the module docstring);
    an end of ``0:00`` leaves only the evening part.
    """
    if not draft.crosses_midnight:
        return (draft,)
    end = draft.end if draft.end_seconds_typed else draft.end - 59 - 1
    evening = RuleDraft(draft.targets, draft.days, draft.start, LAST_SECOND)
    if end < 0:
        return (evening,)
    return (evening, RuleDraft(draft.targets, draft.days, 0, end))


# --- この時刻にかかってきたら (test a call) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestCall:
    """A test call's question: when (tenant-local), and who is busy or offline."""

    at: datetime
    busy: tuple[str, ...] = ()
    offline: tuple[str, ...] = ()


def _extensions(text: str) -> tuple[str, ...]:
    found = []
    for part in _SEPARATORS.split(unicodedata.normalize("NFKC", text)):
        if part:
            try:
                found.append(parse_extension(part))
            except FormError:
                raise FieldError("extensions", part) from None
    return tuple(dict.fromkeys(found))


def parse_test_call(
    values: Mapping[str, str], timezone: str
) -> tuple[TestCall | None, dict[str, FormError | FieldError]]:
    """The test call's form (``date``, ``time``, ``busy``, ``offline``), or errors by field."""
    errors: dict[str, FormError | FieldError] = {}
    day: date | None = None
    seconds = 0
    text = unicodedata.normalize("NFKC", values.get("date", "")).strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        errors["date"] = FieldError("date", text)
    try:
        seconds, _typed = parse_seconds(values.get("time", ""), is_end=False)
    except FormError as exc:
        errors["time"] = exc
    found: dict[str, tuple[str, ...]] = {}
    for name in ("busy", "offline"):
        try:
            found[name] = _extensions(values.get(name, ""))
        except FieldError as exc:
            errors[name] = exc
    if errors or day is None:
        return None, errors
    at = datetime(
        day.year,
        day.month,
        day.day,
        seconds // 3600,
        seconds % 3600 // 60,
        seconds % 60,
        tzinfo=ZoneInfo(timezone),
    )
    return TestCall(at, found["busy"], found["offline"]), {}


@dataclass(frozen=True, slots=True)
class Step:
    """What happens at one moment of the test call: who rings, what the caller hears."""

    after_seconds: float
    rings: tuple[str, ...]  # extensions and external numbers ringing (or 009608)
    cancelled: tuple[str, ...]
    hears: str  # "announcement" | "ringing" | "final"
    final: int | None
    trace: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallSummary:
    rule: int | None  # the matched rule's index among the number's rules
    local_time: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def first(self) -> Step:
        return self.steps[0]


def _fork_target(fork: Mapping[str, Any]) -> str:
    if fork["kind"] == "ring":
        return str(fork["extension"])
    if fork["kind"] == "dial_out":
        return str(fork["number"])
    return AFTER_HOURS


def summarize_call(report: Mapping[str, Any], rule_positions: Sequence[int]) -> CallSummary:
    """``pbx simulate``'s report (``pbx.simulate.simulate``) as the page shows it.

    ``rule_positions`` are the file positions of the number's rules, in their order: the page
    numbers rules 1, 2, ... within the number.
    """
    names: dict[str, str] = {}
    steps: list[Step] = []
    live: list[str] = []
    for after, part in [(0.0, report)] + [
        (float(s["after_seconds"]), s) for s in report["if_unanswered"]
    ]:
        for fork in part["forks"]:
            names[fork["fork_id"]] = _fork_target(fork)
        cancelled = tuple(names.get(f, f) for f in part["cancel"])
        live = [t for t in live if t not in cancelled]
        live.extend(_fork_target(fork) for fork in part["forks"])
        if part["final"] is not None:
            hears = "final"
        elif AFTER_HOURS in live:
            hears = "announcement"
        else:
            hears = "ringing"
        steps.append(
            Step(
                after_seconds=after,
                rings=tuple(dict.fromkeys(live)) if part["final"] is None else (),
                cancelled=cancelled,
                hears=hears,
                final=part["final"],
                trace=tuple(part["trace"]),
            )
        )
    rule = report["rule"]
    index = None
    if rule is not None and rule["position"] in rule_positions:
        index = list(rule_positions).index(rule["position"]) + 1
    when = str(report["local_time"] or "")
    at = str(report["at"] or "")
    return CallSummary(index, f"{at[:10]} {when}".strip() if when else at, tuple(steps))
