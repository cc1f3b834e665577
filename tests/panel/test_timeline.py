"""The weekly timeline (pure): bands, gaps, labels and overlaps read back by seconds."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pbx.panel.timeline import (
    Overlap,
    Segment,
    Window,
    describe_days,
    find_overlaps,
    overlap_messages,
    render_svg,
    segments,
)

NS = "{http://www.w3.org/2000/svg}"
WEEK = frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})
# The manual's example: 8:00-19:59 1001,1002; 20:00-23:59 1003; 0:00-7:59 009608.
MANUAL = [
    Window(1, ("1001", "1002"), WEEK, 8 * 3600, 20 * 3600 - 1),
    Window(2, ("1003",), WEEK, 20 * 3600, 86399),
    Window(3, ("009608",), WEEK, 0, 8 * 3600 - 1),
]


def read(svg: str, kind: str, tag: str = "rect") -> list[tuple[str, int, int, str]]:
    root = ET.fromstring(svg)
    return [
        (
            e.get("data-day", ""),
            int(e.get("data-start", "-1")),
            int(e.get("data-end", "-1")),
            e.get("data-targets", ""),
        )
        for e in root.iter(NS + tag)
        if kind in e.get("class", "").split()
    ]


def test_the_manuals_schedule_fills_every_day_with_three_bands_and_no_gap() -> None:
    svg = render_svg(MANUAL)
    bands = read(svg, "band")
    assert len(bands) == 21
    assert [b for b in bands if b[0] == "wed"] == [
        ("wed", 0, 28799, "009608"),
        ("wed", 28800, 71999, "1001,1002"),
        ("wed", 72000, 86399, "1003"),
    ]
    assert read(svg, "gap") == []
    texts = list(ET.fromstring(svg).iter(NS + "text"))
    labels = {e.text for e in texts if e.get("class") == "label"}
    assert labels == {"1001, 1002", "1003", "009608 時間外ガイダンス"}
    days = [e.get("data-day") for e in texts if e.get("class") == "day"]
    assert days == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def test_bands_are_placed_on_the_hour_axis_by_time() -> None:
    root = ET.fromstring(render_svg(MANUAL))
    hours = {
        int(e.get("data-hour", "0")): float(e.get("x", "0"))
        for e in root.iter(NS + "text")
        if e.get("class") == "hour"
    }
    band = next(
        e
        for e in root.iter(NS + "rect")
        if e.get("data-day") == "mon" and e.get("data-start") == "28800"
    )
    x, width = float(band.get("x", "0")), float(band.get("width", "0"))
    assert x == pytest.approx(hours[8])
    assert x + width == pytest.approx(hours[20])


def test_gaps_are_the_seconds_no_rule_covers_per_day() -> None:
    weekdays = Window(1, ("1001",), frozenset({"mon", "tue", "wed", "thu", "fri"}), 32400, 64799)
    svg = render_svg([weekdays], lang="en")
    gaps = read(svg, "gap")
    assert ("mon", 0, 32399, "") in gaps
    assert ("mon", 64800, 86399, "") in gaps
    assert ("sat", 0, 86399, "") in gaps
    assert ("sun", 0, 86399, "") in gaps
    assert len(gaps) == 5 * 2 + 2
    titles = [e.text for e in ET.fromstring(svg).iter(NS + "title")]
    assert "Sat 0:00:00–23:59:59 refused (480)" in titles


def test_the_holiday_row_appears_only_with_holiday_rules_and_shows_only_them() -> None:
    assert "holiday" not in {s.day for s in segments(MANUAL)}
    holiday = Window(4, ("1004",), frozenset({"holiday"}), 36000, 57599)
    drawn = segments([*MANUAL, holiday])
    assert [s for s in drawn if s.day == "holiday" and s.kind == "band"] == [
        Segment("holiday", 36000, 57599, "band", 4, ("1004",))
    ]
    assert [(s.start, s.end) for s in drawn if s.day == "holiday" and s.kind == "gap"] == [
        (0, 35999),
        (57600, 86399),
    ]


def test_an_edited_rule_that_overlaps_is_red_where_it_overlaps_with_the_message() -> None:
    editing = Window(0, ("1004",), frozenset({"mon", "tue"}), 19 * 3600, 21 * 3600 - 1)
    overlaps = find_overlaps(editing, MANUAL)
    assert overlaps == (
        Overlap("mon", 68400, 71999, 1),
        Overlap("tue", 68400, 71999, 1),
        Overlap("mon", 72000, 75599, 2),
        Overlap("tue", 72000, 75599, 2),
    )
    assert overlap_messages(overlaps, "ja") == [
        "月・火 19:00:00–19:59:59 が着信設定1と重なっています",
        "月・火 20:00:00–20:59:59 が着信設定2と重なっています",
    ]
    assert overlap_messages(overlaps[:1], "en") == ["Mon 19:00:00–19:59:59 overlaps rule 1"]
    svg = render_svg(MANUAL, editing)
    assert sorted(read(svg, "overlap")) == [
        ("mon", 68400, 71999, ""),
        ("mon", 72000, 75599, ""),
        ("tue", 68400, 71999, ""),
        ("tue", 72000, 75599, ""),
    ]
    assert read(svg, "editing") == [
        ("mon", 68400, 75599, "1004"),
        ("tue", 68400, 75599, "1004"),
    ]


def test_editing_a_rule_replaces_its_own_band_and_touching_windows_do_not_overlap() -> None:
    moved = Window(2, ("1003",), WEEK, 20 * 3600, 86399 - 3600)
    assert find_overlaps(moved, [w for w in MANUAL if w.index != 2]) == ()
    svg = render_svg(MANUAL, moved)
    assert read(svg, "overlap") == []
    assert ("fri", 82800, 86399, "") in read(svg, "gap")
    assert len([b for b in read(svg, "band") if b[0] == "fri"]) == 3


def test_one_second_overlap_is_found() -> None:
    early = Window(0, ("1003",), frozenset({"sun"}), 71999, 72000)
    assert find_overlaps(early, MANUAL) == (
        Overlap("sun", 71999, 71999, 1),
        Overlap("sun", 72000, 72000, 2),
    )


def test_text_is_escaped() -> None:
    hostile = Window(1, ('<script>"x"</script>',), frozenset({"mon"}), 0, 86399)
    svg = render_svg([hostile])
    assert "<script>" not in svg
    ET.fromstring(svg)


@pytest.mark.parametrize(
    ("days", "lang", "text"),
    [
        ({"mon", "tue", "wed", "thu", "fri"}, "ja", "月〜金"),
        ({"mon", "tue", "wed", "thu", "fri"}, "en", "Mon–Fri"),
        ({"sat", "sun", "holiday"}, "ja", "土・日・祝日"),
        ({"mon", "wed", "thu", "fri", "sun"}, "en", "Mon, Wed–Fri, Sun"),
    ],
)
def test_days_are_described_in_week_order(days: set[str], lang: str, text: str) -> None:
    assert describe_days(days, lang) == text  # type: ignore[arg-type]
