"""Malformed SDP (issue 17 item 8): each case of tests/media/sdp_cases.py gets its answer.

``parse_sdp`` raising is the call engine's 400; ``audio_stream`` None its 488 (pbx/call/core.py,
``_on_started``), both before any RTP port is taken.
"""

from __future__ import annotations

import pytest

from pbx.errors import RemoteProtocolError
from pbx.media.sdp import audio_stream, make_origin, parse_sdp, rewrite_sdp
from pbx.sip.limits import MessageCaps, check_caps
from tests.media.sdp_cases import ACCEPTED, SdpCase, all_cases, named_cases, offer

CASES = all_cases()


def outcome(body: bytes) -> int:
    """The status the call engine answers an INVITE carrying ``body`` with (0: goes on)."""
    try:
        sd = parse_sdp(body)
    except RemoteProtocolError as exc:
        return exc.status_hint
    stream = audio_stream(sd)
    return ACCEPTED if stream is not None and stream.active else 488


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_malformed_offer_gets_its_answer(case: SdpCase) -> None:
    assert outcome(case.body) == case.expected


def test_the_case_list_covers_both_answers_and_acceptance() -> None:
    counts = {code: sum(c.expected == code for c in CASES) for code in (400, 488, ACCEPTED)}
    print(f"{len(CASES)} cases: {counts}")
    assert all(n >= 10 for n in counts.values())


@pytest.mark.parametrize(
    "name", ["bad_stream_then_good", "g729_stream_then_pcmu", "video_and_audio"]
)
def test_a_bad_stream_beside_a_good_one_is_rejected_and_the_good_one_relayed(name: str) -> None:
    case = next(c for c in named_cases() if c.name == name)
    sd = parse_sdp(case.body)
    stream = audio_stream(sd)
    assert stream is not None
    assert stream.port == 40002
    assert stream.address == "127.0.0.3"
    us = "203.0.113.1"
    rewritten = rewrite_sdp(sd, address=us, port=20000, origin=make_origin(1, us))
    assert [m.port for m in rewritten.media] == [0, 20000]  # same m= count (RFC 3264 6)


def test_the_hold_address_is_usable() -> None:
    stream = audio_stream(parse_sdp(offer(c="IN IP4 0.0.0.0")))
    assert stream is not None
    assert stream.active
    assert stream.on_hold


def test_an_ip6_stream_is_usable() -> None:
    stream = audio_stream(parse_sdp(offer(c="IN IP6 2001:db8::5")))
    assert stream is not None
    assert stream.address == "2001:db8::5"


def test_a_64_kb_attribute_line_is_refused_by_the_message_caps_before_sdp() -> None:
    body = offer(media=("m=audio 40000 RTP/AVP 0", "a=x-junk:" + "A" * 65_536))
    head = b"INVITE sip:0312345678@acme.example SIP/2.0\r\nContent-Length: %d\r\n\r\n" % len(body)
    refused = check_caps(head + body, MessageCaps())
    assert refused is not None
    assert refused.status == 513
    small = offer(media=("m=audio 40000 RTP/AVP 0", "a=x-junk:" + "A" * 17_000))
    refused = check_caps(head + small, MessageCaps())
    assert refused is not None
    assert refused.status == 413
