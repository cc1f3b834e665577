"""The routing trace in words: lines written by the real routing core, said in ja and en."""

from __future__ import annotations

import re

import pytest

from pbx.panel.history_words import (
    forward_words,
    sentence_pairs,
    trace_sentences,
)
from pbx.routing import CallRequest, ForkAnswered, start_call
from tests.routing.builders import from_trunk, lines, rule, snapshot, tenant, tokyo, user
from tests.routing.test_forwarding import Call

# The manual's example schedule; 1003 forwards to 1004 after 20 s without an answer.
SCHEDULE = snapshot(
    tenant(
        users=[user("1001"), user("1002"), user("1003", no_answer="1004"), user("1004")],
        incoming=[
            rule(1, "1001,1002", "8:00:00", "19:59:59"),
            rule(2, "1003", "20:00:00", "23:59:59"),
            rule(3, "009608", "0:00:00", "7:59:59"),
        ],
    )
)
TUESDAY_EVENING = tokyo("2026-11-17 20:01:00")  # a Tuesday
EVERYONE = ["1001", "1002", "1003", "1004"]


def forwarded_call_trace() -> list[str]:
    """20:01 on a Tuesday: rule 2 rings 1003, which does not answer; 1004 answers."""
    state = lines(EVERYONE)
    decision = start_call(SCHEDULE, CallRequest(from_trunk(), "0312345678"), TUESDAY_EVENING, state)
    call = Call(SCHEDULE, decision, state, TUESDAY_EVENING)
    trace = list(decision.trace)
    trace += call.no_answer("1003").trace
    fork = call.ring("1004")
    trace += call.send(ForkAnswered(fork.fork_id, fork.contacts[0])).trace
    return [*trace, "caller hung up"]


def test_the_forwarded_call_reads_as_the_issue_says_in_english() -> None:
    sentences = trace_sentences(forwarded_call_trace(), "en")
    assert [s.key for s in sentences] == [
        "inbound",
        "rule",
        "ring_no_answer",
        "forward_no_answer",
        "ring",
        "answered",
        "hung_up",
    ]
    texts = [s.text for s in sentences]
    assert texts[1] == "20:01:00 on a Tuesday: rule 2 of 0312345678 (20:00:00-23:59:59) rings 1003"
    assert texts[3] == "1003 did not answer in 20 s; forwarded to 1004"
    assert texts[5] == "1004 answered"
    assert texts[6] == "the caller hung up"


def test_the_forwarded_call_reads_in_japanese() -> None:
    texts = [s.text for s in trace_sentences(forwarded_call_trace(), "ja")]
    assert texts[0] == "09011112222 から 0312345678 への着信"
    assert texts[1] == (
        "火曜日 20:01:00: 0312345678 の着信設定 ルール2(20:00:00〜23:59:59)により 1003 を呼び出し"
    )
    assert texts[3] == "1003 が 20 秒以内に応答しなかったため 1004 へ転送(無応答時転送)"
    assert texts[6] == "発信者 が切断"


def test_after_hours_the_announcement_and_a_holiday_are_said() -> None:
    at = tokyo("2026-01-01 07:59:59")  # 元日, a Thursday
    decision = start_call(SCHEDULE, CallRequest(from_trunk(), "0312345678"), at, lines(EVERYONE))
    en = trace_sentences(decision.trace, "en")
    assert [s.key for s in en] == ["inbound", "rule", "announcement"]
    assert en[1].text.startswith("07:59:59 on a Thursday (holiday: New Year's Day): rule 3")
    assert en[1].text.endswith("rings 009608")
    ja = trace_sentences(decision.trace, "ja")
    assert ja[1].text.startswith(
        "木曜日 07:59:59(祝日: New Year's Day): 0312345678 の着信設定 ルール3"
    )
    assert ja[2].text == "時間外ガイダンス(009608)を再生"


@pytest.mark.parametrize(
    ("line", "key", "english"),
    [
        ("1001 busy -> forward busy to 1002", "forward_busy", "1001 was busy; forwarded to 1002"),
        (
            "1001 busy (486, 486) -> forward busy to 1004",
            "forward_busy",
            "1001 was busy; forwarded to 1004",
        ),
        (
            "1003 offline -> forward offline to 09012345678",
            "forward_offline",
            "1003 was offline; forwarded to 09012345678",
        ),
        (
            "1002 busy, no forward -> dropped (486)",
            "drop_busy",
            "1002 was busy and has no busy forward",
        ),
        ("1002 failed (408, 503), no forward -> dropped (480)", "drop_failed", None),
        ("nobody answered within 60s -> 480", "max_ring", "Nobody answered within 60 s (480)"),
        ("no target left to ring (486, 480) -> 480", "no_target", None),
        (
            "dial out 09012345678 via carrier presenting 09011112222, diversion 0312345678"
            " (no-answer)",
            "dial_out_diverted",
            "Dialled out to 09012345678, presenting 09011112222 (forwarded by 0312345678)",
        ),
        (
            "1002 (1002@acme.example) answered, recording, cancel the others",
            "answered_recorded",
            "1002 answered (the call is recorded)",
        ),
        ("009608 answered", "answered_009608", None),
        ("009608 played (600 packets): hang up", "played", None),
        ("the caller cancelled", "cancelled", "The caller cancelled while it rang"),
        ("1003: forward hop budget (5) used up -> 482", "hops", None),
        ("Sat 09:00:00 Asia/Tokyo: number 0312345678 no rule in force -> 480", "no_rule", None),
        ("1001 dials 0101234567890", "dials", "Extension 1001 dialled 0101234567890"),
        (
            "0101234567890: international calls are off for acme -> 403",
            "international_barred",
            None,
        ),
        (
            "no RTP from the callee for 60s: hang up",
            "silence",
            "No audio from the callee for 60 s: hung up",
        ),
    ],
)
def test_each_kind_of_line_has_its_sentence(line: str, key: str, english: str | None) -> None:
    sentences = trace_sentences([line], "en")
    assert sentences[0].key == key
    if english is not None:
        assert sentences[0].text == english
    assert trace_sentences([line], "ja")[0].key == key


def test_a_line_no_pattern_knows_is_shown_as_it_is() -> None:
    assert [(s.key, s.text) for s in trace_sentences(["something new <b>"], "ja")] == [
        ("raw", "something new <b>")
    ]


def test_every_sentence_has_both_languages_with_the_same_fields() -> None:
    for key, (ja, en) in sentence_pairs().items():
        assert ja, key
        assert en, key
        assert set(re.findall(r"{(\w+)}", ja)) == set(re.findall(r"{(\w+)}", en)), key


def test_forwards_are_said_with_their_reason() -> None:
    steps = [
        {"from": "1002", "reason": "no-answer", "to": "09012345678"},
        {"from": "1001", "reason": "user-busy", "to": "1004"},
    ]
    assert forward_words(steps, "ja") == [
        "1002 → 09012345678 (無応答時転送)",
        "1001 → 1004 (ビジー時転送)",
    ]
    assert forward_words(steps, "en") == ["1002 → 09012345678 (no answer)", "1001 → 1004 (busy)"]
