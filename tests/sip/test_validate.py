"""pbx.sip.validate: the RFC 3261 8.2 UAS checks."""

from __future__ import annotations

import dataclasses

import pytest

from pbx.sip.message import CSeq, SipRequest
from pbx.sip.parse import parse_message
from pbx.sip.validate import (
    ACCEPT,
    ACCEPTED,
    ALLOW,
    ALLOW_HEADER,
    SUPPORTED,
    Rejection,
    outcome_for_datagram,
    validate_request,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def request(
    method: str = "INVITE",
    *extra: str,
    uri: str = "sip:1002@acme.example",
    cseq_method: str | None = None,
    body: bytes = b"",
    to: str = "<sip:1002@acme.example>",
) -> bytes:
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc;rport",
        "Max-Forwards: 70",
        "From: <sip:1001@acme.example>;tag=f1",
        f"To: {to}",
        "Call-ID: call-1@192.0.2.10",
        f"CSeq: 1 {cseq_method or method}",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def check(data: bytes) -> Rejection | None:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return validate_request(msg)


@pytest.mark.parametrize("method", ALLOW)
def test_allowed_methods_pass(method: str) -> None:
    assert check(request(method)) is None


def test_invite_with_sdp_passes() -> None:
    assert check(request("INVITE", "Content-Type: application/sdp", body=SDP)) is None
    assert check(request("INVITE", "c: Application/SDP; charset=utf-8", body=SDP)) is None


@pytest.mark.parametrize("method", ["PRACK", "MESSAGE", "NOTIFY", "SUBSCRIBE", "REFER", "PUBLISH"])
def test_known_methods_we_do_not_offer_get_405_with_allow(method: str) -> None:
    assert check(request(method)) == Rejection(
        405, "Method Not Allowed", (("Allow", ALLOW_HEADER),)
    )


@pytest.mark.parametrize("method", ["NEWMETHOD", "RE%47IST%45R", "invite"])
def test_unknown_methods_get_501_with_allow(method: str) -> None:
    rejection = check(request(method))
    assert rejection is not None
    assert rejection.status == 501
    assert dict(rejection.headers)["Allow"] == ALLOW_HEADER


def test_unknown_method_is_501_even_when_cseq_disagrees() -> None:
    rejection = check(request("NEWMETHOD", cseq_method="INVITE"))
    assert rejection is not None
    assert rejection.status == 501


def test_cseq_method_mismatch_is_400() -> None:
    rejection = check(request("OPTIONS", cseq_method="INVITE"))
    assert rejection is not None
    assert rejection.status == 400


def test_out_of_range_values_built_in_code_are_400() -> None:
    msg = parse_message(request("OPTIONS"))
    assert isinstance(msg, SipRequest)
    assert validate_request(dataclasses.replace(msg, cseq=CSeq(2**32, "OPTIONS"))) == Rejection(
        400, "CSeq Out Of Range"
    )
    rejection = validate_request(dataclasses.replace(msg, max_forwards=256))
    assert rejection is not None
    assert rejection.status == 400
    rejection = validate_request(dataclasses.replace(msg, version="SIP/3.0"))
    assert rejection is not None
    assert rejection.status == 505


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        ("nobodyKnowsThisScheme:totallyopaquecontent", 416),
        ("soap.beep://192.0.2.103:3002", 416),
        ("http://example.com/", 416),
        ("tel:+81312345678", None),
        ("sips:1002@acme.example", None),
        ("sip:1002@acme.example?Route=%3Csip:x%3E", 400),
    ],
)
def test_request_uri_scheme(uri: str, status: int | None) -> None:
    rejection = check(request("OPTIONS", uri=uri))
    assert (rejection.status if rejection else None) == status


def test_unknown_require_gets_420_listing_the_unsupported_tags() -> None:
    rejection = check(request("INVITE", "Require: 100rel, Timer", "Require: replaces"))
    assert rejection == Rejection(
        420, "Bad Extension", (("Unsupported", "100rel, Timer, replaces"),)
    )
    assert SUPPORTED == ()


def test_proxy_require_is_not_a_uas_concern() -> None:
    assert check(request("OPTIONS", "Proxy-Require: noProxiesSupportThis")) is None


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_require_is_ignored_in_ack_and_cancel(method: str) -> None:
    assert check(request(method, "Require: 100rel")) is None


def test_register_to_must_be_a_sip_uri() -> None:
    rejection = check(request("REGISTER", uri="sip:acme.example", to="isbn:2983792873"))
    assert rejection is not None
    assert rejection.status == 400
    assert check(request("REGISTER", uri="sip:acme.example", to="<sips:1001@acme.example>")) is None


def test_register_contact_star_needs_expires_zero() -> None:
    rejection = check(request("REGISTER", "Contact: *", uri="sip:acme.example"))
    assert rejection is not None
    assert rejection.status == 400
    assert check(request("REGISTER", "Contact: *", "Expires: 0", uri="sip:acme.example")) is None


def test_invite_body_of_unknown_type_gets_415_with_accept() -> None:
    rejection = check(request("INVITE", "Content-Type: application/unknownformat", body=b"<x/>"))
    assert rejection == Rejection(415, "Unsupported Media Type", (("Accept", ", ".join(ACCEPT)),))


def test_update_body_is_checked_too_but_info_body_is_not() -> None:
    rejection = check(request("UPDATE", "Content-Type: text/plain", body=b"x"))
    assert rejection is not None
    assert rejection.status == 415
    assert check(request("INFO", "Content-Type: application/dtmf-relay", body=b"Signal=1")) is None


def test_compressed_body_gets_415() -> None:
    rejection = check(
        request("INVITE", "Content-Type: application/sdp", "Content-Encoding: gzip", body=SDP)
    )
    assert rejection is not None
    assert rejection.status == 415
    assert ("Accept-Encoding", "identity") in rejection.headers


def test_body_without_content_type_is_400() -> None:
    rejection = check(request("INVITE", body=SDP))
    assert rejection is not None
    assert rejection.status == 400


def test_invite_whose_accept_excludes_sdp_gets_406() -> None:
    rejection = check(request("INVITE", "Accept: text/nobodyKnowsThis"))
    assert rejection is not None
    assert rejection.status == 406
    assert check(request("INVITE", "Accept: text/plain, application/sdp;q=0.5")) is None
    assert check(request("INVITE", "Accept: application/*")) is None
    assert check(request("INVITE", "Accept: */*")) is None
    # Only INVITE answers must carry SDP.
    assert check(request("OPTIONS", "Accept: text/nobodyKnowsThis")) is None


def test_outcome_for_datagram() -> None:
    assert outcome_for_datagram(request("OPTIONS")) == ACCEPTED
    assert outcome_for_datagram(request("MESSAGE")) == 405
    assert outcome_for_datagram(request("OPTIONS", "Max-Forwards: 3")) == 400
    assert outcome_for_datagram(b"garbage") is None
    assert (
        outcome_for_datagram(request("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)) == 505
    )
    assert outcome_for_datagram(request("OPTIONS") + b"x" * 70000) == 513
    # ACKs and responses are never answered.
    assert outcome_for_datagram(request("ACK", "Require: x", cseq_method="INVITE")) is None
    assert outcome_for_datagram(request("ACK", "Max-Forwards: 3")) is None
    response = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert outcome_for_datagram(response) is None


def test_allow_lists_what_we_implement() -> None:
    assert ALLOW_HEADER == "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE"
