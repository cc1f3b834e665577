"""Unit tests of pbx.sip.parse: RFC 3261 sections 7, 18.3, 19.1, 20 and 25."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.errors import LocalProtocolError, RemoteProtocolError
from pbx.sip.message import (
    AbsoluteUri,
    CallId,
    CSeq,
    NameAddress,
    SipRequest,
    SipResponse,
    SipUri,
    TelUri,
    Via,
)
from pbx.sip.parse import (
    MAX_MESSAGE_SIZE,
    SipParseError,
    is_keepalive,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    serialize_request,
    serialize_response,
    split_header_values,
)


def msg(*lines: str, body: bytes = b"") -> bytes:
    """A message from header lines joined with CRLF, then an empty line and the body."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


INVITE_LINES = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "To: Bob <sip:bob@biloxi.example.com>",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Content-Type: application/sdp",
)
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def invite(*extra: str, body: bytes = SDP, length: bool = True) -> bytes:
    lines = [*INVITE_LINES, *extra]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return msg(*lines, body=body)


def parse_request(data: bytes, *, stream: bool = False) -> SipRequest:
    parsed = parse_message(data, stream=stream)
    assert isinstance(parsed, SipRequest)
    return parsed


def parse_response(data: bytes) -> SipResponse:
    parsed = parse_message(data)
    assert isinstance(parsed, SipResponse)
    return parsed


# --------------------------------------------------------------------------- requests
def test_request_typed_fields() -> None:
    req = parse_request(invite())
    assert req.method == "INVITE"
    assert req.uri == SipUri("sip", "biloxi.example.com", "bob")
    assert req.via == (
        Via("UDP", "pc33.atlanta.example.com", None, (("branch", "z9hG4bK776asdhds"),)),
    )
    assert req.via[0].branch == "z9hG4bK776asdhds"
    assert req.from_.display_name == '"Alice"'
    assert req.from_.tag == "1928301774"
    assert req.to.display_name == "Bob"
    assert req.to.tag is None
    assert req.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert req.cseq == CSeq(314159, "INVITE")
    assert req.max_forwards == 70
    assert req.contact == (NameAddress(SipUri("sip", "pc33.atlanta.example.com", "alice")),)
    assert req.headers == (("Content-Type", "application/sdp"),)
    assert req.body == SDP


def test_header_names_are_case_insensitive_and_compact_forms_are_expanded() -> None:
    req = parse_request(
        msg(
            "OPTIONS sip:bob@example.com SIP/2.0",
            "v: SIP/2.0/UDP host.example.com;branch=z9hG4bK1",
            "mAx-FoRwArDs: 5",
            "f: <sip:a@example.com>;tag=1",
            "T: <sip:bob@example.com>",
            "i: abc@host",
            "cseq: 2 OPTIONS",
            "m: <sip:a@host.example.com>",
            "c: text/plain",
            "k: timer",
            "l: 4",
            body=b"abcd",
        )
    )
    assert req.via[0].host == "host.example.com"
    assert req.max_forwards == 5
    assert req.from_.tag == "1"
    assert req.call_id == "abc@host"
    assert req.contact[0].uri == SipUri("sip", "host.example.com", "a")
    assert req.body == b"abcd"
    # Untyped headers keep their names as written; lookups know the compact forms.
    assert req.headers == (("c", "text/plain"), ("k", "timer"))
    assert req.header("Content-Type") == "text/plain"
    assert req.header("supported") == "timer"


def test_whitespace_before_colon_and_around_value_is_not_part_of_the_value() -> None:
    req = parse_request(invite("Subject  :   hello world   ", "X-Empty:"))
    assert ("Subject", "hello world") in req.headers
    assert ("X-Empty", "") in req.headers


def test_unknown_headers_are_kept_in_order_with_names_as_written() -> None:
    req = parse_request(
        invite(
            "Route: <sip:p1.example.com;lr>",
            "X-Custom-HEADER: a;;,,b",
            "Route: <sip:p2.example.com;lr>",
            "P-Asserted-Identity: <sip:+81312345678@carrier.example;user=phone>",
        )
    )
    assert req.headers == (
        ("Content-Type", "application/sdp"),
        ("Route", "<sip:p1.example.com;lr>"),
        ("X-Custom-HEADER", "a;;,,b"),
        ("Route", "<sip:p2.example.com;lr>"),
        ("P-Asserted-Identity", "<sip:+81312345678@carrier.example;user=phone>"),
    )
    assert req.header_values("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


def test_unknown_header_with_non_utf8_bytes_round_trips_byte_exact() -> None:
    raw = b"X-Odd: caf\xe9 \xff\x00end"
    data = invite().replace(b"Content-Type:", raw + b"\r\nContent-Type:")
    req = parse_request(data)
    assert raw in serialize_request(req)
    assert parse_request(serialize_request(req)) == req


def test_line_folding_is_collapsed_to_one_space() -> None:
    req = parse_request(
        invite(
            "Subject: I know you're there,",
            "\tpick up the phone",
            "   and talk to me!",
        )
    )
    assert req.header("Subject") == "I know you're there, pick up the phone and talk to me!"


def test_folded_typed_headers() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP\r\n host.example.com;branch=z9hG4bK1\r\n"
        b"From:\r\n <sip:a@example.com>\r\n  ;tag=77\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: x\r\n"
        b"CSeq: 1\r\n\tINVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    req = parse_request(data)
    assert req.via[0].host == "host.example.com"
    assert req.from_.tag == "77"
    assert req.cseq == CSeq(1, "INVITE")


def test_bare_lf_line_ends_are_accepted() -> None:
    body = SDP.replace(b"\r\n", b"\n")
    head = "\n".join([*INVITE_LINES, f"Content-Length: {len(body)}"])
    req = parse_request(head.encode() + b"\n\n" + body)
    assert req.cseq.number == 314159
    assert req.headers == (("Content-Type", "application/sdp"),)
    assert req.body == body


def test_crlf_lines_ended_by_a_bare_lf_blank_line() -> None:
    data = invite().replace(b"\r\n\r\n", b"\r\n\n", 1)
    assert parse_request(data).body == SDP


def test_long_blank_runs_before_a_fold_are_linear() -> None:
    req = parse_request(invite("Subject: a" + " " * 60000, " b"))
    assert req.header("Subject") == "a b"


def test_multiple_via_values_in_one_header_and_over_several_headers() -> None:
    req = parse_request(
        msg(
            "BYE sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com:5070"
            ";branch=z9hG4bK2",
            "v: SIP/2.0/TLS c.example.com;branch=z9hG4bK3",
            "From: <sip:a@example.com>;tag=1",
            "To: <sip:bob@example.com>;tag=2",
            "Call-ID: x",
            "CSeq: 2 BYE",
            "Content-Length: 0",
        )
    )
    assert [(v.transport, v.host, v.port) for v in req.via] == [
        ("UDP", "a.example.com", None),
        ("TCP", "b.example.com", 5070),
        ("TLS", "c.example.com", None),
    ]


def test_contact_list_does_not_split_inside_quotes_or_angle_brackets() -> None:
    req = parse_request(
        invite(
            'Contact: "Doe, John" <sip:j,x@a.example.com;x=a>;expires=60, <sip:k@b.example.com>'
        ).replace(b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n", b"")
    )
    assert [c.uri for c in req.contact] == [
        SipUri("sip", "a.example.com", "j,x", params=(("x", "a"),)),
        SipUri("sip", "b.example.com", "k"),
    ]
    assert req.contact[0].display_name == '"Doe, John"'
    assert req.contact[0].param("expires") == "60"


def test_contact_star() -> None:
    data = invite().replace(b"Contact: <sip:alice@pc33.atlanta.example.com>", b"Contact: *")
    req = parse_request(data)
    assert req.contact_star
    assert req.contact == ()
    assert parse_request(serialize_request(req)) == req


def test_contact_star_mixed_with_addresses_is_malformed() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(invite("Contact: *"))
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a, b,c", ["a", "b", "c"]),
        ('"a, b" <sip:x>, c', ['"a, b" <sip:x>', "c"]),
        ("<sip:x;a=1,2>;q=1, <sip:y>", ["<sip:x;a=1,2>;q=1", "<sip:y>"]),
        ('"esc \\" , quote" <sip:x>, y', ['"esc \\" , quote" <sip:x>', "y"]),
        (" , a,, ", ["a"]),
        ('"unterminated, x', ['"unterminated, x']),
        ("", []),
    ],
)
def test_split_header_values(text: str, expected: list[str]) -> None:
    assert split_header_values(text) == expected


# --------------------------------------------------------------------------- addresses
def test_quoted_display_name_keeps_quotes_and_escapes_as_written() -> None:
    addr = parse_name_addr(r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98')
    assert addr.display_name == r'"J Rosenberg \\\""'
    assert addr.uri == SipUri("sip", "example.com", "jdrosen")
    assert addr.tag == "98"
    assert parse_name_addr(str(addr)) == addr


def test_quoted_display_name_may_hold_angle_brackets_and_semicolons() -> None:
    addr = parse_name_addr('"<evil>; tag=x" <sip:a@example.com>;tag=real')
    assert addr.display_name == '"<evil>; tag=x"'
    assert addr.tag == "real"


def test_token_display_name_needs_no_space_before_angle_bracket() -> None:
    addr = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert addr.display_name == "caller"
    assert addr.tag == "323"


def test_addr_spec_parameters_are_header_parameters() -> None:
    # RFC 3261 20.10: without <>, ';tag' and the rest belong to the header, not the URI.
    addr = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam;tag=5")
    assert addr.uri == SipUri("sip", "gw1.example.net", "+19725552222")
    assert addr.params == (("unknownparam", None), ("tag", "5"))
    assert addr.display_name is None


def test_name_addr_uri_parameters_stay_in_the_uri() -> None:
    addr = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>;expires=30")
    assert addr.uri == SipUri(
        "sip", "gw1.example.net", "+19725552222", params=(("unknownparam", None),)
    )
    assert addr.params == (("expires", "30"),)


def test_header_parameters_with_lws_and_quoted_values() -> None:
    addr = parse_name_addr(
        "<sip:a@example.com> ; newparam =  newvalue ;  secondparam ; q = 0.33 ;"
        ' +sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    )
    assert addr.params == (
        ("newparam", "newvalue"),
        ("secondparam", None),
        ("q", "0.33"),
        ("+sip.instance", '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'),
    )


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@example.com>',
        "Bell, Alexander <sip:a@example.com>",
        "<sip:a@example.com",
        "<sip:a@example.com>;;tag=1",
        "<sip:a@example.com>;tag=1;",
        "sip:user@example.com?Route=%3Csip:x%3E",
        "",
        "<>",
        "<sip:>",
    ],
)
def test_malformed_addresses(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_name_addr(text)
    assert info.value.status_hint == 400
    assert isinstance(info.value, RemoteProtocolError)


def test_spaces_just_inside_angle_brackets_are_ignored() -> None:
    addr = parse_name_addr('"Watson, Thomas" < sip:t.watson@example.org >')
    assert addr.uri == SipUri("sip", "example.org", "t.watson")


def test_non_sip_schemes_in_addresses() -> None:
    assert parse_name_addr("isbn:2983792873").uri == AbsoluteUri("isbn", "isbn:2983792873")
    assert parse_name_addr("<http://www.example.com>;tag=3").uri == AbsoluteUri(
        "http", "http://www.example.com"
    )
    assert parse_name_addr("<tel:+81-3-1234-5678>").uri == TelUri("+81-3-1234-5678")


# --------------------------------------------------------------------------- URIs
def test_sip_uri_parts() -> None:
    uri = parse_uri("sips:Alice:secret@Atlanta.Example.COM:5061;transport=TCP;lr?subject=x&h=y")
    assert uri == SipUri(
        "sips",
        "atlanta.example.com",
        "Alice",
        "secret",
        5061,
        (("transport", "TCP"), ("lr", None)),
        "subject=x&h=y",
    )
    assert str(uri) == "sips:Alice:secret@atlanta.example.com:5061;transport=TCP;lr?subject=x&h=y"


def test_uri_parameters_are_compared_case_insensitively() -> None:
    uri = parse_uri("sip:1001@192.0.2.10:5060;TRANSPORT=UDP")
    assert isinstance(uri, SipUri)
    assert uri.transport == "UDP"
    assert uri.param("transport") == "UDP"
    lower = parse_uri("sip:1001@192.0.2.10:5060;transport=udp")
    assert isinstance(lower, SipUri)
    assert lower.transport == "UDP"


def test_scheme_is_case_insensitive() -> None:
    assert parse_uri("SIP:bob@Example.com") == SipUri("sip", "example.com", "bob")


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:alice@[2001:DB8::10]:5070;transport=tcp", "[2001:db8::10]", 5070),
        ("sip:[::ffff:192.0.2.1]:5060", "[::ffff:192.0.2.1]", 5060),
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060),
    ],
)
def test_ip_hosts(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == (host, port)
    assert parse_uri(str(uri)) == uri


def test_user_part_keeps_escapes_and_may_hold_semicolons() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert isinstance(uri, SipUri)
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == ()


def test_tel_uri() -> None:
    uri = parse_uri("tel:+81-3-1234-5678;phone-context=example.com;ISUB=1")
    assert uri == TelUri("+81-3-1234-5678", (("phone-context", "example.com"), ("ISUB", "1")))
    assert uri.scheme == "tel"
    assert uri.param("isub") == "1"
    assert str(uri) == "tel:+81-3-1234-5678;phone-context=example.com;ISUB=1"


def test_other_schemes_are_kept_opaque() -> None:
    assert parse_uri("soap.beep://192.0.2.103:3002") == AbsoluteUri(
        "soap.beep", "soap.beep://192.0.2.103:3002"
    )
    assert parse_uri("urn:service:sos") == AbsoluteUri("urn", "urn:service:sos")


@pytest.mark.parametrize(
    "text",
    [
        "<sip:a@example.com>",
        "sip:",
        "sip:a@",
        "sip:a@example.com:99999",
        "sip:a@example.com;;lr",
        "sip:a@example.com; lr",
        "sip:a b@example.com",
        "tel:",
        "nocolon",
        "1abc:x",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# --------------------------------------------------------------------------- Via
def test_via_with_lws_everywhere() -> None:
    via = parse_via("SIP  /   2.0 /UDP    192.0.2.2 ;  branch =  390skdjuw ; rport")
    assert via == Via("UDP", "192.0.2.2", None, (("branch", "390skdjuw"), ("rport", None)))


def test_via_received_rport_and_ipv6() -> None:
    via = parse_via("SIP/2.0/tcp [2001:db8::9]:5070;branch=z9hG4bK1;received=2001:db8::8;rport=9")
    assert via.transport == "TCP"
    assert via.host == "[2001:db8::9]"
    assert via.port == 5070
    assert via.received == "2001:db8::8"
    assert via.rport == 9
    assert via.wants_rport
    assert parse_via(str(via)) == via


def test_via_with_empty_rport_asks_for_it() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKx")
    assert via.wants_rport
    assert via.rport is None
    assert via.sent_by == ("192.0.2.1", 5060)


@pytest.mark.parametrize(
    "text",
    ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host:70000", "garbage"],
)
def test_malformed_via(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


def test_empty_via_values_are_malformed() -> None:
    data = invite().replace(b"z9hG4bK776asdhds", b"z9hG4bK776asdhds;;,;,,")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status_hint == 400


# --------------------------------------------------------------------------- bodies and framing
def test_udp_without_content_length_takes_the_rest_of_the_datagram() -> None:
    req = parse_request(invite(length=False))
    assert req.body == SDP


def test_udp_octets_after_the_body_are_ignored() -> None:
    req = parse_request(invite() + b"garbage after the body")
    assert req.body == SDP


def test_content_length_larger_than_the_datagram_is_malformed() -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 9999")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status_hint == 400


@pytest.mark.parametrize("value", ["-1", "five", "1 2", "0x10", "99999999999999999999"])
def test_bad_content_length(value: str) -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}".encode(), f"l: {value}".encode())
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status_hint == 400


def test_conflicting_content_lengths_are_malformed_but_equal_ones_are_not() -> None:
    with pytest.raises(SipParseError):
        parse_message(invite("l: 3"))
    assert parse_request(invite(f"l: {len(SDP)}")).body == SDP


def test_stream_messages_need_content_length() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(invite(length=False), stream=True)
    assert info.value.status_hint == 400
    assert parse_request(invite(), stream=True).body == SDP


def test_missing_empty_line_ends_headers_at_the_end_of_the_datagram() -> None:
    data = msg(*INVITE_LINES, "Content-Length: 0")[:-2]
    assert parse_request(data).body == b""


def test_binary_body_with_nul_octets() -> None:
    body = bytes(range(256)) * 2
    req = parse_request(invite(body=body))
    assert req.body == body


def test_message_over_64k_is_refused_with_513() -> None:
    body = b"x" * MAX_MESSAGE_SIZE
    with pytest.raises(SipParseError) as info:
        parse_message(invite(body=body))
    assert info.value.status_hint == 513
    partial = info.value.partial
    assert partial is not None
    assert partial.can_answer


def test_message_of_exactly_64k_is_accepted() -> None:
    size = len(invite(body=b""))
    body = b"x" * (MAX_MESSAGE_SIZE - size - 4)  # "Content-Length: 0" grows to 5 digits
    data = invite(body=body)
    assert len(data) == MAX_MESSAGE_SIZE
    assert parse_request(data).body == body


# --------------------------------------------------------------------------- start lines
def test_unsupported_version_is_505_with_enough_to_answer() -> None:
    data = invite().replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status_hint == 505
    assert info.value.partial is not None
    assert info.value.partial.method == "INVITE"


def test_version_is_case_insensitive() -> None:
    req = parse_request(invite().replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1))
    assert req.version == "SIP/2.0"


@pytest.mark.parametrize(
    "line",
    [
        "INVITE  sip:bob@example.com SIP/2.0",
        "INVITE sip:bob@example.com SIP/2.0 ",
        "INVITE sip:bob@example.com",
        "INVITE <sip:bob@example.com> SIP/2.0",
        "INVITE sip:bob@example.com HTTP/1.1",
        "INV(ITE sip:bob@example.com SIP/2.0",
    ],
)
def test_malformed_request_lines(line: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(msg(line, *INVITE_LINES[1:], "Content-Length: 0"))
    assert info.value.status_hint == 400


def test_the_start_line_cannot_be_folded() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(msg(INVITE_LINES[0], " continued", *INVITE_LINES[1:]))
    assert info.value.status_hint == 400


def test_extension_method_with_unusual_token_characters() -> None:
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    lines = [f"{method} sip:bob@example.com SIP/2.0", *INVITE_LINES[1:]]
    lines[6] = f"CSeq: 1 {method}"
    assert parse_request(msg(*lines, "Content-Length: 0")).method == method


RESPONSE_LINES = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8;received=192.0.2.1;rport=5060",
    "From: <sip:alice@example.com>;tag=1",
    "To: <sip:bob@example.com>;tag=2",
    "Call-ID: resp@host",
    "CSeq: 1 INVITE",
    "Contact: <sip:bob@192.0.2.2>",
    "Content-Length: 0",
)


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        ("SIP/2.0 200 OK", 200, "OK"),
        ("SIP/2.0 100 ", 100, ""),
        ("SIP/2.0 180", 180, ""),
        ("SIP/2.0 486 Busy Here", 486, "Busy Here"),
        ("SIP/2.0 200 = 2**3 * 5**2 но сто", 200, "= 2**3 * 5**2 но сто"),
    ],
)
def test_status_lines(line: str, status: int, reason: str) -> None:
    resp = parse_response(msg(line, *RESPONSE_LINES))
    assert (resp.status, resp.reason) == (status, reason)
    assert resp.via[0].received == "192.0.2.1"
    assert resp.via[0].rport == 5060
    assert resp.contact[0].uri == SipUri("sip", "192.0.2.2", "bob")


@pytest.mark.parametrize(
    "line",
    [
        "SIP/2.0 4294967301 Big",
        "SIP/2.0 20 OK",
        "SIP/2.0 OK",
        "SIP/2.0 700 Odd",
        "SIP/2.0 200 O\rK",
    ],
)
def test_malformed_status_lines(line: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(msg(line, *RESPONSE_LINES))
    assert info.value.partial is not None
    assert not info.value.partial.can_answer


# --------------------------------------------------------------------------- header errors
@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("Call-ID", "Call-ID: other@host"),
        ("CSeq", "CSeq: 5 INVITE"),
        ("From", "From: <sip:x@example.com>;tag=9"),
        ("To", "t: <sip:y@example.com>"),
        ("Max-Forwards", "Max-Forwards: 5"),
    ],
)
def test_repeated_single_headers_are_malformed(name: str, extra: str) -> None:
    with pytest.raises(SipParseError, match=name) as info:
        parse_message(invite(extra))
    assert info.value.status_hint == 400


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_headers_are_malformed(name: str) -> None:
    lines = [line for line in INVITE_LINES if not line.startswith(name + ":")]
    with pytest.raises(SipParseError, match=f"missing {name}") as info:
        parse_message(msg(*lines, "Content-Length: 0"))
    assert info.value.status_hint == 400


def test_max_forwards_is_optional_and_may_have_leading_zeros() -> None:
    lines = [line for line in INVITE_LINES if not line.startswith("Max-Forwards")]
    assert parse_request(msg(*lines)).max_forwards is None
    assert (
        parse_request(
            invite("Max-Forwards: 0068").replace(b"Max-Forwards: 70\r\n", b"")
        ).max_forwards
        == 68
    )


@pytest.mark.parametrize(
    "line",
    [
        "CSeq: 4294967296 INVITE",
        "CSeq: 36893488147419103232 INVITE",
        "CSeq: INVITE",
        "CSeq: -1 INVITE",
        "Max-Forwards: 256",
        "Max-Forwards: ten",
        "Call-ID: has space",
        "Call-ID:",
    ],
)
def test_out_of_range_or_malformed_scalars(line: str) -> None:
    name = line.partition(":")[0]
    lines = [x for x in INVITE_LINES if not x.startswith(name + ":")]
    with pytest.raises(SipParseError) as info:
        parse_message(msg(*lines, line, "Content-Length: 0"))
    assert info.value.status_hint == 400


def test_largest_cseq_is_accepted() -> None:
    lines = [x for x in INVITE_LINES if not x.startswith("CSeq")]
    req = parse_request(msg(*lines, "CSeq: 4294967295 INVITE", "Content-Length: 0"))
    assert req.cseq.number == 2**32 - 1


@pytest.mark.parametrize(
    "line",
    [
        "No colon here",
        "Bad Name: value",
        ": no name",
        "X-Ctl\x01: v",
        "Bad\rLine: x",
        "Via",
        "Route",
    ],
)
def test_malformed_header_lines(line: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(invite(line))
    assert info.value.status_hint == 400


# --------------------------------------------------------------------------- partial messages
def test_error_after_the_start_line_carries_the_raw_headers() -> None:
    data = invite("CSeq: 9 INVITE")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    partial = info.value.partial
    assert partial is not None
    assert partial.method == "INVITE"
    assert partial.start_line == "INVITE sip:bob@biloxi.example.com SIP/2.0"
    assert partial.values("v") == ["SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"]
    assert partial.values("cseq") == ["314159 INVITE", "9 INVITE"]
    assert partial.can_answer


def test_partial_error_response_echoes_the_request_and_adds_a_to_tag() -> None:
    data = invite("CSeq: 9 INVITE").replace(
        b"Via:", b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\nVia:"
    )
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.partial is not None
    answer = info.value.partial.error_response(400, "Bad Request", "srvtag")
    assert answer is not None
    assert answer.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert answer.endswith(b"Content-Length: 0\r\n\r\n")
    resp = parse_response(answer)
    assert [v.host for v in resp.via] == ["proxy.example.com", "pc33.atlanta.example.com"]
    assert resp.to.tag == "srvtag"
    assert resp.from_.tag == "1928301774"
    assert resp.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert resp.cseq == CSeq(314159, "INVITE")


def test_partial_error_response_keeps_an_existing_to_tag() -> None:
    data = invite("Max-Forwards: 1").replace(
        b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:b@x>;tag=old"
    )
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.partial is not None
    answer = info.value.partial.error_response(400, "Bad Request", "new")
    assert answer is not None
    assert b"To: <sip:b@x>;tag=old\r\n" in answer


def test_partial_without_call_id_or_for_ack_cannot_be_answered() -> None:
    lines = [x for x in INVITE_LINES if not x.startswith("Call-ID")]
    with pytest.raises(SipParseError) as info:
        parse_message(msg(*lines))
    assert info.value.partial is not None
    assert not info.value.partial.can_answer
    assert info.value.partial.error_response(400, "Bad Request", "t") is None
    ack = invite("CSeq: 2 ACK").replace(b"INVITE sip:", b"ACK sip:", 1)
    with pytest.raises(SipParseError) as info:
        parse_message(ack)
    assert info.value.partial is not None
    assert not info.value.partial.can_answer


def test_partial_keeps_the_headers_before_a_bad_line() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(msg(*INVITE_LINES[:3], "this line is broken", *INVITE_LINES[3:]))
    assert info.value.partial is not None
    assert [k for k, _ in info.value.partial.headers] == ["Via", "Max-Forwards"]


# --------------------------------------------------------------------------- serialization
def test_serialize_writes_content_length_from_the_body() -> None:
    req = parse_request(invite())
    stale = SipRequest(
        req.method,
        req.uri,
        req.via,
        req.from_,
        req.to,
        req.call_id,
        req.cseq,
        headers=(("Content-Length", "999"), ("l", "1"), *req.headers),
        body=b"hello",
    )
    data = serialize_request(stale)
    assert data.count(b"Content-Length") == 1
    assert b"Content-Length: 5\r\n\r\nhello" in data
    assert b"\r\nl: " not in data


def test_serialize_request_layout() -> None:
    req = SipRequest(
        "OPTIONS",
        SipUri("sip", "example.com", "bob"),
        (Via("UDP", "192.0.2.1", 5060, (("branch", "z9hG4bKa"), ("rport", None))),),
        NameAddress(SipUri("sip", "example.com", "alice"), '"Alice"', (("tag", "1"),)),
        NameAddress(SipUri("sip", "example.com", "bob")),
        CallId("c@h"),
        CSeq(1, "OPTIONS"),
        headers=(("Accept", "application/sdp"),),
    )
    assert serialize_request(req) == (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Alice" <sip:alice@example.com>;tag=1\r\n'
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: c@h\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Accept: application/sdp\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert req.to_bytes() == serialize_request(req)
    assert parse_message(req.to_bytes()) == req


def test_serialize_response_round_trip() -> None:
    resp = parse_response(msg("SIP/2.0 180 Ringing", *RESPONSE_LINES))
    data = serialize_response(resp)
    assert data.startswith(b"SIP/2.0 180 Ringing\r\n")
    assert parse_message(data) == resp
    assert resp.to_bytes() == data


def test_crlf_injection_in_a_header_value_is_our_bug() -> None:
    req = parse_request(invite())
    bad = SipRequest(
        req.method,
        req.uri,
        req.via,
        req.from_,
        req.to,
        req.call_id,
        req.cseq,
        headers=(("Subject", "hi\r\nVia: SIP/2.0/UDP evil"),),
    )
    with pytest.raises(LocalProtocolError):
        serialize_request(bad)


def test_round_trip_of_a_tortuous_message_is_stable() -> None:
    req = parse_request(
        invite(
            "Subject: folded",
            " value",
            'Diversion: "a,b" <sip:1001@example.com>;reason=no-answer',
            "X-Unicode: 佐藤",
        )
    )
    again = parse_request(serialize_request(req))
    assert again == req
    assert serialize_request(again) == serialize_request(req)


_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
_host = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True)
_user = st.from_regex(r"[A-Za-z0-9\-_.!~*'()&=+$,%]{1,12}", fullmatch=True)
_params = st.lists(st.tuples(_token, st.one_of(st.none(), _token)), max_size=3).map(tuple)
_uri = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    host=_host,
    user=st.one_of(st.none(), _user),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    params=st.lists(
        st.tuples(
            st.from_regex(r"[a-z0-9\-_.!~*'()]{1,8}", fullmatch=True),
            st.one_of(st.none(), st.from_regex(r"[a-zA-Z0-9\-_.]{1,8}", fullmatch=True)),
        ),
        max_size=3,
    ).map(tuple),
)
_display = st.one_of(
    st.none(),
    st.from_regex(r'"([^"\\\r\n]|\\[ -~]){0,10}"', fullmatch=True),
    st.lists(_token, min_size=1, max_size=3).map(" ".join),
)
_addr = st.builds(NameAddress, uri=_uri, display_name=_display, params=_params)
_via = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "WS"]),
    host=st.one_of(_host, st.just("[2001:db8::1]"), st.just("192.0.2.1")),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    params=_params,
)
_header = st.tuples(
    _token.filter(
        lambda n: (
            n.lower()
            not in {
                "via",
                "v",
                "from",
                "f",
                "to",
                "t",
                "call-id",
                "i",
                "cseq",
                "max-forwards",
                "contact",
                "m",
                "content-length",
                "l",
            }
        )
    ),
    st.from_regex(r"([!-~]([ !-~]{0,20}[!-~])?)?", fullmatch=True),
)


@given(
    method=_token,
    uri=_uri,
    via=st.lists(_via, min_size=1, max_size=3).map(tuple),
    from_=_addr,
    to=_addr,
    call_id=st.from_regex(r"[!-~]{1,20}", fullmatch=True),
    number=st.integers(0, 2**32 - 1),
    max_forwards=st.one_of(st.none(), st.integers(0, 255)),
    contact=st.lists(_addr, max_size=2).map(tuple),
    headers=st.lists(_header, max_size=4).map(tuple),
    body=st.binary(max_size=40),
)
def test_parse_of_serialize_is_identity(
    method: str,
    uri: SipUri,
    via: tuple[Via, ...],
    from_: NameAddress,
    to: NameAddress,
    call_id: str,
    number: int,
    max_forwards: int | None,
    contact: tuple[NameAddress, ...],
    headers: tuple[tuple[str, str], ...],
    body: bytes,
) -> None:
    req = SipRequest(
        method,
        uri,
        via,
        from_,
        to,
        CallId(call_id),
        CSeq(number, method),
        max_forwards,
        contact,
        False,
        headers,
        body,
    )
    assert parse_message(serialize_request(req)) == req
    assert parse_message(serialize_request(req), stream=True) == req


# --------------------------------------------------------------------------- robustness
_SAMPLES = [
    invite(),
    msg("SIP/2.0 180 Ringing", *RESPONSE_LINES),
    *(p.read_bytes() for p in sorted((Path(__file__).parent / "data" / "rfc4475").glob("*.dat"))),
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            data[pos] = draw(st.sampled_from(b' \t\r\n:;,<>"\\=@/?%\x00\xff0aA'))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(_mutated())
def test_mutated_messages_parse_or_raise_parse_errors_and_round_trip(data: bytes) -> None:
    try:
        parsed = parse_message(data)
    except SipParseError as exc:
        error: SipParseError | None = exc
    else:
        error = None
    if error is not None:
        assert error.status_hint in (400, 505, 513)
        assert error.partial is not None
        return
    assert parse_message(parsed.to_bytes()) == parsed
    assert parse_message(parsed.to_bytes(), stream=True) == parsed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


def test_leading_crlfs_before_the_start_line_are_ignored() -> None:
    assert parse_request(b"\r\n\r\n" + invite()).body == SDP


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\r\n\r\n", True),
        (b"\r\n", True),
        (b"\x00\x00\x00\x00", True),
        (b" ", True),
        (b"", True),
        (b"\r\nOPTIONS", False),
        (invite(), False),
    ],
)
def test_is_keepalive(data: bytes, expected: bool) -> None:
    assert is_keepalive(data) is expected
    if expected:
        with pytest.raises(SipParseError):
            parse_message(data)
