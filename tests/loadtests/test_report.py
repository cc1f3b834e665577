"""The load suite's report (issue 19): plots whose points lie inside their axes, with units on
both axes; a headline that compares like with like; sub-millisecond means; the soak state as a
table.

The plots are made by the suite's own functions from the data of a real quick run
(``data/quick-run.json``: ``python -m loadtests.suite --quick`` of 2026-12-07 on the 2-CPU
development VM; the run takes about 4 minutes, too long for the test suite).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from loadtests.suite import (
    StepRecord,
    direct_rates,
    headline,
    headline_cells,
    ms,
    plots,
    soak_plots,
    soak_state_table,
)
from loadtests.svg import Series, line_chart, ticks

DATA = Path(__file__).parent / "data" / "quick-run.json"
SVG = "{http://www.w3.org/2000/svg}"


def quick_run() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
    return result


def points_and_frame(path: Path) -> tuple[list[tuple[float, float]], tuple[float, ...]]:
    """Every drawn data point (circles and path vertices) and the plot area (x0, y0, x1, y1)."""
    root = ET.parse(path).getroot()
    frame = root.find(f"{SVG}rect[@class='plot-area']")
    assert frame is not None, path
    x, y = float(frame.get("x", "")), float(frame.get("y", ""))
    area = (x, y, x + float(frame.get("width", "")), y + float(frame.get("height", "")))
    points = [(float(c.get("cx", "")), float(c.get("cy", ""))) for c in root.iter(f"{SVG}circle")]
    for line in root.iter(f"{SVG}path"):
        for px, py in re.findall(r"[ML](-?[0-9.]+),(-?[0-9.]+)", line.get("d", "")):
            points.append((float(px), float(py)))
    return points, area


def axis_labels(path: Path) -> list[str]:
    """The x-axis label (below the plot) and the y-axis label (rotated)."""
    root = ET.parse(path).getroot()
    texts = list(root.iter(f"{SVG}text"))
    rotated = [t.text or "" for t in texts if "rotate" in t.get("transform", "")]
    bottom = max(texts, key=lambda t: float(t.get("y", "0")))
    return [bottom.text or "", *rotated]


def assert_inside(path: Path) -> int:
    points, (x0, y0, x1, y1) = points_and_frame(path)
    outside = [
        p for p in points if not (x0 - 0.05 <= p[0] <= x1 + 0.05 and y0 - 0.05 <= p[1] <= y1 + 0.05)
    ]
    assert not outside, (path.name, outside)
    for label in axis_labels(path):
        assert re.search(r"\([^)]+\)", label), (path.name, label)  # a unit in brackets
    return len(points)


def test_the_quick_runs_plots_draw_every_point_inside_their_axes_with_units(
    tmp_path: Path,
) -> None:
    run = quick_run()
    names = []
    for section, rows in run["steps"].items():
        records = [StepRecord(**row) for row in rows]
        names += plots(tmp_path, section, records)
    soak_plots(tmp_path, run["soak"])
    names += ["soak_memory.svg", "soak_state.svg"]
    assert len(names) == 10
    drawn = sum(assert_inside(tmp_path / name) for name in names)
    assert drawn > 100


@pytest.mark.parametrize(
    ("low", "high"), [(0, 3.7), (0, 244), (179.3, 179.45), (1500, 1500), (0.02, 62), (0, 1)]
)
def test_ticks_span_the_data(low: float, high: float) -> None:
    values = ticks(low, high)
    assert values[0] <= low
    assert values[-1] >= high  # before issue 19 the last tick could stop below the maximum
    assert len(values) <= 12


def test_a_maximum_between_two_ticks_stays_under_the_title(tmp_path: Path) -> None:
    path = line_chart(
        tmp_path / "c.svg",
        "t",
        "rate (calls/s)",
        "latency (ms)",
        [Series("a", [(50, 3.42), (150, 2.84), (300, 62.0)]), Series("b", [(600, 0.02)])],
    )
    assert assert_inside(path) == 3 + 3 + 1


def record(target: str, rate: int, passed: bool) -> StepRecord:
    return StepRecord("calls", target, rate, rate * 5, rate * 5, 0, 0.0, 5.0, passed=passed)


def test_the_baseline_ramps_from_the_rate_the_server_failed_at_until_its_own_limit() -> None:
    pbx = [record("pbx", 100, True), record("pbx", 200, True), record("pbx", 300, False)]
    assert direct_rates((200, 400, 800), pbx) == (300, 400, 800, *(800 * 2**k for k in range(1, 7)))
    held_all = [record("pbx", 100, True), record("pbx", 200, True)]
    assert direct_rates((200, 400), held_all)[:2] == (400, 800)


def test_the_headline_ratio_is_given_only_against_the_baselines_own_limit() -> None:
    records = [
        record("pbx", 200, True),
        record("pbx", 300, False),
        record("direct", 300, True),
        record("direct", 600, True),
        record("direct", 1200, False),
    ]
    h = headline("calls", records)
    assert (h["ratio"], h["direct_rate"], h["direct_failed_at"]) == (200 / 600, 600, 1200)
    _step, pbx, direct, ratio, first, _latency, _cpu = headline_cells(h)
    assert (pbx, direct, ratio) == ("200 calls/s", "600 (its limit: failed at 1200)", "33 %")
    assert first == "the server (failed at 300/s, which SIPp alone held)"

    capped = headline("calls", [*records[:3], record("direct", 600, True)])
    _, _, direct, ratio, _, _, _ = headline_cells(capped)
    assert capped["ratio"] is None
    assert direct == ">= 600 (every rate tried held: not its limit)"
    assert ratio == "not given (baseline not at its limit)"

    harness = headline("calls", [*records[:2], record("direct", 300, False)])
    assert harness["ran_out_first"] == "the harness (SIPp alone failed at 300/s too)"


def test_latencies_keep_sub_millisecond_means_and_whole_ms_percentiles() -> None:
    assert [ms(v) for v in (0.0, 0.34, 3.42, 4.0, 62.4, None)] == [
        "< 1",
        "0.34",
        "3.42",
        "4",
        "62",
        "-",
    ]
    run = quick_run()
    calls = [StepRecord(**row) for row in run["steps"]["calls"]]
    assert all(0 < r.answer_ms["mean"] < 1000 for r in calls)


def test_the_soak_state_is_a_table() -> None:
    lines = soak_state_table(quick_run()["soak"])
    assert lines[0].startswith("| held by the server (`/status`) | when the traffic stopped |")
    assert lines[1] == "|---|---|---|"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| transactions",
        "| calls_active",
        "| dialogs",
        "| rtp_ports_in_use",
    ]
    assert not any("{" in line for line in lines)
