"""SDP re-anchoring across the B2BUA (``pbx.media.anchor``): each leg sees only the relay."""

from __future__ import annotations

import pytest

from pbx.media.anchor import MediaAnchor
from pbx.media.g711 import Codec
from pbx.media.latch import Side
from pbx.media.sdp import Direction, audio_stream, parse_sdp

HOST = "203.0.113.1"
A_PORT, B_PORT = 20000, 20002


def sdp(address: str, port: int, *extra: str, pts: str = "0 8 101", session: int = 7) -> bytes:
    lines = [
        "v=0",
        f"o=x {session} {session} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {pts}",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


CALLER = sdp("192.0.2.10", 4000)
CALLEE = sdp("192.0.2.20", 6000, pts="8 101")


def anchor() -> MediaAnchor:
    return MediaAnchor(parse_sdp(CALLER), HOST, A_PORT, B_PORT, session_id=100)


def described(body: bytes) -> tuple[str | None, int, int, str]:
    sd = parse_sdp(body)
    stream = audio_stream(sd)
    assert stream is not None
    return stream.address, stream.port, sd.origin.session_version, sd.origin.session_id


def test_the_callee_is_offered_the_relays_b_port_with_its_own_origin() -> None:
    assert described(anchor().offer_to_callee()) == (HOST, B_PORT, 101, "101")


def test_the_callees_answer_reaches_the_caller_on_the_a_port_and_names_the_callee() -> None:
    a = anchor()
    anchored = a.answer_to_caller(CALLEE)
    assert anchored is not None
    assert described(anchored.body) == (HOST, A_PORT, 100, "100")
    assert anchored.remote is not None
    assert anchored.remote.side is Side.B
    assert (anchored.remote.stream.address, anchored.remote.stream.port) == ("192.0.2.20", 6000)
    # The same answer again (183 then 200) keeps the caller's o= version: nothing changed.
    again = a.answer_to_caller(CALLEE)
    assert again is not None
    assert described(again.body)[2] == 100


@pytest.mark.parametrize("body", [b"", b"not sdp at all"])
def test_an_unreadable_answer_is_not_anchored(body: bytes) -> None:
    assert anchor().answer_to_caller(body) is None


@pytest.mark.parametrize(
    ("offerer", "to_port", "offered_version", "answered_version"),
    [(Side.A, B_PORT, 102, 101), (Side.B, A_PORT, 101, 102)],
)
def test_a_mid_call_offer_and_its_answer_cross_with_each_sides_version_raised(
    offerer: Side, to_port: int, offered_version: int, answered_version: int
) -> None:
    a = anchor()
    hold = sdp("192.0.2.30", 7000, "a=sendonly")
    offered = a.offer_across(offerer, hold)
    assert offered is not None
    assert offered.remote is not None
    assert offered.remote.side is offerer
    assert offered.remote.stream.direction is Direction.SENDONLY
    address, port, version, _ = described(offered.body)
    assert (address, port) == (HOST, to_port)
    assert version == offered_version
    answered = a.answer_across(offerer, sdp("192.0.2.40", 8000, "a=recvonly"))
    assert answered is not None
    assert answered.remote is not None
    assert answered.remote.side is offerer.other
    address, port, version, _ = described(answered.body)
    assert (address, port) == (HOST, A_PORT if offerer is Side.A else B_PORT)
    assert version == answered_version


def test_an_answer_without_a_pending_offer_or_unreadable_is_not_anchored() -> None:
    a = anchor()
    assert a.answer_across(Side.A, CALLEE) is None
    assert a.offer_across(Side.A, b"garbage") is None
    assert a.offer_across(Side.A, CALLER) is not None
    assert a.answer_across(Side.A, b"garbage") is None


def test_we_answer_the_callers_offer_ourselves_with_its_preferred_g711_codec() -> None:
    answer = anchor().answer_ourselves()
    assert answer is not None
    assert answer.codec is Codec.PCMU
    assert described(answer.body)[:2] == (HOST, A_PORT)


def test_an_offer_without_g711_cannot_be_answered_ourselves() -> None:
    offer = parse_sdp(sdp("192.0.2.10", 4000, "a=rtpmap:9 G722/8000", pts="9"))
    assert MediaAnchor(offer, HOST, A_PORT, B_PORT, 1).answer_ourselves() is None
