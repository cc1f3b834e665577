"""Malformed SDP offers (issue 17 item 8, fault row 4) and the answer each must get.

Shared by the unit tests of ``pbx.media.sdp`` (tests/media/test_sdp_malformed.py) and the
end-to-end test that sends them in INVITEs to a running server
(tests/integration/test_sdp_attacks.py). ``expected`` is the final status of the INVITE:

- 400: the body is not readable SDP (``parse_sdp`` raises);
- 488: readable, but no audio stream we can relay (``audio_stream`` is None);
- ACCEPTED (0): the call goes on; any bad stream in it is rejected with port 0.

The PROTOS c07-sip test suite (OUSPG, 2002) sends INVITEs whose SDP fields are replaced by
anomalies: overflows, format strings, integer boundaries, empty fields, control characters and
invalid UTF-8. Its binary test material is not in this repository; ``protos_cases`` builds the
same kinds of anomaly in every field of a normal offer. Rules behind the expectations (the same
as docs/design.md 9.1): fields the PBX never reads (s=, o= user and address, unknown attributes)
may hold anything printable; numbers (o= id and version, t=, m= port) must be digits; an address
we cannot send to (c= not an IP literal), a media type or transport we do not relay, or no G.711
codec make the stream unusable (488 when it is the only one); an empty field that removes a
required token, a line over 4,096 characters, or a control character make the body unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCEPTED = 0
HOST = "127.0.0.3"


@dataclass(frozen=True)
class SdpCase:
    name: str
    body: bytes
    expected: int  # 400, 488 or ACCEPTED


def offer(
    *,
    v: str = "0",
    o: str = f"alice 2890844526 2890844526 IN IP4 {HOST}",
    s: str = "call",
    c: str | None = f"IN IP4 {HOST}",
    t: str = "0 0",
    media: tuple[str, ...] = (
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=sendrecv",
    ),
    drop: str = "",
) -> bytes:
    """A normal offer with one field replaced; ``drop`` leaves out the lines of that type."""
    lines = [f"v={v}", f"o={o}", f"s={s}"]
    if c is not None:
        lines.append(f"c={c}")
    lines += [f"t={t}", *media]
    text = "\r\n".join(line for line in lines if not (drop and line.startswith(f"{drop}=")))
    return (text + "\r\n").encode("utf-8", "surrogateescape")


def named_cases() -> list[SdpCase]:
    """The cases the issue names, and the 'bad stream ignored' ones."""
    good_audio = ("m=audio 40002 RTP/AVP 0", "c=IN IP4 127.0.0.3", "a=rtpmap:0 PCMU/8000")
    return [
        SdpCase("good", offer(), ACCEPTED),
        SdpCase("c_two_fields", offer(c="IN IP4"), 400),
        SdpCase("c_host_name", offer(c="IN IP4 media.example.com"), 488),
        SdpCase("c_bad_octets", offer(c="IN IP4 999.1.1.1"), 488),
        SdpCase("c_ip6_type_ip4_address", offer(c="IN IP6 127.0.0.3"), 488),
        SdpCase("c_multicast", offer(c="IN IP4 224.2.1.1/127"), 488),
        SdpCase("c_missing", offer(c=None), 400),
        SdpCase("port_0", offer(media=("m=audio 0 RTP/AVP 0",)), 488),
        SdpCase("port_70000", offer(media=("m=audio 70000 RTP/AVP 0",)), 400),
        SdpCase("port_negative", offer(media=("m=audio -1 RTP/AVP 0",)), 400),
        SdpCase("no_m", offer(media=()), 488),
        SdpCase("m_without_formats", offer(media=("m=audio 40000 RTP/AVP",)), 400),
        SdpCase(
            "unknown_rtpmap_only",
            offer(media=("m=audio 40000 RTP/AVP 96", "a=rtpmap:96 FOO/8000")),
            488,
        ),
        SdpCase(
            "static_type_remapped",
            offer(media=("m=audio 40000 RTP/AVP 0", "a=rtpmap:0 FOO/8000")),
            488,
        ),
        SdpCase(
            "unknown_rtpmap_beside_pcmu",
            offer(media=("m=audio 40000 RTP/AVP 96 0", "a=rtpmap:96 FOO/8000")),
            ACCEPTED,
        ),
        SdpCase("no_v", offer(drop="v"), 400),
        SdpCase("v_1", offer(v="1"), 400),
        SdpCase("no_o", offer(drop="o"), 400),
        SdpCase(
            "attribute_8k",  # within the 16 KB body cap, over the 4,096-character line cap
            offer(media=("m=audio 40000 RTP/AVP 0", "a=x-junk:" + "A" * 8_000)),
            400,
        ),
        SdpCase(
            "bad_stream_then_good",  # host-named first stream rejected, the second relayed
            offer(
                c=None,
                media=("m=audio 40000 RTP/AVP 0", "c=IN IP4 bad.example", *good_audio),
            ),
            ACCEPTED,
        ),
        SdpCase(
            "g729_stream_then_pcmu",
            offer(media=("m=audio 40000 RTP/AVP 18", *good_audio)),
            ACCEPTED,
        ),
        SdpCase(
            "video_and_audio",
            offer(media=("m=video 40004 RTP/AVP 96", "a=rtpmap:96 H264/90000", *good_audio)),
            ACCEPTED,
        ),
        SdpCase("only_video", offer(media=("m=video 40004 RTP/AVP 96",)), 488),
        SdpCase("srtp_only", offer(media=("m=audio 40000 RTP/SAVP 0",)), 488),
        SdpCase("lf_only_line_ends", offer().replace(b"\r\n", b"\n"), ACCEPTED),
    ]


# PROTOS-style anomalies: name -> value.
ANOMALIES: dict[str, str] = {
    "overflow_128": "A" * 128,
    "overflow_4000": "A" * 4_000,
    "overflow_15000": "A" * 15_000,  # within the body cap, over the line cap
    "format_string": "%s%s%s%s%n%n%n%x",
    "int_negative": "-1",
    "int_2_32": "4294967296",
    "int_30_digits": "9" * 30,
    "empty": "",
    "nul": "A\x00A",
    "lone_cr": "A\rA",
    "escape": "\x1b[2J",
    "bad_utf8": "\udcc0\udcaf",  # C0 AF, an overlong '/' (surrogateescape)
}
# Anomalies that make any line unreadable, whatever the field.
_UNREADABLE = {"overflow_15000": 400, "nul": 400, "lone_cr": 400, "escape": 400, "bad_utf8": 400}
_TEXT = {**_UNREADABLE, "empty": 400}  # a free token: anything printable, but it must be there
_NUMBER = {"int_2_32": ACCEPTED, "int_negative": 400, "default": 400}
_UNUSABLE = {**_UNREADABLE, "empty": 400, "default": 488}


def _field_cases() -> dict[str, tuple[object, dict[str, int]]]:
    """Field name -> (how to build the offer from a value, expectations by anomaly)."""
    rtp = "m=audio 40000 RTP/AVP {}"
    return {
        "v": (lambda x: offer(v=x), {"default": 400}),
        "o_username": (lambda x: offer(o=f"{x} 1 1 IN IP4 {HOST}"), _TEXT),
        "o_session_id": (lambda x: offer(o=f"alice {x} 1 IN IP4 {HOST}"), _NUMBER),
        "o_version": (lambda x: offer(o=f"alice 1 {x} IN IP4 {HOST}"), _NUMBER),
        "o_network_type": (lambda x: offer(o=f"alice 1 1 {x} IP4 {HOST}"), _TEXT),
        "o_address": (lambda x: offer(o=f"alice 1 1 IN IP4 {x}"), _TEXT),
        "s": (lambda x: offer(s=x), _UNREADABLE),
        "c_network_type": (lambda x: offer(c=f"{x} IP4 {HOST}"), _UNUSABLE),
        "c_address_type": (lambda x: offer(c=f"IN {x} {HOST}"), _UNUSABLE),
        "c_address": (lambda x: offer(c=f"IN IP4 {x}"), _UNUSABLE),
        "t_start": (lambda x: offer(t=f"{x} 0"), _NUMBER),
        "t_stop": (lambda x: offer(t=f"0 {x}"), _NUMBER),
        "m_media": (lambda x: offer(media=(f"m={x} 40000 RTP/AVP 0",)), _UNUSABLE),
        "m_port": (
            lambda x: offer(media=(f"m=audio {x} RTP/AVP 0",)),
            {"default": 400},
        ),
        "m_transport": (lambda x: offer(media=(f"m=audio 40000 {x} 0",)), _UNUSABLE),
        "m_format": (lambda x: offer(media=(rtp.format(x),)), _UNUSABLE),
        "rtpmap_encoding": (
            lambda x: offer(media=(rtp.format(0), f"a=rtpmap:0 {x}/8000")),
            {**_UNREADABLE, "default": 488},
        ),
        "rtpmap_rate": (
            lambda x: offer(media=(rtp.format(0), f"a=rtpmap:0 PCMU/{x}")),
            # A rate that is not a number makes the rtpmap unreadable: it is ignored and PT 0
            # keeps its static meaning (RFC 3551); a number other than 8000 is not PCMU.
            {
                **_UNREADABLE,
                "int_negative": 488,
                "int_2_32": 488,
                "int_30_digits": 488,
                "default": ACCEPTED,
            },
        ),
        "attribute": (
            lambda x: offer(media=(rtp.format(0), f"a={x}")),
            {**_UNREADABLE, "default": ACCEPTED},
        ),
    }


def protos_cases() -> list[SdpCase]:
    """Every anomaly in every field (see the module docstring)."""
    cases: list[SdpCase] = []
    for field, (build, expectations) in _field_cases().items():
        for anomaly, value in ANOMALIES.items():
            expected = expectations.get(anomaly, expectations.get("default", ACCEPTED))
            body = build(value)  # type: ignore[operator]
            assert isinstance(body, bytes)
            cases.append(SdpCase(f"protos_{field}_{anomaly}", body, expected))
    return cases


def all_cases() -> list[SdpCase]:
    return named_cases() + protos_cases()
