"""Message builders: RFC 3261 8.2.6 (responses), 17.1.1.3 (ACK for non-2xx), 9.1 (CANCEL)."""

from __future__ import annotations

import pytest

from pbx.errors import LocalProtocolError
from pbx.sip.build import (
    build_ack_for_non2xx,
    build_cancel,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    reason_phrase,
)
from pbx.sip.message import (
    MAGIC_COOKIE,
    CallId,
    CSeq,
    NameAddress,
    SipRequest,
    SipUri,
    Via,
)


def make_invite(**overrides: object) -> SipRequest:
    fields: dict[str, object] = {
        "method": "INVITE",
        "uri": SipUri("sip", "example.com", user="1001"),
        "via": (
            Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bKproxy"),)),
            Via("UDP", "192.0.2.5", 5062, (("branch", "z9hG4bKphone"), ("rport", None))),
        ),
        "from_": NameAddress(SipUri("sip", "example.com", user="2001"), None, (("tag", "f1"),)),
        "to": NameAddress(SipUri("sip", "example.com", user="1001")),
        "call_id": CallId("abc@192.0.2.5"),
        "cseq": CSeq(7, "INVITE"),
        "contact": (NameAddress(SipUri("sip", "192.0.2.5", user="2001", port=5062)),),
        "headers": (
            ("Route", "<sip:10.0.0.1;lr>"),
            ("Subject", "hi"),
            ("Route", "<sip:10.0.0.2;lr>"),
            ("Timestamp", "54.2"),
        ),
        "body": b"v=0\r\n",
    }
    fields.update(overrides)
    return SipRequest(**fields)  # type: ignore[arg-type]


def test_build_response_copies_via_from_to_call_id_and_cseq() -> None:
    invite = make_invite()
    resp = build_response(invite, 486)
    assert resp.via == invite.via
    assert resp.from_ == invite.from_
    assert resp.call_id == invite.call_id
    assert resp.cseq == invite.cseq
    assert resp.reason == "Busy Here"
    assert resp.body == b""
    assert resp.contact == ()


def test_build_response_adds_to_tag_when_the_request_has_none() -> None:
    resp = build_response(make_invite(), 180, to_tag="t9")
    assert resp.to.tag == "t9"
    assert resp.to.uri == make_invite().to.uri


def test_build_response_keeps_an_existing_to_tag() -> None:
    invite = make_invite(to=make_invite().to.with_tag("old"))
    assert build_response(invite, 200, to_tag="new").to.tag == "old"


def test_build_response_never_tags_a_100() -> None:
    assert build_response(make_invite(), 100, to_tag="t9").to.tag is None


def test_build_response_100_copies_timestamp() -> None:
    resp = build_response(make_invite(), 100)
    assert resp.header("Timestamp") == "54.2"
    assert build_response(make_invite(), 180).header("Timestamp") is None


def test_build_response_takes_custom_reason_contact_headers_and_body() -> None:
    contact = (NameAddress(SipUri("sip", "10.0.0.1", user="pbx")),)
    resp = build_response(
        make_invite(),
        200,
        "Fine",
        to_tag="x",
        contact=contact,
        headers=[("Content-Type", "application/sdp")],
        body=b"v=0\r\n",
    )
    assert (resp.reason, resp.contact, resp.body) == ("Fine", contact, b"v=0\r\n")
    assert resp.header("content-type") == "application/sdp"


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(100, "Trying"), (481, "Call/Transaction Does Not Exist"), (499, "Client Error")],
)
def test_reason_phrase_uses_the_standard_table_then_the_class(status: int, phrase: str) -> None:
    assert reason_phrase(status) == phrase


def test_build_response_refuses_ack_and_bad_status() -> None:
    ack = make_invite(method="ACK", cseq=CSeq(7, "ACK"))
    with pytest.raises(LocalProtocolError):
        build_response(ack, 200)
    with pytest.raises(LocalProtocolError):
        build_response(make_invite(), 99)


def test_build_ack_for_non2xx_uses_top_via_and_the_response_to() -> None:
    invite = make_invite()
    resp = build_response(invite, 404, to_tag="srv")
    ack = build_ack_for_non2xx(invite, resp)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.via == invite.via[:1]
    assert ack.from_ == invite.from_
    assert ack.to.tag == "srv"
    assert ack.call_id == invite.call_id
    assert ack.cseq == CSeq(7, "ACK")
    assert ack.headers == (("Route", "<sip:10.0.0.1;lr>"), ("Route", "<sip:10.0.0.2;lr>"))
    assert ack.body == b""


def test_build_ack_for_non2xx_refuses_2xx() -> None:
    invite = make_invite()
    with pytest.raises(LocalProtocolError):
        build_ack_for_non2xx(invite, build_response(invite, 200, to_tag="x"))


def test_build_cancel_copies_the_invite_identity_and_top_via() -> None:
    invite = make_invite()
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert (cancel.uri, cancel.from_, cancel.to, cancel.call_id) == (
        invite.uri,
        invite.from_,
        invite.to,
        invite.call_id,
    )
    assert cancel.via == invite.via[:1]
    assert cancel.cseq == CSeq(7, "CANCEL")
    assert [k for k, _ in cancel.headers] == ["Route", "Route"]
    assert cancel.body == b""


def test_build_cancel_refuses_non_invite() -> None:
    with pytest.raises(LocalProtocolError):
        build_cancel(make_invite(method="BYE", cseq=CSeq(8, "BYE")))


def test_new_branch_starts_with_the_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE) + 16 for b in branches)


def test_new_tag_and_call_id_are_random() -> None:
    assert new_tag() != new_tag()
    call_id = new_call_id("192.0.2.10")
    assert call_id.endswith("@192.0.2.10")
    assert call_id != new_call_id("192.0.2.10")
