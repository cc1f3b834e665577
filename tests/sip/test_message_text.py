"""The wire text kept on parsed and formatted header values (issue #21).

A parsed Via, name-addr or SIP URI keeps the text it was read from when that text is exactly what
formatting the value writes; any other value formats once and keeps the result. Nothing on the
wire may change: every test here compares with the value formatted afresh, without kept text.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.sip.build import build_response
from pbx.sip.message import NameAddress, SipRequest, SipResponse, SipUri, Uri, Via
from pbx.sip.parse import SipParseError, parse_message, parse_name_addr, parse_uri, parse_via

DATA = Path(__file__).parent / "data" / "rfc4475"


def fresh_uri(uri: Uri) -> Uri:
    """``uri`` without kept text (``replace`` makes a new value: init=False fields are not
    copied)."""
    return replace(uri) if isinstance(uri, SipUri) else uri


def fresh_address(address: NameAddress) -> NameAddress:
    return replace(address, uri=fresh_uri(address.uri))


def fresh_via(via: Via) -> Via:
    return replace(via)


def fresh_message(msg: SipRequest | SipResponse) -> SipRequest | SipResponse:
    """The same message with every header value formatted afresh."""
    via = tuple(fresh_via(v) for v in msg.via)
    from_, to = fresh_address(msg.from_), fresh_address(msg.to)
    contact = tuple(fresh_address(c) for c in msg.contact)
    if isinstance(msg, SipRequest):
        uri = fresh_uri(msg.uri)
        return replace(msg, uri=uri, via=via, from_=from_, to=to, contact=contact)
    return replace(msg, via=via, from_=from_, to=to, contact=contact)


def kept(value: SipUri | NameAddress | Via) -> str | None:
    return value._text


def _messages() -> list[bytes]:
    out = []
    for path in sorted(DATA.glob("*.dat")):
        try:
            parse_message(path.read_bytes())
        except SipParseError:
            continue
        out.append(path.read_bytes())
    return out


RFC4475 = _messages()


def test_some_rfc4475_messages_parse() -> None:
    assert len(RFC4475) > 20


@pytest.mark.parametrize("data", RFC4475)
def test_kept_text_is_the_formatted_text_for_rfc4475_messages(data: bytes) -> None:
    msg = parse_message(data, source=("192.0.2.99", 5070))
    for via in msg.via:
        assert kept(via) in (None, str(fresh_via(via)))
    for address in (msg.from_, msg.to, *msg.contact):
        assert kept(address) in (None, str(fresh_address(address)))
    assert msg.to_bytes() == fresh_message(msg).to_bytes()


def test_canonical_values_keep_the_text_they_were_read_from() -> None:
    via = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"
    address = '"Sato Taro" <sip:1001:pw@acme.example:5060;transport=udp>;tag=1928301774'
    uri = "sip:0312345678@pbx.example.com;user=phone"
    assert kept(parse_via(via)) == via
    assert kept(parse_name_addr(address)) == address
    assert kept(parse_name_addr("<sip:acme.example>")) == "<sip:acme.example>"
    parsed_uri = parse_uri(uri)
    assert isinstance(parsed_uri, SipUri)
    assert kept(parsed_uri) == uri


@pytest.mark.parametrize(
    ("text", "formatted"),
    [
        ("Bob<sip:bob@example.com>", "Bob <sip:bob@example.com>"),
        ("Bob  <sip:bob@example.com>", "Bob <sip:bob@example.com>"),
        ("Bob\t<sip:bob@example.com>", "Bob <sip:bob@example.com>"),
        ('"Bob"<sip:bob@example.com>', '"Bob" <sip:bob@example.com>'),
        ("<sip:bob@Example.COM>;tag=1", "<sip:bob@example.com>;tag=1"),
        ("<sip:bob@example.com:05060>", "<sip:bob@example.com:5060>"),
        ("<sip:bob@example.com:00>", "<sip:bob@example.com:0>"),
        ("<sip:bob@example.com:0>", "<sip:bob@example.com:0>"),
        ("sip:bob@example.com;tag=1", "<sip:bob@example.com>;tag=1"),
        ("<sip:bob@example.com> ; tag = 1", "<sip:bob@example.com>;tag=1"),
    ],
)
def test_non_canonical_addresses_are_formatted_as_before(text: str, formatted: str) -> None:
    address = parse_name_addr(text)
    assert str(address) == formatted
    assert str(fresh_address(address)) == formatted


@pytest.mark.parametrize(
    ("text", "formatted"),
    [
        ("SIP/2.0/udp 192.0.2.1;branch=z9hG4bK1", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
        ("SIP/2.0/UDP Host.Example;branch=z9hG4bK1", "SIP/2.0/UDP host.example;branch=z9hG4bK1"),
        ("SIP/2.0/UDP 192.0.2.1:05060", "SIP/2.0/UDP 192.0.2.1:5060"),
        ("SIP / 2.0 / UDP 192.0.2.1 ; rport", "SIP/2.0/UDP 192.0.2.1;rport"),
    ],
)
def test_non_canonical_vias_are_formatted_as_before(text: str, formatted: str) -> None:
    assert str(parse_via(text)) == formatted


def test_sip_uri_with_upper_case_host_is_formatted_in_lower_case() -> None:
    assert str(parse_uri("sip:1001@ACME.example:05060")) == "sip:1001@acme.example:5060"


def test_a_replaced_value_is_formatted_afresh() -> None:
    address = parse_name_addr("<sip:1001@acme.example>;tag=1")
    assert str(address) == "<sip:1001@acme.example>;tag=1"
    changed = replace(address, params=(("tag", "2"),))
    assert kept(changed) is None
    assert str(changed) == "<sip:1001@acme.example>;tag=2"
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa")
    assert str(replace(via, params=(("branch", "z9hG4bKb"),))) == (
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb"
    )
    uri = parse_uri("sip:1001@acme.example;transport=udp")
    assert isinstance(uri, SipUri)
    assert str(replace(uri, params=())) == "sip:1001@acme.example"


def test_a_stamped_via_is_formatted_with_its_new_parameters() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport")
    assert str(via.stamped(("198.51.100.7", 6000))) == (
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport=6000;received=198.51.100.7"
    )


def test_with_tag_appends_to_the_kept_text_or_formats_afresh() -> None:
    untagged = parse_name_addr('"Bob" <sip:bob@Example.com>;x=1')
    tagged = untagged.with_tag("abc")
    assert str(tagged) == '"Bob" <sip:bob@example.com>;x=1;tag=abc'
    assert str(tagged) == str(fresh_address(tagged))
    retagged = parse_name_addr("<sip:bob@example.com>;tag=old;x=1").with_tag("new")
    assert str(retagged) == "<sip:bob@example.com>;x=1;tag=new"


def test_with_branch_appends_to_the_kept_text_or_formats_afresh() -> None:
    template = parse_via("SIP/2.0/UDP PBX.example:05060;rport")
    via = template.with_branch("z9hG4bKnew")
    assert str(via) == "SIP/2.0/UDP pbx.example:5060;rport;branch=z9hG4bKnew"
    assert str(via) == str(fresh_via(via))
    assert via.branch == "z9hG4bKnew" == fresh_via(via).branch
    assert via == Via("UDP", "pbx.example", 5060, (("rport", None), ("branch", "z9hG4bKnew")))
    rebranched = parse_via("SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKold;x=1").with_branch("z9hG4bK2")
    assert str(rebranched) == "SIP/2.0/TCP 192.0.2.1;x=1;branch=z9hG4bK2"
    assert str(rebranched) == str(fresh_via(rebranched))
    assert rebranched.branch == "z9hG4bK2"


def test_kept_text_is_not_part_of_equality_hash_or_repr() -> None:
    parsed = parse_name_addr("<sip:1001@acme.example>;tag=1")
    built = NameAddress(SipUri("sip", "acme.example", "1001"), None, (("tag", "1"),))
    assert kept(parsed) is not None
    assert kept(built) is None
    assert parsed == built
    assert hash(parsed) == hash(built)
    assert repr(parsed) == repr(built)
    assert "_text" not in repr(parsed)


def test_formatting_a_built_value_keeps_its_text() -> None:
    via = Via("UDP", "192.0.2.1", 5060, (("branch", "z9hG4bK1"),))
    assert kept(via) is None
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"
    assert kept(via) == str(via)


def test_a_response_built_from_a_parsed_request_is_the_same_on_the_wire() -> None:
    data = (
        b"INVITE sip:0312345678@pbx.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
        b"Via: SIP/2.0/TCP Proxy.Example:05060;branch=z9hG4bK2\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Sato Taro"<sip:1001@acme.example>;tag=1928301774\r\n'
        b"To: <sip:0312345678@ACME.example>\r\n"
        b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:1001@192.0.2.10:5060;transport=udp>\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    invite = parse_message(data, source=("192.0.2.10", 5062))
    assert isinstance(invite, SipRequest)
    fresh = fresh_message(invite)
    assert isinstance(fresh, SipRequest)
    for status in (100, 180, 200):
        got = build_response(invite, status, to_tag="t1").to_bytes()
        assert got == build_response(fresh, status, to_tag="t1").to_bytes()
    assert invite.to_bytes() == fresh.to_bytes()
    assert b'From: "Sato Taro" <sip:1001@acme.example>;tag=1928301774\r\n' in invite.to_bytes()
    assert b"Via: SIP/2.0/TCP proxy.example:5060;branch=z9hG4bK2\r\n" in invite.to_bytes()


_HOST = st.sampled_from(["acme.example", "ACME.example", "192.0.2.1", "[2001:db8::1]"])
_PORT = st.sampled_from(["", ":5060", ":05060", ":0", ":65535"])
_DISPLAY = st.sampled_from(["", "Bob ", "Bob", "Bob\t", '"Sato Taro" ', '"A\\"B"', "Two  Words "])
_PARAMS = st.sampled_from(["", ";tag=1", ";tag=1;lr", ";x=Y;tag=abc", " ;tag=1"])
_UPARAMS = st.sampled_from(["", ";transport=udp", ";lr;transport=TCP", ";user=phone"])


@given(_DISPLAY, st.sampled_from(["", "1001@", "1001:pw@", "a%20b@"]), _HOST, _PORT, _UPARAMS)
def test_any_parsed_address_formats_as_the_value_does(
    display: str, user: str, host: str, port: str, uparams: str
) -> None:
    for params in ("", ";tag=1", ";x=Y;tag=abc", " ;tag=1"):
        text = f"{display}<sip:{user}{host}{port}{uparams}>{params}"
        address = parse_name_addr(text)
        assert str(address) == str(fresh_address(address))
        assert str(address.uri) == str(fresh_uri(address.uri))


@given(st.sampled_from(["UDP", "udp", "Tcp", "TLS"]), _HOST, _PORT, _PARAMS)
def test_any_parsed_via_formats_as_the_value_does(
    transport: str, host: str, port: str, params: str
) -> None:
    via = parse_via(f"SIP/2.0/{transport} {host}{port}{params}")
    assert str(via) == str(fresh_via(via))
    branched = via.with_branch("z9hG4bKx")
    assert str(branched) == str(fresh_via(branched))
