"""着信設定's forms (pure): times, targets, days, the midnight split, the test call, file edits."""

from __future__ import annotations

import tomllib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pbx.panel.forms import FormError
from pbx.panel.inbound import (
    FieldError,
    RuleDraft,
    parse_rule,
    parse_seconds,
    parse_test_call,
    split_at_midnight,
    summarize_call,
)
from pbx.panel.incoming_files import (
    PutIncoming,
    RemoveIncoming,
    RuleNotFound,
    RuleValues,
    put_incoming,
    remove_incoming,
)

WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@pytest.mark.parametrize(
    ("text", "is_end", "seconds", "typed"),
    [
        ("8:00", False, 28800, False),
        ("8:00:00", False, 28800, True),
        ("08:00:00", False, 28800, True),
        ("８：００", False, 28800, False),
        ("19:59", True, 71999, False),
        ("19:59:00", True, 71940, True),
        ("23:59:59", True, 86399, True),
        ("0:00", False, 0, False),
    ],
)
def test_times_are_read_as_the_manual_writes_them(
    text: str, is_end: bool, seconds: int, typed: bool
) -> None:
    assert parse_seconds(text, is_end=is_end) == (seconds, typed)


@pytest.mark.parametrize("text", ["", "8", "24:00", "8:60", "8:00:60", "8.00", "8:0", "abc"])
def test_a_bad_time_is_a_field_error_in_japanese_and_english(text: str) -> None:
    with pytest.raises(FormError) as caught:
        parse_seconds(text, is_end=False)
    assert "時:分 または 時:分:秒" in caught.value.message("ja")
    assert "H:MM or H:MM:SS" in caught.value.message("en")


def test_a_rule_form_is_parsed() -> None:
    draft, errors = parse_rule("1001、1002", ["1003"], ["tue", "mon", "holiday"], "8:00", "19:59")
    assert errors == {}
    assert draft == RuleDraft(
        ("1003", "1001", "1002"), ("mon", "tue", "holiday"), 28800, 71999, False
    )
    assert draft.values()["end"] == "19:59:59"


def test_every_bad_field_of_a_rule_form_is_named() -> None:
    draft, errors = parse_rule("1001,abc", [], ["mon", "someday"], "8:00", "25:00")
    assert draft is None
    assert set(errors) == {"targets", "days", "end"}
    assert "abc" in errors["targets"].message("en")
    assert errors["days"].message("ja") == "曜日を1つ以上選んでください"
    _, empty = parse_rule("", [], [], "8:00", "9:00")
    assert "targets" in empty
    assert empty["days"].message("en") == "Choose at least one day"


@pytest.mark.parametrize(
    ("start", "end", "parts"),
    [
        ("18:00", "9:00", [(64800, 86399), (0, 32399)]),  # the manual: 0:00~08:59:59
        ("18:00:00", "09:00:00", [(64800, 86399), (0, 32400)]),  # seconds typed: inclusive
        ("22:30", "6:15", [(81000, 86399), (0, 22499)]),
        ("18:00", "0:00", [(64800, 86399)]),  # nothing after midnight
        ("8:00", "19:59", [(28800, 71999)]),  # not crossing: unchanged
    ],
)
def test_a_window_across_midnight_splits_as_the_manual_writes_it(
    start: str, end: str, parts: list[tuple[int, int]]
) -> None:
    draft, _ = parse_rule("009608", [], WEEK, start, end)
    assert draft is not None
    assert draft.crosses_midnight == (len(parts) > 1 or (start == "18:00" and end == "0:00"))
    split = split_at_midnight(draft)
    assert [(p.start, p.end) for p in split] == parts
    assert all(p.targets == ("009608",) and p.days == tuple(WEEK) for p in split)


def test_the_test_call_form() -> None:
    call, errors = parse_test_call(
        {"date": "２０２６-04-07", "time": "07:59:59", "busy": "1001、1002", "offline": ""},
        "Asia/Tokyo",
    )
    assert errors == {}
    assert call is not None
    assert call.at == datetime(2026, 4, 7, 7, 59, 59, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert call.busy == ("1001", "1002")
    _, bad = parse_test_call(
        {"date": "2026/04/07", "time": "7", "busy": "", "offline": "9999"}, "Asia/Tokyo"
    )
    assert set(bad) == {"date", "time", "offline"}
    assert isinstance(bad["date"], FieldError)
    assert "YYYY-MM-DD" in bad["date"].message("en")


def test_a_simulate_report_is_summarised_with_the_forwards_over_time() -> None:
    def fork(fork_id: str, ext: str) -> dict[str, object]:
        return {"fork_id": fork_id, "kind": "ring", "extension": ext}

    report = {
        "local_time": "Tue 10:00:00 Asia/Tokyo",
        "at": "2026-04-07T10:00:00+09:00",
        "rule": {"position": 7},
        "forks": [fork("f1", "1001"), fork("f2", "1002")],
        "cancel": [],
        "final": None,
        "trace": ["rule 7 rings 1001,1002"],
        "if_unanswered": [
            {
                "after_seconds": 20.0,
                "forks": [fork("f3", "1004")],
                "cancel": ["f2"],
                "final": None,
                "trace": ["1002 did not answer: forwarded to 1004"],
            },
            {"after_seconds": 60.0, "forks": [], "cancel": [], "final": 480, "trace": []},
        ],
    }
    summary = summarize_call(report, [5, 7])
    assert summary.rule == 2
    assert summary.local_time == "2026-04-07 Tue 10:00:00 Asia/Tokyo"
    assert [(s.after_seconds, s.rings, s.hears) for s in summary.steps] == [
        (0.0, ("1001", "1002"), "ringing"),
        (20.0, ("1001", "1004"), "ringing"),
        (60.0, (), "final"),
    ]
    assert summary.steps[1].cancelled == ("1002",)
    assert summary.steps[2].final == 480


TENANT = """\
[tenant]
domain = "acme.example"

[[numbers]]
number = "0312345678"

[[numbers]]
number = "0612345678"

# Office hours.
[[incoming]]
number = "03-1234-5678"
targets = "1001,1002"            # ring both
days = ["mon", "tue", "wed", "thu", "fri"]
start = "8:00"
end = "19:59"

[[incoming]]
number = "0612345678"
targets = "1004"
days = ["mon"]
start = "0:00"
end = "23:59:59"
"""


def test_a_rule_is_replaced_in_place_keeping_what_says_the_same() -> None:
    edit = PutIncoming(
        "0312345678",
        1,
        (RuleValues(("1001", "1002"), ("mon", "tue", "wed", "thu", "fri"), 28800, 64799),),
    )
    text = put_incoming(TENANT, edit)
    assert text == TENANT.replace('end = "19:59"', 'end = "17:59:59"')


def test_rules_are_added_after_the_last_and_removed_with_their_comments() -> None:
    split = (
        RuleValues(("009608",), ("sat", "sun"), 64800, 86399),
        RuleValues(("009608",), ("sat", "sun"), 0, 32399),
    )
    text = put_incoming(TENANT, PutIncoming("0312345678", None, split))
    rules = tomllib.loads(text)["incoming"]
    assert [(r["number"], r["start"], r["end"]) for r in rules[2:]] == [
        ("0312345678", "18:00:00", "23:59:59"),
        ("0312345678", "0:00:00", "8:59:59"),
    ]
    assert text.startswith(TENANT)
    removed = remove_incoming(text, RemoveIncoming("0312345678", 1))
    assert "# ring both" not in removed
    assert "# Office hours." in removed  # above the first entry: describes the section
    assert [r["targets"] for r in tomllib.loads(removed)["incoming"]] == [
        "1004",
        "009608",
        "009608",
    ]
    with pytest.raises(RuleNotFound):
        remove_incoming(TENANT, RemoveIncoming("0612345678", 2))
    with pytest.raises(RuleNotFound):
        put_incoming(TENANT, PutIncoming("0312345678", 3, split[:1]))


def test_the_first_rule_of_a_file_makes_the_incoming_section() -> None:
    bare = TENANT[: TENANT.index("# Office hours.")]
    text = put_incoming(
        bare, PutIncoming("0612345678", None, (RuleValues(("1004",), ("mon",), 0, 86399),))
    )
    assert tomllib.loads(text)["incoming"] == [
        {
            "number": "0612345678",
            "targets": "1004",
            "days": ["mon"],
            "start": "0:00:00",
            "end": "23:59:59",
        }
    ]
