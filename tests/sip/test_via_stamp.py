"""RFC 3261 18.2.1 / RFC 3581 4: the top Via of a received request, as the server keeps it."""

from __future__ import annotations

import pytest

from pbx.sip.message import SipRequest, SipResponse, Via
from pbx.sip.parse import parse_message


@pytest.mark.parametrize(
    ("params", "host", "source", "expected"),
    [
        # Sent-by matches the source and no rport asked: kept as is.
        ((("branch", "z9hG4bK1"),), "10.0.0.1", ("10.0.0.1", 5060), None),
        # rport asked: filled with the source port, and received added even for the same host.
        (
            (("branch", "z9hG4bK1"), ("rport", None)),
            "10.0.0.1",
            ("10.0.0.1", 40000),
            (("branch", "z9hG4bK1"), ("rport", "40000"), ("received", "10.0.0.1")),
        ),
        # Another host: received added.
        (
            (("branch", "z9hG4bK1"),),
            "phone.example",
            ("192.0.2.7", 5060),
            (("branch", "z9hG4bK1"), ("received", "192.0.2.7")),
        ),
        # A received the client wrote itself is replaced.
        (
            (("received", "1.2.3.4"), ("branch", "z9hG4bK1")),
            "phone.example",
            ("192.0.2.7", 5060),
            (("branch", "z9hG4bK1"), ("received", "192.0.2.7")),
        ),
        # An IPv6 reference in brackets compares equal to the bare source address.
        ((("branch", "z9hG4bK1"),), "[2001:db8::1]", ("2001:db8::1", 5060), None),
    ],
)
def test_stamped(
    params: tuple[tuple[str, str | None], ...],
    host: str,
    source: tuple[str, int],
    expected: tuple[tuple[str, str | None], ...] | None,
) -> None:
    via = Via("UDP", host, 5060, params)
    stamped = via.stamped(source)
    if expected is None:
        assert stamped is via
    else:
        assert stamped.params == expected
        assert (stamped.transport, stamped.host, stamped.port) == ("UDP", host, 5060)


REQUEST = (
    b"OPTIONS sip:pbx.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP phone.example:5060;branch=z9hG4bK1;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example;branch=z9hG4bK0\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@pbx.example>;tag=1\r\nTo: <sip:pbx.example>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def test_parse_stamps_only_the_top_via_of_a_request() -> None:
    msg = parse_message(REQUEST, source=("192.0.2.7", 41000))
    assert isinstance(msg, SipRequest)
    assert msg.via[0].params == (
        ("branch", "z9hG4bK1"),
        ("rport", "41000"),
        ("received", "192.0.2.7"),
    )
    assert msg.via[1].params == (("branch", "z9hG4bK0"),)
    assert parse_message(REQUEST).via[0].params == (("branch", "z9hG4bK1"), ("rport", None))


def test_parse_leaves_responses_alone() -> None:
    response = REQUEST.replace(b"OPTIONS sip:pbx.example SIP/2.0", b"SIP/2.0 200 OK")
    msg = parse_message(response, source=("192.0.2.7", 41000))
    assert isinstance(msg, SipResponse)
    assert msg.via[0].params == (("branch", "z9hG4bK1"), ("rport", None))
