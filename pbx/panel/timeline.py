"""The weekly timeline of one number's inbound rules, as an SVG picture (pure).

A row per day (月..日, plus 祝日 when a rule of the number lists holidays), an hour axis, each
rule a coloured band labelled with its targets, the seconds no rule covers drawn as hatched gaps
(calls then are refused with 480), and a rule being edited drawn with a dashed outline, its
seconds that another rule already holds in red. Day semantics are the routing core's
(``pbx.routing.calendar``): a weekday row shows the rules listing that weekday; the holiday row
shows only the rules listing ``holiday``, because on a holiday those alone apply once any exists.

The picture is plain markup the panel writes inline (no script, no ``style`` attribute: the
panel's CSP is ``default-src 'self'``), so colours are SVG presentation attributes. Every shape
carries ``data-day``, ``data-start`` and ``data-end`` (seconds since midnight, end inclusive) and
a class ``band``, ``gap`` or ``overlap``, so tests read the picture by time, not by pixels.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pbx.config.model import WEEKDAYS, DayName

__all__ = [
    "LAST_SECOND",
    "Overlap",
    "Segment",
    "Window",
    "clock",
    "day_rows",
    "describe_days",
    "find_overlaps",
    "overlap_messages",
    "render_svg",
    "segments",
]

Lang = Literal["ja", "en"]
LAST_SECOND = 86399
AFTER_HOURS = "009608"
HOLIDAY: DayName = "holiday"

_DAY_LABELS: dict[str, tuple[str, str]] = {
    "mon": ("月", "Mon"),
    "tue": ("火", "Tue"),
    "wed": ("水", "Wed"),
    "thu": ("木", "Thu"),
    "fri": ("金", "Fri"),
    "sat": ("土", "Sat"),
    "sun": ("日", "Sun"),
    "holiday": ("祝日", "Holiday"),
}
_TEXTS: dict[str, tuple[str, str]] = {
    "overlap": (
        "{days} {start}–{end} が着信設定{other}と重なっています",
        "{days} {start}–{end} overlaps rule {other}",
    ),
    "gap": ("着信不可(480)", "refused (480)"),
    "after_hours": ("時間外ガイダンス", "after-hours announcement"),
    "rule": ("着信設定{index}", "rule {index}"),
    "editing": ("編集中", "being edited"),
    "title": ("週間の着信スケジュール", "Weekly inbound schedule"),
}
# Dark enough for white labels; rule N takes colour N-1 (cycling).
_PALETTE = ("#1f5fa8", "#2e7d32", "#b85c00", "#00838f", "#6a1b9a", "#ad1457", "#5d4037", "#37474f")
_AFTER_HOURS_COLOUR = "#6d6875"
_OVERLAP_COLOUR = "#d32f2f"

# Geometry (user units; the picture scales to its container).
_WIDTH = 960
_LEFT = 52
_RIGHT = 14
_TOP = 24
_ROW = 30
_ROW_GAP = 6
_PLOT = _WIDTH - _LEFT - _RIGHT
_CHAR = 7.2  # width of one label character at font-size 12 (wide CJK counts twice)


def _text(key: str, lang: Lang, **params: object) -> str:
    japanese, english = _TEXTS[key]
    return (english if lang == "en" else japanese).format(**params)


@dataclass(frozen=True, slots=True)
class Window:
    """One rule as the timeline sees it: its number among the number's rules and its when."""

    index: int  # 1-based among the rules of the number (0: a new rule being added)
    targets: tuple[str, ...]
    days: frozenset[str]
    start: int  # seconds since midnight, inclusive
    end: int  # inclusive


@dataclass(frozen=True, slots=True)
class Segment:
    """One shape of a row: a rule's band, a gap, or an overlap of the edited rule."""

    day: str
    start: int
    end: int
    kind: Literal["band", "gap", "overlap"]
    rule: int | None = None  # band: its rule; overlap: the rule already holding the seconds
    targets: tuple[str, ...] = ()
    editing: bool = False


@dataclass(frozen=True, slots=True)
class Overlap:
    """Seconds of one day that the edited rule shares with another rule."""

    day: str
    start: int
    end: int
    other: int  # the other rule's index


def clock(seconds: int) -> str:
    """``8:00:00``, written as the manual writes times."""
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def day_rows(windows: Iterable[Window]) -> tuple[str, ...]:
    """Mon..Sun, plus the holiday row when any rule lists holidays."""
    if any(HOLIDAY in w.days for w in windows):
        return (*WEEKDAYS, HOLIDAY)
    return tuple(WEEKDAYS)


def _gaps(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    result: list[tuple[int, int]] = []
    cursor = 0
    for start, end in sorted(spans):
        if start > cursor:
            result.append((cursor, start - 1))
        cursor = max(cursor, end + 1)
    if cursor <= LAST_SECOND:
        result.append((cursor, LAST_SECOND))
    return result


def find_overlaps(editing: Window, others: Iterable[Window]) -> tuple[Overlap, ...]:
    """The seconds, day by day, that ``editing`` shares with one of ``others``."""
    found: list[Overlap] = []
    for other in others:
        low, high = max(editing.start, other.start), min(editing.end, other.end)
        if low > high:
            continue
        for day in (*WEEKDAYS, HOLIDAY):
            if day in editing.days and day in other.days:
                found.append(Overlap(day, low, high, other.index))
    order: dict[str, int] = {day: n for n, day in enumerate((*WEEKDAYS, HOLIDAY))}
    return tuple(sorted(found, key=lambda o: (o.other, order[o.day], o.start)))


def describe_days(days: Iterable[str], lang: Lang) -> str:
    """Days in week order; three or more consecutive weekdays as a range (月〜金, Mon–Fri)."""
    chosen = set(days)
    parts: list[str] = []
    run: list[str] = []

    def close() -> None:
        names = [_DAY_LABELS[d][1 if lang == "en" else 0] for d in run]
        if len(names) >= 3:
            parts.append(f"{names[0]}〜{names[-1]}" if lang == "ja" else f"{names[0]}–{names[-1]}")
        else:
            parts.extend(names)
        run.clear()

    for day in WEEKDAYS:
        if day in chosen:
            run.append(day)
        elif run:
            close()
    if run:
        close()
    if HOLIDAY in chosen:
        parts.append(_DAY_LABELS[HOLIDAY][1 if lang == "en" else 0])
    return ("・" if lang == "ja" else ", ").join(parts)


def overlap_messages(overlaps: Sequence[Overlap], lang: Lang) -> list[str]:
    """One line per other rule and stretch of seconds, naming the days: the form's message."""
    grouped: dict[tuple[int, int, int], list[str]] = {}
    for overlap in overlaps:
        grouped.setdefault((overlap.other, overlap.start, overlap.end), []).append(overlap.day)
    return [
        _text(
            "overlap",
            lang,
            days=describe_days(days, lang),
            start=clock(start),
            end=clock(end),
            other=other,
        )
        for (other, start, end), days in grouped.items()
    ]


def segments(windows: Sequence[Window], editing: Window | None = None) -> list[Segment]:
    """The shapes of every row: bands of the rules, the gaps, and the edited rule's overlaps.

    ``editing`` replaces the window of the same index in ``windows`` (index 0: a new rule).
    """
    others = [w for w in windows if editing is None or w.index != editing.index]
    shown = [*others, *([editing] if editing is not None else [])]
    overlaps = find_overlaps(editing, others) if editing is not None else ()
    out: list[Segment] = []
    for day in day_rows(shown):
        on_day = sorted((w for w in shown if day in w.days), key=lambda w: (w.start, w.index))
        for w in on_day:
            out.append(Segment(day, w.start, w.end, "band", w.index, w.targets, w is editing))
        for start, end in _gaps([(w.start, w.end) for w in on_day]):
            out.append(Segment(day, start, end, "gap"))
        for o in overlaps:
            if o.day == day:
                out.append(Segment(day, o.start, o.end, "overlap", o.other))
    return out


# --- drawing ---------------------------------------------------------------------------------


def _x(seconds: int) -> float:
    return round(_LEFT + seconds * _PLOT / 86400, 2)


def _attrs(**values: object) -> str:
    return " ".join(
        f'{name.rstrip("_").replace("_", "-")}="{html.escape(str(value), quote=True)}"'
        for name, value in values.items()
    )


def _label(targets: tuple[str, ...], lang: Lang) -> str:
    if targets == (AFTER_HOURS,):
        return f"{AFTER_HOURS} {_text('after_hours', lang)}"
    return ", ".join(targets)


def _fit(text: str, width: float) -> str:
    """``text`` cut (with …) to what fits in ``width``; wide characters count double."""
    room = int((width - 8) / _CHAR)
    used = 0
    for n, char in enumerate(text):
        used += 2 if ord(char) > 0x2E7F else 1
        if used > room:
            return text[: max(0, n - 1)] + "…" if n > 1 else ""
    return text


def _colour(segment: Segment) -> str:
    if segment.targets == (AFTER_HOURS,):
        return _AFTER_HOURS_COLOUR
    return _PALETTE[((segment.rule or 1) - 1) % len(_PALETTE)]


def render_svg(windows: Sequence[Window], editing: Window | None = None, lang: Lang = "ja") -> str:
    """The timeline as an ``<svg>`` element (escaped text; safe to insert as markup)."""
    shown = [w for w in windows if editing is None or w.index != editing.index]
    rows = day_rows([*shown, *([editing] if editing is not None else [])])
    height = _TOP + len(rows) * (_ROW + _ROW_GAP) + 4
    title = _text("title", lang)
    out = [
        "<svg "
        + _attrs(
            xmlns="http://www.w3.org/2000/svg",
            class_="timeline",
            viewBox=f"0 0 {_WIDTH} {height}",
            width="100%",
            role="img",
            aria_label=title,
            font_size="12",
        )
        + ">",
        f"<title>{html.escape(title)}</title>",
        '<defs><pattern id="timeline-gap" width="8" height="8" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="8" height="8" fill="#f4f5f7"/>'
        '<line x1="0" y1="0" x2="0" y2="8" stroke="#c3c9d0" stroke-width="3"/></pattern></defs>',
    ]
    top_of = {day: _TOP + n * (_ROW + _ROW_GAP) for n, day in enumerate(rows)}
    bottom = _TOP + len(rows) * (_ROW + _ROW_GAP) - _ROW_GAP
    for hour in range(25):
        x = _x(hour * 3600)
        out.append(
            "<line "
            + _attrs(class_="hour", x1=x, y1=_TOP - 4, x2=x, y2=bottom, stroke="#d9e2ec")
            + "/>"
        )
        if hour % 2 == 0:
            anchor = "start" if hour == 0 else "end" if hour == 24 else "middle"
            out.append(
                "<text "
                + _attrs(
                    class_="hour",
                    data_hour=hour,
                    x=x,
                    y=_TOP - 8,
                    text_anchor=anchor,
                    fill="#616e7c",
                )
                + f">{hour}:00</text>"
            )
    for day in rows:
        y = top_of[day]
        name = _DAY_LABELS[day][1 if lang == "en" else 0]
        out.append(
            "<text "
            + _attrs(
                class_="day",
                data_day=day,
                x=_LEFT - 8,
                y=y + _ROW / 2 + 4,
                text_anchor="end",
                font_weight="bold",
            )
            + f">{html.escape(name)}</text>"
        )
    drawn = segments(windows, editing)
    for kind in ("gap", "band", "overlap"):
        for seg in (s for s in drawn if s.kind == kind):
            out.extend(_shape(seg, top_of[seg.day], lang))
    out.append("</svg>")
    return "\n".join(out)


def _shape(seg: Segment, y: int, lang: Lang) -> list[str]:
    x0, x1 = _x(seg.start), _x(seg.end + 1)
    width = round(x1 - x0, 2)
    span = f"{clock(seg.start)}–{clock(seg.end)}"
    common = {
        "data_day": seg.day,
        "data_start": seg.start,
        "data_end": seg.end,
    }
    day = _DAY_LABELS[seg.day][1 if lang == "en" else 0]
    if seg.kind == "gap":
        tip = f"{day} {span} {_text('gap', lang)}"
        shape = _attrs(
            class_="gap",
            **common,
            x=x0,
            y=y,
            width=width,
            height=_ROW,
            fill="url(#timeline-gap)",
            stroke="#c3c9d0",
        )
        parts = [f"<rect {shape}><title>{html.escape(tip)}</title></rect>"]
        label = _fit(_text("gap", lang), width)
        if label:
            parts.append(
                "<text "
                + _attrs(class_="gap-label", **common, x=x0 + 4, y=y + _ROW / 2 + 4, fill="#616e7c")
                + f">{html.escape(label)}</text>"
            )
        return parts
    if seg.kind == "overlap":
        message = overlap_messages([Overlap(seg.day, seg.start, seg.end, seg.rule or 0)], lang)
        shape = _attrs(
            class_="overlap",
            **common,
            data_rule=seg.rule or 0,
            x=x0,
            y=y - 2,
            width=max(width, 2),
            height=_ROW + 4,
            fill=_OVERLAP_COLOUR,
            fill_opacity="0.85",
            stroke=_OVERLAP_COLOUR,
            stroke_width="2",
        )
        return [f"<rect {shape}><title>{html.escape(message[0])}</title></rect>"]
    targets = ",".join(seg.targets)
    rule = _text("rule", lang, index=seg.rule) if seg.rule else _text("editing", lang)
    label = _label(seg.targets, lang)
    tip = f"{rule}: {day} {span} {label}"
    classes = "band editing" if seg.editing else "band"
    extra: dict[str, object] = (
        {"stroke": "#0f2d52", "stroke_width": "2", "stroke_dasharray": "6 3"}
        if seg.editing
        else {"stroke": "#ffffff"}
    )
    shape = _attrs(
        class_=classes,
        **common,
        data_rule=seg.rule or 0,
        data_targets=targets,
        x=x0,
        y=y,
        width=width,
        height=_ROW,
        rx="3",
        fill=_colour(seg),
        **extra,
    )
    parts = [f"<rect {shape}><title>{html.escape(tip)}</title></rect>"]
    shown = _fit(label, width)
    if shown:
        parts.append(
            "<text "
            + _attrs(
                class_="label",
                **common,
                data_targets=targets,
                x=x0 + 5,
                y=y + _ROW / 2 + 4,
                fill="#ffffff",
            )
            + f">{html.escape(shown)}</text>"
        )
    return parts
