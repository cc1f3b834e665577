"""pbx.sip.dialog: RFC 3261 dialogs (12, 13.2.2.4, 13.3.1.4, 14, 15) and the B2BUA helpers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pbx.errors import LocalProtocolError, RemoteProtocolError
from pbx.sip.build import build_response
from pbx.sip.dialog import (
    AckTimedOut,
    Dialog,
    DialogId,
    DialogRole,
    DialogState,
    OutgoingInvite,
    RetransmitState,
    TwoXxAcknowledged,
    TwoXxRetransmitter,
    copy_request,
    end_to_end_headers,
    next_hop_uri,
    relay_response,
)
from pbx.sip.message import (
    CallId,
    CSeq,
    NameAddress,
    SipRequest,
    SipResponse,
    SipUri,
    Tag,
    Via,
)
from pbx.sip.parse import parse_message, parse_name_addr, parse_uri
from pbx.sip.transaction import SipTimers


def uri(text: str) -> SipUri:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipUri)
    return parsed


def addr(text: str) -> NameAddress:
    return parse_name_addr(text)


PHONE_VIA = Via("UDP", "192.0.2.10", 5060, (("branch", "z9hG4bKphone1"), ("rport", None)))
OUR_VIA = Via("UDP", "198.51.100.1", 5060)
OUR_CONTACT = addr("<sip:pbx@198.51.100.1:5060>")


def incoming_invite(
    *,
    record_route: tuple[str, ...] = (),
    cseq: int = 101,
    contact: str = "<sip:alice@192.0.2.10:5062;transport=udp>",
    request_uri: str = "sip:201@acme.example",
) -> SipRequest:
    """An INVITE from a phone (through proxies when record_route is given)."""
    return SipRequest(
        method="INVITE",
        uri=uri(request_uri),
        via=(PHONE_VIA,),
        from_=addr('"Alice" <sip:101@acme.example>;tag=a-tag'),
        to=addr("<sip:201@acme.example>"),
        call_id=CallId("call-a@192.0.2.10"),
        cseq=CSeq(cseq, "INVITE"),
        contact=(addr(contact),),
        headers=(
            *(("Record-Route", rr) for rr in record_route),
            ("Content-Type", "application/sdp"),
        ),
        body=b"v=0\r\n",
    )


def uas_dialog(**kwargs: object) -> tuple[Dialog, SipRequest]:
    invite = incoming_invite(**kwargs)  # type: ignore[arg-type]
    dialog = Dialog.from_invite_as_uas(invite, "our-a-tag", OUR_CONTACT, local_via=OUR_VIA)
    return dialog, invite


def phone_request(
    dialog: Dialog, method: str, cseq: int, *, contact: str | None = None, body: bytes = b""
) -> SipRequest:
    """A request the remote side sends within ``dialog``."""
    return SipRequest(
        method=method,
        uri=uri("sip:pbx@198.51.100.1:5060"),
        via=(Via("UDP", "192.0.2.10", 5060, (("branch", f"z9hG4bK{method}{cseq}"),)),),
        from_=dialog.remote,
        to=dialog.local,
        call_id=dialog.call_id,
        cseq=CSeq(cseq, method),
        contact=(addr(contact),) if contact else (),
        body=body,
    )


def outgoing(**kwargs: object) -> OutgoingInvite:
    args: dict[str, object] = {
        "request_uri": uri("sip:0312345678@trunk.example"),
        "from_": addr("<sip:0501111111@pbx.example>"),
        "to": addr("<sip:0312345678@trunk.example>"),
        "contact": OUR_CONTACT,
        "via": OUR_VIA,
        "call_id": CallId("call-b@198.51.100.1"),
        "body": b"v=0\r\n",
        "content_type": "application/sdp",
    }
    args.update(kwargs)
    return OutgoingInvite.build(**args)  # type: ignore[arg-type]


def answer(
    invite: SipRequest,
    status: int,
    *,
    to_tag: str | None = "b-tag",
    contact: str | None = "<sip:carrier@203.0.113.5:5080>",
    record_route: tuple[str, ...] = (),
) -> SipResponse:
    """A response from the far end (through proxies that echo Record-Route)."""
    return build_response(
        invite,
        status,
        to_tag=to_tag,
        contact=(addr(contact),) if contact else (),
        headers=tuple(("Record-Route", rr) for rr in record_route),
    )


def route_values(request: SipRequest) -> list[str]:
    return request.header_values("Route")


# ---------------------------------------------------------------------------------------------
# UAS dialog creation (12.1.1)


def test_uas_dialog_from_invite_takes_ids_target_and_cseq() -> None:
    dialog, invite = uas_dialog()
    assert dialog.role is DialogRole.UAS
    assert dialog.state is DialogState.EARLY
    assert dialog.id == DialogId(invite.call_id, Tag("our-a-tag"), Tag("a-tag"))
    assert dialog.local.tag == "our-a-tag"
    assert dialog.local.uri == invite.to.uri
    assert dialog.remote == invite.from_
    assert dialog.remote_cseq == 101
    assert dialog.remote_target == uri("sip:alice@192.0.2.10:5062;transport=udp")
    assert dialog.route_set == ()
    assert not dialog.secure


def test_uas_dialog_route_set_is_record_route_in_request_order() -> None:
    dialog, _ = uas_dialog(
        record_route=("<sip:p1.example;lr>, <sip:p2.example;lr>", "<sip:p3.example;lr>")
    )
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example;lr",
        "sip:p2.example;lr",
        "sip:p3.example;lr",
    ]


def test_uas_dialog_without_contact_is_a_400() -> None:
    invite = replace(incoming_invite(), contact=())
    with pytest.raises(RemoteProtocolError) as info:
        Dialog.from_invite_as_uas(invite, "t", OUR_CONTACT)
    assert info.value.status_hint == 400


def test_uas_dialog_refuses_a_reinvite() -> None:
    invite = replace(incoming_invite(), to=addr("<sip:201@acme.example>;tag=x"))
    with pytest.raises(LocalProtocolError):
        Dialog.from_invite_as_uas(invite, "t", OUR_CONTACT)


def test_uas_secure_flag_needs_tls_and_sips() -> None:
    sips = incoming_invite(request_uri="sips:201@acme.example")
    assert Dialog.from_invite_as_uas(sips, "t", OUR_CONTACT, secure=True).secure
    assert not Dialog.from_invite_as_uas(sips, "t", OUR_CONTACT, secure=False).secure
    assert not Dialog.from_invite_as_uas(incoming_invite(), "t", OUR_CONTACT, secure=True).secure


def test_uas_responses_carry_tag_contact_and_record_route_then_2xx_confirms() -> None:
    rr = ("<sip:p1.example;lr>", "<sip:p2.example;lr;foo=bar>")
    dialog, invite = uas_dialog(record_route=rr)
    trying = dialog.respond(invite, 100)
    assert trying.to.tag is None
    assert not trying.contact
    ringing = dialog.respond(invite, 180)
    assert ringing.to.tag == "our-a-tag"
    assert ringing.contact == (OUR_CONTACT,)
    assert ringing.header_values("Record-Route") == list(rr)
    assert dialog.is_early
    ok = dialog.respond(invite, 200, body=b"v=0\r\n", content_type="application/sdp")
    assert ok.reason == "OK"
    assert ok.to.tag == "our-a-tag"
    assert ok.header("Content-Type") == "application/sdp"
    assert ok.header_values("Record-Route") == list(rr)
    assert dialog.state is DialogState.CONFIRMED
    assert not dialog.invite_in_progress
    # The response is well formed on the wire.
    parsed = parse_message(ok.to_bytes())
    assert isinstance(parsed, SipResponse)
    assert parsed.to.tag == "our-a-tag"


def test_uas_error_final_ends_the_early_dialog() -> None:
    dialog, invite = uas_dialog()
    busy = dialog.respond(invite, 486)
    assert busy.to.tag == "our-a-tag"
    assert not busy.contact
    assert busy.header("Record-Route") is None
    assert dialog.state is DialogState.TERMINATED


# ---------------------------------------------------------------------------------------------
# UAC: the INVITE and the dialogs its responses make (12.1.2, 13.2.2.4)


def test_outgoing_invite_has_everything_8_1_1_asks_for() -> None:
    out = outgoing(route=(addr("<sip:trunk-proxy.example;lr>"),), headers=(("X-Test", "1"),))
    req = out.request
    assert req.method == "INVITE"
    assert req.uri == uri("sip:0312345678@trunk.example")
    assert req.from_.tag
    assert req.to.tag is None
    assert req.cseq == CSeq(1, "INVITE")
    assert req.max_forwards == 70
    assert req.contact == (OUR_CONTACT,)
    assert req.via[0].branch is not None
    assert req.via[0].branch.startswith("z9hG4bK")
    assert route_values(req) == ["<sip:trunk-proxy.example;lr>"]
    assert req.header("Content-Type") == "application/sdp"
    assert req.header("X-Test") == "1"
    assert next_hop_uri(req) == uri("sip:trunk-proxy.example;lr")
    parsed = parse_message(req.to_bytes())
    assert isinstance(parsed, SipRequest)
    assert parsed.from_.tag == req.from_.tag
    assert parsed.body == b"v=0\r\n"


def test_outgoing_invite_makes_a_fresh_call_id_and_tag_when_not_given() -> None:
    one = outgoing(call_id=None).request
    two = outgoing(call_id=None).request
    assert one.call_id != two.call_id
    assert one.call_id.endswith("@198.51.100.1")
    assert one.from_.tag != two.from_.tag


def test_uac_dialog_from_2xx_reverses_record_route_and_targets_contact() -> None:
    out = outgoing()
    ok = answer(out.request, 200, record_route=("<sip:p2.example;lr>", "<sip:p1.example;lr>"))
    dialog = Dialog.from_response_as_uac(out.request, ok)
    assert dialog.role is DialogRole.UAC
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId(
        out.request.call_id, out.request.from_.tag or Tag(""), Tag("b-tag")
    )
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example;lr", "sip:p2.example;lr"]
    assert dialog.remote_target == uri("sip:carrier@203.0.113.5:5080")
    assert dialog.local_cseq == 1
    assert dialog.remote_cseq is None
    assert dialog.local == out.request.from_
    assert dialog.remote.tag == "b-tag"


def test_uac_early_dialog_from_180_then_2xx_confirms_and_recomputes_route_set() -> None:
    out = outgoing()
    ringing = answer(
        out.request, 180, contact="<sip:early@203.0.113.5>", record_route=("<sip:old.example;lr>",)
    )
    dialog = out.receive_response(ringing)
    assert dialog is not None
    assert dialog.is_early
    assert dialog.remote_target == uri("sip:early@203.0.113.5")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:old.example;lr"]
    ok = answer(out.request, 200, record_route=("<sip:b.example;lr>", "<sip:a.example;lr>"))
    assert out.receive_response(ok) is dialog
    assert dialog.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in dialog.route_set] == ["sip:a.example;lr", "sip:b.example;lr"]
    assert dialog.remote_target == uri("sip:carrier@203.0.113.5:5080")
    assert out.confirmed_dialogs == [dialog]


def test_100_and_untagged_provisionals_make_no_dialog() -> None:
    out = outgoing()
    assert out.receive_response(answer(out.request, 100, to_tag=None, contact=None)) is None
    assert out.receive_response(answer(out.request, 180, to_tag=None)) is None
    assert out.dialogs == {}


def test_provisional_without_contact_keeps_request_uri_as_target() -> None:
    out = outgoing()
    dialog = out.receive_response(answer(out.request, 183, contact=None))
    assert dialog is not None
    assert dialog.remote_target == out.request.uri


def test_forked_invite_keeps_one_early_dialog_per_to_tag() -> None:
    out = outgoing()
    d1 = out.receive_response(answer(out.request, 180, to_tag="fork1"))
    d2 = out.receive_response(answer(out.request, 183, to_tag="fork2"))
    again = out.receive_response(answer(out.request, 180, to_tag="fork1"))
    assert d1 is not None
    assert d2 is not None
    assert d1 is again
    assert d1 is not d2
    assert d1.id.remote_tag == "fork1"
    assert d2.id.remote_tag == "fork2"
    assert out.early_dialogs == [d1, d2]
    winner = out.receive_response(answer(out.request, 200, to_tag="fork2"))
    assert winner is d2
    assert out.confirmed_dialogs == [d2]
    assert out.early_dialogs == [d1]
    assert out.terminate_early() == [d1]
    assert d1.state is DialogState.TERMINATED


def test_2xx_on_a_fork_ended_locally_still_returns_it_for_ack_and_bye() -> None:
    out = outgoing()
    late = out.receive_response(answer(out.request, 180, to_tag="late"))
    out.receive_response(answer(out.request, 200, to_tag="winner"))
    assert out.terminate_early() == [late]
    ok = answer(out.request, 200, to_tag="late")
    assert out.receive_response(ok) is late
    assert late is not None
    assert late.ack_for(ok).cseq == CSeq(1, "ACK")
    assert late.new_request("BYE").to.tag == "late"


def test_two_forks_answering_make_two_confirmed_dialogs() -> None:
    out = outgoing()
    first = out.receive_response(answer(out.request, 200, to_tag="x"))
    second = out.receive_response(answer(out.request, 200, to_tag="y"))
    assert first is not None
    assert second is not None
    assert out.confirmed_dialogs == [first, second]
    # Both must be ACKed; the extra one is then sent a BYE.
    assert first.ack_for(answer(out.request, 200, to_tag="x")).to.tag == "x"
    bye = second.new_request("BYE")
    assert bye.to.tag == "y"
    assert second.state is DialogState.TERMINATED


def test_error_final_ends_every_early_dialog() -> None:
    out = outgoing()
    d1 = out.receive_response(answer(out.request, 180, to_tag="f1"))
    d2 = out.receive_response(answer(out.request, 180, to_tag="f2"))
    assert out.receive_response(answer(out.request, 486, to_tag="f3")) is None
    assert d1 is not None
    assert d2 is not None
    assert d1.state is DialogState.TERMINATED
    assert d2.state is DialogState.TERMINATED
    assert out.final_status == 486
    # A provisional straggling in after the final opens nothing.
    assert out.receive_response(answer(out.request, 180, to_tag="f4")) is None


def test_late_180_after_200_leaves_the_dialog_confirmed() -> None:
    out = outgoing()
    dialog = out.receive_response(answer(out.request, 200))
    assert out.receive_response(answer(out.request, 180)) is dialog
    assert dialog is not None
    assert dialog.state is DialogState.CONFIRMED


def test_response_to_another_invite_is_refused() -> None:
    out = outgoing()
    other = replace(answer(out.request, 200), cseq=CSeq(7, "INVITE"))
    with pytest.raises(LocalProtocolError):
        out.receive_response(other)


def test_with_credentials_bumps_cseq_and_branch_and_replaces_auth() -> None:
    out = outgoing(headers=(("Proxy-Authorization", "Digest old"),))
    assert out.receive_response(answer(out.request, 407)) is None
    retry = out.with_credentials([("Proxy-Authorization", "Digest new")])
    req = retry.request
    assert req.cseq == CSeq(2, "INVITE")
    assert req.call_id == out.request.call_id
    assert req.from_ == out.request.from_
    assert req.via[0].branch != out.request.via[0].branch
    assert req.header_values("Proxy-Authorization") == ["Digest new"]
    dialog = retry.receive_response(answer(req, 200))
    assert dialog is not None
    assert dialog.local_cseq == 2
    # 22.1: the ACK carries the INVITE's credentials.
    ack = dialog.ack_for(answer(req, 200))
    assert ack.cseq == CSeq(2, "ACK")
    assert ack.header("Proxy-Authorization") == "Digest new"


# ---------------------------------------------------------------------------------------------
# Requests within a dialog (12.2.1.1)


def confirmed_uac(record_route: tuple[str, ...] = ()) -> tuple[Dialog, OutgoingInvite]:
    out = outgoing()
    dialog = out.receive_response(answer(out.request, 200, record_route=record_route))
    assert dialog is not None
    return dialog, out


def test_in_dialog_request_without_route_set_goes_to_remote_target() -> None:
    dialog, _ = confirmed_uac()
    bye = dialog.new_request("BYE")
    assert bye.uri == uri("sip:carrier@203.0.113.5:5080")
    assert route_values(bye) == []
    assert bye.cseq == CSeq(2, "BYE")
    assert bye.max_forwards == 70
    assert bye.call_id == dialog.call_id
    assert bye.from_ == dialog.local
    assert bye.to == dialog.remote
    assert not bye.contact
    assert bye.via[0].host == "198.51.100.1"
    assert bye.via[0].branch is not None
    assert dialog.next_hop == bye.uri


def test_loose_routing_keeps_remote_target_and_lists_route_set() -> None:
    dialog, _ = confirmed_uac(("<sip:p2.example;lr>", "<sip:p1.example;lr>"))
    info = dialog.new_request("INFO", body=b"Signal=1\r\n", content_type="application/dtmf-relay")
    assert info.uri == dialog.remote_target
    assert route_values(info) == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert next_hop_uri(info) == uri("sip:p1.example;lr")
    assert dialog.next_hop == uri("sip:p1.example;lr")
    assert info.header("Content-Type") == "application/dtmf-relay"
    assert info.body == b"Signal=1\r\n"


def test_strict_routing_puts_first_route_in_request_uri_and_target_last() -> None:
    # Record-Route as received (closest to us last); the first route (p1) is a strict router.
    dialog, _ = confirmed_uac(
        ("<sip:p2.example;lr>", "<sip:p1.example;method=INVITE;maddr=10.0.0.1>")
    )
    bye = dialog.new_request("BYE")
    assert bye.uri == uri("sip:p1.example;maddr=10.0.0.1")
    assert route_values(bye) == ["<sip:p2.example;lr>", "<sip:carrier@203.0.113.5:5080>"]
    # 8.1.2: a strictly routed request goes to its Request-URI, not to the first Route.
    assert dialog.next_hop == bye.uri


def test_strict_routing_on_uas_side_uses_request_order() -> None:
    dialog, invite = uas_dialog(record_route=("<sip:strict.example>", "<sip:loose.example;lr>"))
    dialog.respond(invite, 200)
    bye = dialog.new_request("BYE")
    assert bye.uri == uri("sip:strict.example")
    assert route_values(bye) == [
        "<sip:loose.example;lr>",
        "<sip:alice@192.0.2.10:5062;transport=udp>",
    ]


def test_uas_side_requests_number_from_one_and_swap_from_and_to() -> None:
    dialog, invite = uas_dialog(record_route=("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    dialog.respond(invite, 200)
    bye = dialog.new_request("BYE")
    assert bye.cseq == CSeq(1, "BYE")
    assert bye.from_.tag == "our-a-tag"
    assert bye.to.tag == "a-tag"
    assert bye.uri == uri("sip:alice@192.0.2.10:5062;transport=udp")
    assert route_values(bye) == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]


def test_cseq_increments_per_request_and_reinvite_carries_contact() -> None:
    dialog, _ = confirmed_uac()
    update = dialog.new_request("UPDATE", body=b"v=0\r\n", content_type="application/sdp")
    info = dialog.new_request("INFO")
    reinvite = dialog.new_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert [update.cseq.number, info.cseq.number, reinvite.cseq.number] == [2, 3, 4]
    assert update.contact == (OUR_CONTACT,)
    assert not info.contact
    assert reinvite.contact == (OUR_CONTACT,)
    assert len({update.via[0].branch, info.via[0].branch, reinvite.via[0].branch}) == 3
    assert dialog.invite_in_progress


def test_callee_may_not_bye_an_early_dialog() -> None:
    dialog, _ = uas_dialog()
    with pytest.raises(LocalProtocolError):
        dialog.new_request("BYE")


def test_caller_may_bye_an_early_dialog() -> None:
    out = outgoing()
    dialog = out.receive_response(answer(out.request, 180))
    assert dialog is not None
    assert dialog.new_request("BYE").cseq == CSeq(2, "BYE")


def test_ack_and_cancel_are_not_built_by_new_request() -> None:
    dialog, _ = confirmed_uac()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(LocalProtocolError):
            dialog.new_request(method)


def test_no_reinvite_while_an_invite_is_in_progress() -> None:
    dialog, _ = confirmed_uac()
    reinvite = dialog.new_request("INVITE")
    with pytest.raises(LocalProtocolError):
        dialog.new_request("INVITE")
    dialog.receive_response(answer(reinvite, 200))
    assert not dialog.invite_in_progress
    assert dialog.new_request("INVITE").cseq.number == 3  # the refused one took no number


def test_requests_without_local_via_leave_via_to_the_adapter() -> None:
    dialog, invite = uas_dialog()
    dialog.local_via = None
    dialog.respond(invite, 200)
    assert dialog.new_request("BYE").via == ()


# ---------------------------------------------------------------------------------------------
# ACK for a 2xx (13.2.2.4)


def test_ack_for_2xx_has_invite_cseq_new_branch_and_route_set() -> None:
    out = outgoing()
    ok = answer(out.request, 200, record_route=("<sip:p2.example;lr>", "<sip:p1.example;lr>"))
    dialog = out.receive_response(ok)
    assert dialog is not None
    ack = dialog.ack_for(ok)
    assert ack.method == "ACK"
    assert ack.cseq == CSeq(1, "ACK")
    assert ack.uri == uri("sip:carrier@203.0.113.5:5080")
    assert route_values(ack) == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert ack.via[0].branch != out.request.via[0].branch
    assert ack.to.tag == "b-tag"
    assert ack.from_ == out.request.from_
    assert ack.body == b""
    assert dialog.local_cseq == 1  # the ACK takes no new number
    # A retransmitted 2xx gets the same ACK again.
    assert dialog.ack_for(ok) is ack


def test_ack_for_reinvite_2xx_uses_the_reinvite_cseq_and_may_carry_an_answer() -> None:
    dialog, _ = confirmed_uac()
    reinvite = dialog.new_request("INVITE")
    ok = answer(reinvite, 200)
    dialog.receive_response(ok)
    ack = dialog.ack_for(ok, body=b"v=0\r\n", content_type="application/sdp")
    assert ack.cseq == CSeq(2, "ACK")
    assert ack.body == b"v=0\r\n"
    assert ack.header("Content-Type") == "application/sdp"


def test_ack_for_refuses_non_2xx() -> None:
    dialog, out = confirmed_uac()
    with pytest.raises(LocalProtocolError):
        dialog.ack_for(answer(out.request, 486))


# ---------------------------------------------------------------------------------------------
# Requests received within a dialog (12.2.2)


def test_in_order_requests_update_remote_cseq() -> None:
    dialog, invite = uas_dialog()
    dialog.respond(invite, 200)
    assert dialog.receive_request(phone_request(dialog, "INFO", 102)) is None
    assert dialog.remote_cseq == 102
    # 12.2.2 only rejects lower numbers; gaps are fine.
    assert dialog.receive_request(phone_request(dialog, "INFO", 150)) is None
    assert dialog.remote_cseq == 150


def test_lower_cseq_is_answered_500() -> None:
    dialog, invite = uas_dialog()
    dialog.respond(invite, 200)
    assert dialog.receive_request(phone_request(dialog, "INFO", 105)) is None
    old = phone_request(dialog, "INFO", 104)
    rejection = dialog.receive_request(old)
    assert rejection is not None
    assert rejection.status == 500
    assert rejection.cseq == old.cseq
    assert rejection.to.tag == "our-a-tag"
    assert dialog.remote_cseq == 105


def test_unknown_remote_cseq_accepts_any_first_request() -> None:
    dialog, _ = confirmed_uac()
    empty = dialog.remote_cseq
    assert empty is None
    incoming = phone_request(dialog, "BYE", 1)
    assert dialog.receive_request(incoming) is None
    assert dialog.remote_cseq == 1
    assert dialog.state is DialogState.TERMINATED


def test_ack_is_not_ordered_against_later_requests() -> None:
    dialog, invite = uas_dialog()
    dialog.respond(invite, 200)
    dialog.receive_request(phone_request(dialog, "INFO", 102))
    assert dialog.receive_request(phone_request(dialog, "ACK", 101)) is None
    assert dialog.remote_cseq == 102


def test_reinvite_and_update_refresh_the_remote_target() -> None:
    dialog, invite = uas_dialog()
    dialog.respond(invite, 200)
    reinvite = phone_request(dialog, "INVITE", 102, contact="<sip:alice@192.0.2.99:6000>")
    assert dialog.receive_request(reinvite) is None
    assert dialog.remote_target == uri("sip:alice@192.0.2.99:6000")
    ok = dialog.respond(reinvite, 200)
    assert ok.contact == (OUR_CONTACT,)
    assert ok.header("Record-Route") is None
    update = phone_request(dialog, "UPDATE", 103, contact="<sip:alice@192.0.2.98>")
    assert dialog.receive_request(update) is None
    assert dialog.remote_target == uri("sip:alice@192.0.2.98")
    info = phone_request(dialog, "INFO", 104, contact="<sip:ignored@192.0.2.1>")
    assert dialog.receive_request(info) is None
    assert dialog.remote_target == uri("sip:alice@192.0.2.98")


def test_2xx_to_our_target_refresh_updates_the_remote_target() -> None:
    dialog, _ = confirmed_uac(("<sip:p1.example;lr>",))
    route_set = dialog.route_set
    reinvite = dialog.new_request("INVITE")
    dialog.receive_response(
        answer(reinvite, 200, contact="<sip:moved@203.0.113.9>", record_route=("<sip:x;lr>",))
    )
    assert dialog.remote_target == uri("sip:moved@203.0.113.9")
    assert dialog.route_set == route_set  # a re-INVITE never changes the route set


@pytest.mark.parametrize("status", [408, 481])
def test_408_or_481_to_an_in_dialog_request_ends_the_dialog(status: int) -> None:
    dialog, _ = confirmed_uac()
    info = dialog.new_request("INFO")
    dialog.receive_response(answer(info, status))
    assert dialog.state is DialogState.TERMINATED


def test_reinvite_glare_is_answered_491() -> None:
    dialog, _ = confirmed_uac()
    dialog.new_request("INVITE")
    theirs = phone_request(dialog, "INVITE", 1, contact="<sip:c@203.0.113.5>")
    rejection = dialog.receive_request(theirs)
    assert rejection is not None
    assert rejection.status == 491
    assert dialog.remote_target == uri("sip:carrier@203.0.113.5:5080")


def test_second_incoming_reinvite_before_answer_gets_500_with_retry_after() -> None:
    dialog, invite = uas_dialog()
    dialog.respond(invite, 200)
    first = phone_request(dialog, "INVITE", 102)
    assert dialog.receive_request(first) is None
    second = phone_request(dialog, "INVITE", 103)
    rejection = dialog.receive_request(second)
    assert rejection is not None
    assert rejection.status == 500
    retry = rejection.header("Retry-After")
    assert retry is not None
    assert 0 <= int(retry) <= 10
    dialog.respond(first, 200)
    assert dialog.receive_request(phone_request(dialog, "INVITE", 104)) is None


def test_requests_on_an_ended_dialog_get_481_but_a_crossing_bye_is_accepted() -> None:
    dialog, invite = uas_dialog()
    dialog.respond(invite, 200)
    dialog.new_request("BYE")
    rejection = dialog.receive_request(phone_request(dialog, "INFO", 102))
    assert rejection is not None
    assert rejection.status == 481
    assert dialog.receive_request(phone_request(dialog, "BYE", 103)) is None


def test_request_of_another_dialog_is_a_bug() -> None:
    dialog, _ = uas_dialog()
    stray = replace(phone_request(dialog, "INFO", 200), call_id=CallId("other"))
    with pytest.raises(LocalProtocolError):
        dialog.receive_request(stray)


def test_rfc2543_peer_without_from_tag_has_null_remote_tag() -> None:
    invite = replace(incoming_invite(), from_=addr("<sip:101@acme.example>"))
    dialog = Dialog.from_invite_as_uas(invite, "ours", OUR_CONTACT)
    assert dialog.id.remote_tag == ""
    assert DialogId.of_request(phone_request(dialog, "BYE", 102)) == dialog.id


# ---------------------------------------------------------------------------------------------
# 2xx retransmission (13.3.1.4)

TIMERS = SipTimers(t1=0.5, t2=4.0)
PHONE = ("192.0.2.10", 5060)


def retransmitter(now: float = 100.0) -> tuple[TwoXxRetransmitter, SipResponse, Dialog]:
    dialog, invite = uas_dialog()
    ok = dialog.respond(invite, 200)
    return TwoXxRetransmitter(ok, PHONE, now, TIMERS), ok, dialog


def test_2xx_is_resent_at_t1_doubling_to_t2_then_times_out_at_64_t1() -> None:
    rtx, ok, _ = retransmitter(now=100.0)
    sent_at: list[float] = []
    while (due := rtx.get_timer()) is not None:
        rtx.handle_timer(due)
        for msg, dest in rtx.messages_to_send():
            assert msg is ok
            assert dest == PHONE
            sent_at.append(due - 100.0)
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert rtx.state is RetransmitState.TIMED_OUT
    assert rtx.next_event() == AckTimedOut(ok.call_id, 101)
    assert rtx.next_event() is None


def test_ack_stops_2xx_retransmissions() -> None:
    rtx, _, dialog = retransmitter(now=0.0)
    rtx.handle_timer(0.5)
    assert len(rtx.messages_to_send()) == 1
    ack = phone_request(dialog, "ACK", 101)
    assert rtx.receive_ack(ack, 0.7)
    assert rtx.state is RetransmitState.ACKNOWLEDGED
    assert rtx.get_timer() is None
    event = rtx.next_event()
    assert isinstance(event, TwoXxAcknowledged)
    assert event.cseq == 101
    rtx.handle_timer(1.5)
    assert rtx.messages_to_send() == []
    # A retransmitted ACK is absorbed.
    assert rtx.receive_ack(ack, 2.0)
    assert rtx.next_event() is None


def test_ack_for_another_cseq_does_not_stop_retransmissions() -> None:
    rtx, _, dialog = retransmitter(now=0.0)
    assert not rtx.receive_ack(phone_request(dialog, "ACK", 99), 0.1)
    assert rtx.state is RetransmitState.RETRANSMITTING
    assert rtx.get_timer() == 0.5


def test_early_or_late_timer_calls_keep_the_schedule() -> None:
    rtx, _, _ = retransmitter(now=0.0)
    rtx.handle_timer(0.2)  # early: nothing due
    assert rtx.messages_to_send() == []
    rtx.handle_timer(5.0)  # woke late past three slots: one resend, next slot after now
    assert len(rtx.messages_to_send()) == 1
    assert rtx.get_timer() == 7.5


def test_retransmitter_takes_only_2xx_to_invite() -> None:
    dialog, invite = uas_dialog()
    with pytest.raises(LocalProtocolError):
        TwoXxRetransmitter(dialog.respond(invite, 180), PHONE, 0.0, TIMERS)


# ---------------------------------------------------------------------------------------------
# B2BUA helpers


def test_copy_request_moves_body_and_end_to_end_headers_only() -> None:
    a_leg, invite = uas_dialog()
    a_leg.respond(invite, 200)
    b_leg, _ = confirmed_uac(("<sip:p1.example;lr>",))
    reinvite = replace(
        phone_request(a_leg, "INVITE", 102, contact="<sip:alice@192.0.2.10>", body=b"v=0\r\n"),
        max_forwards=42,
        headers=(
            ("Route", "<sip:pbx@198.51.100.1;lr>"),
            ("Record-Route", "<sip:evil.example;lr>"),
            ("Authorization", "Digest x"),
            ("Proxy-Authorization", "Digest y"),
            ("Content-Length", "5"),
            ("c", "application/sdp"),
            ("Supported", "100rel, timer"),
            ("Require", "100rel"),
            ("RSeq", "1"),
            ("Subject", "hello"),
            ("Proxy-Require", "foo"),
        ),
    )
    a_leg.receive_request(reinvite)
    copied = copy_request(reinvite, b_leg)
    assert copied.method == "INVITE"
    assert copied.call_id == b_leg.call_id
    assert copied.cseq == CSeq(2, "INVITE")
    assert copied.from_ == b_leg.local
    assert copied.to == b_leg.remote
    assert copied.contact == (OUR_CONTACT,)
    assert copied.max_forwards == 70
    assert copied.body == b"v=0\r\n"
    assert copied.via[0].host == "198.51.100.1"
    assert copied.headers == (
        ("Route", "<sip:p1.example;lr>"),
        ("c", "application/sdp"),
        ("Supported", "timer"),
        ("Subject", "hello"),
    )
    assert copied.header("Content-Type") == "application/sdp"


def test_copy_request_with_replaced_or_no_body() -> None:
    a_leg, invite = uas_dialog()
    a_leg.respond(invite, 200)
    b_leg, _ = confirmed_uac()
    info = replace(
        phone_request(a_leg, "INFO", 102, body=b"Signal=5\r\n"),
        headers=(("Content-Type", "application/dtmf-relay"),),
    )
    assert copy_request(info, b_leg, body=b"Signal=6\r\n").body == b"Signal=6\r\n"
    emptied = copy_request(info, b_leg, body=b"")
    assert emptied.body == b""
    assert emptied.header("Content-Type") is None
    dropped = copy_request(replace(info, headers=(("X-Secret", "1"),)), b_leg, drop=("x-secret",))
    assert dropped.header("X-Secret") is None


def test_copy_bye_across_legs() -> None:
    a_leg, invite = uas_dialog()
    a_leg.respond(invite, 200)
    b_leg, _ = confirmed_uac()
    bye = replace(phone_request(a_leg, "BYE", 102), headers=(("Reason", "Q.850;cause=16"),))
    assert a_leg.receive_request(bye) is None
    assert a_leg.state is DialogState.TERMINATED
    b_bye = copy_request(bye, b_leg)
    assert b_bye.method == "BYE"
    assert b_bye.header("Reason") == "Q.850;cause=16"
    assert b_leg.state is DialogState.TERMINATED
    assert a_leg.respond(bye, 200).to.tag == "our-a-tag"


def test_copy_request_refuses_ack_and_cancel() -> None:
    a_leg, _ = uas_dialog()
    b_leg, _ = confirmed_uac()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(LocalProtocolError):
            copy_request(phone_request(a_leg, method, 101), b_leg)


def test_end_to_end_headers_expands_compact_names() -> None:
    headers = (("l", "0"), ("v", "SIP/2.0/UDP x"), ("m", "<sip:x>"), ("k", "100rel"), ("s", "hi"))
    assert end_to_end_headers(headers) == (("s", "hi"),)


def test_relay_response_builds_the_other_legs_response() -> None:
    a_leg, invite = uas_dialog(record_route=("<sip:p1.example;lr>",))
    b_out = outgoing()
    b_ok = replace(
        answer(b_out.request, 200),
        reason="Fine",
        headers=(
            ("Content-Type", "application/sdp"),
            ("Record-Route", "<sip:b-proxy.example;lr>"),
            ("WWW-Authenticate", "Digest realm=x"),
            ("Require", "100rel"),
            ("RSeq", "1"),
            ("Server", "carrier"),
            ("X-Custom", "kept"),
        ),
        body=b"v=0\r\n",
    )
    a_ok = relay_response(b_ok, invite, a_leg, copy=("X-Custom",))
    assert (a_ok.status, a_ok.reason) == (200, "Fine")
    assert a_ok.call_id == invite.call_id
    assert a_ok.via == invite.via
    assert a_ok.cseq == invite.cseq
    assert a_ok.to.tag == "our-a-tag"
    assert a_ok.contact == (OUR_CONTACT,)
    assert a_ok.body == b"v=0\r\n"
    assert a_ok.headers == (
        ("Record-Route", "<sip:p1.example;lr>"),
        ("Content-Type", "application/sdp"),
        ("X-Custom", "kept"),
    )
    assert a_leg.state is DialogState.CONFIRMED


def test_relay_busy_with_retry_after_and_no_body() -> None:
    a_leg, invite = uas_dialog()
    b_out = outgoing()
    b_busy = replace(answer(b_out.request, 486), headers=(("Retry-After", "60"),))
    a_busy = relay_response(b_busy, invite, a_leg)
    assert a_busy.status == 486
    assert a_busy.reason == "Busy Here"
    assert a_busy.header("Retry-After") == "60"
    assert not a_busy.contact
    assert a_leg.state is DialogState.TERMINATED


def test_b2bua_reinvite_round_trip() -> None:
    """Leg A re-INVITEs: copied to leg B, B's 200 ACKed there and relayed to A."""
    a_leg, invite = uas_dialog()
    a_leg.respond(invite, 200)
    b_leg, _ = confirmed_uac()
    a_reinvite = replace(
        phone_request(a_leg, "INVITE", 102, contact="<sip:alice@192.0.2.10>", body=b"v=0 a\r\n"),
        headers=(("Content-Type", "application/sdp"),),
    )
    assert a_leg.receive_request(a_reinvite) is None
    b_reinvite = copy_request(a_reinvite, b_leg, body=b"v=0 rewritten\r\n")
    b_ok = replace(
        answer(b_reinvite, 200),
        headers=(("Content-Type", "application/sdp"),),
        body=b"v=0 b\r\n",
    )
    b_leg.receive_response(b_ok)
    assert not b_leg.invite_in_progress
    b_ack = b_leg.ack_for(b_ok)
    assert b_ack.cseq == CSeq(b_reinvite.cseq.number, "ACK")
    a_ok = relay_response(b_ok, a_reinvite, a_leg)
    assert a_ok.cseq == a_reinvite.cseq
    assert a_ok.body == b"v=0 b\r\n"
    assert not a_leg.invite_in_progress
    rtx = TwoXxRetransmitter(a_ok, PHONE, 0.0, TIMERS)
    assert rtx.receive_ack(phone_request(a_leg, "ACK", 102), 0.1)


def test_dialog_from_wire_invite_and_bye_back_on_the_wire() -> None:
    raw = (
        b"INVITE sip:201@acme.example SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKwire;rport\r\n"
        b"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr;ftag=x>\r\n"
        b"f: <sip:101@acme.example>;tag=wire-from\r\n"
        b"t: <sip:201@acme.example>\r\n"
        b"i: wire-call@192.0.2.10\r\n"
        b"CSeq: 7 INVITE\r\n"
        b"m: <sip:101@192.0.2.10:5060;transport=UDP>\r\n"
        b"Max-Forwards: 70\r\n"
        b"l: 0\r\n\r\n"
    )
    invite = parse_message(raw)
    assert isinstance(invite, SipRequest)
    dialog = Dialog.from_invite_as_uas(invite, "wire-to", OUR_CONTACT, local_via=OUR_VIA)
    assert [str(r) for r in dialog.route_set] == [
        "<sip:p1.example;lr>",
        "<sip:p2.example;lr;ftag=x>",
    ]
    ok = parse_message(dialog.respond(invite, 200).to_bytes())
    assert isinstance(ok, SipResponse)
    assert ok.header_values("Record-Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr;ftag=x>"]
    bye = parse_message(dialog.new_request("BYE").to_bytes())
    assert isinstance(bye, SipRequest)
    assert str(bye.uri) == "sip:101@192.0.2.10:5060;transport=UDP"
    assert bye.header_values("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr;ftag=x>"]
    assert bye.to.tag == "wire-from"
    assert bye.from_.tag == "wire-to"
    assert bye.cseq == CSeq(1, "BYE")
