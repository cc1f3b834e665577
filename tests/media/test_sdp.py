"""SDP parsing (RFC 4566) and the B2BUA's offer/answer rewriting (RFC 3264)."""

from __future__ import annotations

import pytest

from pbx.errors import RemoteProtocolError
from pbx.media.g711 import Codec
from pbx.media.sdp import (
    Direction,
    answer_sdp,
    audio_stream,
    build_sdp,
    make_origin,
    parse_sdp,
    rewrite_sdp,
)

US = "203.0.113.1"
ORIGIN = make_origin(4242, US)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


HEAD = ("v=0", "o=alice 2890844526 2890844526 IN IP4 192.0.2.5", "s=call", "c=IN IP4 192.0.2.5")

MANY_CODECS = sdp(
    *HEAD,
    "t=0 0",
    "m=audio 49170 RTP/AVP 9 0 8 18 101 96 13",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtpmap:96 opus/48000/2",
    "a=rtpmap:13 CN/8000",
    "a=ptime:20",
    "a=rtcp:49171",
    "a=ice-ufrag:abcd",
    "a=candidate:1 1 UDP 2130706431 10.0.0.5 49170 typ host",
    "a=sendrecv",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 H264/90000",
)


def rewritten_lines(body: bytes, **kw: object) -> list[str]:
    out = rewrite_sdp(parse_sdp(body), address=US, port=20000, origin=ORIGIN, **kw)  # type: ignore[arg-type]
    return build_sdp(out).decode().splitlines()


def test_parse_then_build_reproduces_the_body() -> None:
    assert build_sdp(parse_sdp(MANY_CODECS)) == MANY_CODECS


def test_parse_reads_the_audio_stream() -> None:
    stream = audio_stream(parse_sdp(MANY_CODECS))
    assert stream is not None
    assert (stream.address, stream.port) == ("192.0.2.5", 49170)
    assert stream.codecs == (Codec.PCMU, Codec.PCMA)
    assert stream.codec is Codec.PCMU
    assert stream.telephone_event == 101
    assert stream.direction is Direction.SENDRECV
    assert stream.ptime == 20
    assert stream.active
    assert not stream.on_hold


def test_offer_with_many_codecs_keeps_pcmu_pcma_and_telephone_event() -> None:
    assert rewritten_lines(MANY_CODECS) == [
        "v=0",
        "o=pbx 4242 4242 IN IP4 203.0.113.1",
        "s=-",
        "c=IN IP4 203.0.113.1",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "m=video 0 RTP/AVP 99",  # RFC 3264 §6: same m-line count; a stream we drop has port 0
    ]


def test_offerer_order_is_kept_and_static_types_without_rtpmap_are_known() -> None:
    body = sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 8 0 97", "a=rtpmap:97 telephone-event/8000")
    lines = rewritten_lines(body)
    assert "m=audio 20000 RTP/AVP 8 0 97" in lines
    assert lines[lines.index("m=audio 20000 RTP/AVP 8 0 97") + 1] == "a=rtpmap:8 PCMA/8000"


def test_a_static_type_remapped_by_rtpmap_is_not_g711() -> None:
    body = sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 0 8", "a=rtpmap:0 G729/8000")
    assert "m=audio 20000 RTP/AVP 8" in rewritten_lines(body)


def test_no_common_codec_rejects_the_stream_with_port_zero() -> None:
    body = sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 9 18 101", "a=rtpmap:101 telephone-event/8000")
    lines = rewritten_lines(body)
    assert "m=audio 0 RTP/AVP 9 18 101" in lines
    rewritten = rewrite_sdp(parse_sdp(body), address=US, port=20000, origin=ORIGIN)
    assert audio_stream(rewritten) is None  # nothing to relay: the engine answers 488
    # No stream we could relay (harden: a G.711-less stream is skipped like a rejected one).
    assert audio_stream(parse_sdp(body)) is None


def test_srtp_without_a_usable_key_is_not_active() -> None:
    # Issue #18: SAVP streams are relayed; one whose a=crypto cannot be used gets 488.
    body = sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 x")
    assert "m=audio 20000 RTP/SAVP 0" in rewritten_lines(body)
    assert not any(line.startswith("a=crypto") for line in rewritten_lines(body))
    stream = audio_stream(parse_sdp(body))
    assert stream is not None
    assert stream.secure
    assert stream.crypto is None
    assert not stream.active


def test_only_the_first_audio_stream_is_relayed() -> None:
    body = sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 0", "m=audio 4002 RTP/AVP 8")
    lines = rewritten_lines(body)
    assert [line for line in lines if line.startswith("m=")] == [
        "m=audio 20000 RTP/AVP 0",
        "m=audio 0 RTP/AVP 8",
    ]


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("a=sendonly", Direction.SENDONLY),
        ("a=inactive", Direction.INACTIVE),
        ("a=recvonly", Direction.RECVONLY),
    ],
)
def test_hold_direction_is_kept(attribute: str, expected: Direction) -> None:
    body = sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 0", attribute)
    assert f"a={expected.value}" in rewritten_lines(body)
    stream = audio_stream(parse_sdp(body))
    assert stream is not None
    assert stream.direction is expected
    assert stream.on_hold is (not expected.receives)


def test_session_level_direction_applies_to_the_stream() -> None:
    body = sdp(*HEAD, "t=0 0", "a=sendonly", "m=audio 4000 RTP/AVP 0")
    assert "a=sendonly" in rewritten_lines(body)


def test_rfc2543_hold_with_null_address_becomes_a_direction() -> None:
    body = sdp(
        "v=0",
        "o=- 1 2 IN IP4 0.0.0.0",
        "s=-",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
    )
    stream = audio_stream(parse_sdp(body))
    assert stream is not None
    assert stream.address is None
    assert stream.on_hold
    assert stream.direction is Direction.SENDONLY
    lines = rewritten_lines(body)
    assert "c=IN IP4 203.0.113.1" in lines  # our real address: the relay keeps its ports
    assert "a=sendonly" in lines


def test_answer_keeps_only_what_the_offer_had() -> None:
    offer = parse_sdp(sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 8"))
    answer = sdp(
        "v=0",
        "o=bob 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0 8 101",
        "a=rtpmap:101 telephone-event/8000",
    )
    lines = rewritten_lines(answer, offer=offer)
    assert "m=audio 20000 RTP/AVP 8" in lines
    assert not any("telephone-event" in line for line in lines)


def test_local_answer_picks_the_offerers_first_g711_codec() -> None:
    offer = parse_sdp(MANY_CODECS)
    answer = answer_sdp(offer, address=US, port=20002, origin=ORIGIN)
    lines = build_sdp(answer).decode().splitlines()
    assert "m=audio 20002 RTP/AVP 0 101" in lines
    assert "m=video 0 RTP/AVP 99" in lines
    stream = audio_stream(answer)
    assert stream is not None
    assert stream.codecs == (Codec.PCMU,)
    assert stream.telephone_event == 101


def test_local_answer_honours_our_preference_and_reverses_direction() -> None:
    offer = parse_sdp(sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 0 8", "a=sendonly"))
    answer = answer_sdp(offer, address=US, port=20002, origin=ORIGIN, prefer=(Codec.PCMA,))
    stream = audio_stream(answer)
    assert stream is not None
    assert stream.codecs == (Codec.PCMA,)
    assert stream.direction is Direction.RECVONLY


def test_local_answer_rejects_an_offer_without_g711() -> None:
    offer = parse_sdp(sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 9"))
    answer = answer_sdp(offer, address=US, port=20002, origin=ORIGIN)
    assert audio_stream(answer) is None
    assert "m=audio 0 RTP/AVP 9" in build_sdp(answer).decode().splitlines()


def test_origin_version_is_bumped_for_a_changed_description() -> None:
    assert ORIGIN.next_version().session_version == ORIGIN.session_version + 1
    assert make_origin(7, "2001:db8::1").address_type == "IP6"


def test_lf_line_ends_and_trailing_blank_lines_are_accepted() -> None:
    body = b"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 5 RTP/AVP 0\n\n"
    stream = audio_stream(parse_sdp(body))
    assert stream is not None
    assert stream.port == 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "must start with v=0"),
        (b"v=0\r\ns=-\r\n", "no o= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nxyz\r\n", "malformed line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio x RTP/AVP 0\r\n", "bad port"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 5 RTP/AVP 0\r\n", "no c= line"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4\r\n", "malformed c= line"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_sdp_is_rejected(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse_sdp(body)


@pytest.mark.parametrize(
    ("attribute", "port", "address"),
    [
        ("a=rtcp:53020", 53020, None),
        ("a=rtcp:53020 IN IP4 126.16.64.4", 53020, "126.16.64.4"),
        ("a=rtcp:junk", None, None),
    ],
)
def test_rfc3605_rtcp_attribute_is_read(
    attribute: str, port: int | None, address: str | None
) -> None:
    stream = audio_stream(parse_sdp(sdp(*HEAD, "t=0 0", "m=audio 4000 RTP/AVP 0", attribute)))
    assert stream is not None
    assert (stream.rtcp_port, stream.rtcp_address) == (port, address)
