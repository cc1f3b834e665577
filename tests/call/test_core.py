"""The call core on fake time: every flow the integration tests drive, plus the races.

Each test joins the core to a caller and its callees in memory (``CallBench``); routing is the
real routing core over a ``LineState``, so forwarding is what production does.
"""

from __future__ import annotations

import pytest

from pbx.call.core import (
    AskRouting,
    CallEnded,
    CallerCancelled,
    CallState,
    CloseMedia,
    HoldLine,
    LegState,
    MediaFailed,
    MediaInactive,
    OpenMedia,
    PlayPrompt,
    PromptFinished,
    RecordingFailed,
    Respond,
    RestartSilence,
    SetRemote,
    ShutdownRequested,
    Started,
    StartRecording,
    TrackDialog,
    WriteRecord,
)
from pbx.config.model import CallSettings, Extension, TenantId
from pbx.media.latch import Side
from pbx.media.sdp import audio_stream, parse_sdp
from pbx.routing.model import FromExtension
from pbx.sip.transaction import TransportFailed, client_transaction_key
from tests.call.bench import SDP_OFFER, CallBench, invite, sdp, sent, stateless
from tests.routing.builders import NUMBER, from_trunk, rule, snapshot, tenant, user

ACME = tenant(
    users=[
        user("1001", busy="1002", offline="1003", no_answer="09012345678", recording=True),
        user("1002"),
        user("1003"),
        user("1004", caller_id=None),
    ],
    incoming=[rule(1, "1001,1002", "8:00", "19:59"), rule(2, "009608", "20:00", "23:59")],
)
SNAPSHOT = snapshot(ACME, calls=CallSettings(max_ring_seconds=60))


def bench(*, body: bytes = b"", at: str = "2026-11-27 10:00:00", **kw: object) -> CallBench:
    return CallBench(SNAPSHOT, invite(NUMBER, body=body), from_trunk(), at=at, **kw)  # type: ignore[arg-type]


def internal(dialled: str, **kw: object) -> CallBench:
    origin = FromExtension(TenantId("acme"), Extension("1004"))
    return CallBench(SNAPSHOT, invite(dialled, caller="1004"), origin, **kw)  # type: ignore[arg-type]


def disposition(b: CallBench) -> str:
    (ended,) = [a for a in b.actions if isinstance(a, CallEnded)]
    return ended.disposition


# -- forking and the first answer -----------------------------------------------------------------


def test_a_number_rings_every_contact_and_the_first_answer_wins() -> None:
    b = bench(registered={"1001": 2, "1002": 1})
    out = b.start()
    assert [r.request.uri.user for r in sent(out, "INVITE")] == ["1001", "1001", "1002"]  # type: ignore[union-attr]
    assert isinstance(out[0], TrackDialog)
    assert isinstance(out[1], WriteRecord)
    assert out[1].opened
    b.answer("1001", 180)
    b.answer("1001", 180, index=1)
    assert b.to_caller() == [180]  # one ringing to the caller, however many ring
    out = b.answer("1002", 200)
    assert b.to_caller(out) == [200]
    assert [c.request.uri.user for c in sent(out, "CANCEL")] == ["1001", "1001"]  # type: ignore[union-attr]
    assert len(stateless(out, "ACK")) == 1
    assert b.core.state is CallState.ANSWERED
    assert b.core.answered_by == "1002"
    # The cancelled legs' 487s are absorbed: no new routing question, nothing to the caller.
    out = b.answer("1001", 487) + b.answer("1001", 487, index=1)
    assert not [a for a in out if isinstance(a, AskRouting | Respond)]


def test_a_leg_with_nothing_back_is_cancelled_at_its_first_provisional_response() -> None:
    b = bench(registered={"1001": 1, "1002": 1})
    b.start()
    out = b.answer("1002", 200)
    assert sent(out, "CANCEL") == []  # 1001 has sent nothing yet (RFC 3261 9.1)
    out = b.answer("1001", 100)
    assert len(sent(out, "CANCEL")) == 1
    out = b.answer("1001", 180)
    assert sent(out, "CANCEL") == []  # once is enough


def test_early_media_183_is_relayed_once_with_the_relays_address() -> None:
    b = bench(registered={"1001": 1, "1002": 1}, body=SDP_OFFER)
    out = b.start()
    assert isinstance(out[2], OpenMedia)
    offered = parse_sdp(sent(out, "INVITE")[0].request.body)
    assert offered.connection is not None
    assert offered.connection.address == "203.0.113.1"
    assert offered.media[0].port == 20002
    out = b.answer("1001", 183, body=sdp("192.0.2.50", 6000))
    (early,) = [a.response for a in out if isinstance(a, Respond)]
    assert early.status == 183
    assert parse_sdp(early.body).media[0].port == 20000
    (remote,) = [a for a in out if isinstance(a, SetRemote)]
    assert (remote.side, remote.stream.port) == (Side.B, 6000)
    assert b.to_caller(b.answer("1002", 183, body=sdp("192.0.2.51", 6002))) == []
    assert b.to_caller(b.answer("1002", 180)) == []  # the caller already rings


def test_an_unreadable_early_answer_goes_to_the_caller_without_sdp() -> None:
    b = bench(registered={"1001": 1}, body=SDP_OFFER)
    b.start()
    out = b.answer("1001", 183, body=b"garbage")
    (early,) = [a.response for a in out if isinstance(a, Respond)]
    assert (early.status, early.body) == (183, b"")


# -- the caller gives up; races with answers ------------------------------------------------------


def test_caller_cancel_cancels_every_fork_and_gets_487() -> None:
    b = bench(registered={"1001": 1, "1002": 1})
    b.start()
    b.answer("1001", 180)
    out = b.run(CallerCancelled())
    assert len(sent(out, "CANCEL")) == 1  # 1002 is cancelled at its first 1xx
    assert b.to_caller(out) == [487]
    assert disposition(b) == "cancelled"
    assert len(sent(b.answer("1002", 180), "CANCEL")) == 1
    assert b.core.record().trace[-1] == "the caller cancelled"


def test_cancel_crossing_the_200_acks_and_hangs_up_the_late_answer() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 180)
    b.run(CallerCancelled())
    out = b.answer("1001", 200)  # the 200 crossed our CANCEL
    assert len(stateless(out, "ACK")) == 1
    assert len(sent(out, "BYE")) == 1
    assert b.to_caller(out) == []
    assert b.leg("1001").state is LegState.ENDED


def test_a_fork_answering_after_the_caller_cancelled_gets_ack_and_bye() -> None:
    b = bench(registered={"1001": 1, "1002": 1})
    b.start()
    b.run(CallerCancelled())
    out = b.answer("1002", 200)
    assert (len(stateless(out, "ACK")), len(sent(out, "BYE"))) == (1, 1)
    assert b.to_caller(out) == []


def test_two_forks_answering_together_the_second_gets_ack_then_bye() -> None:
    b = bench(registered={"1001": 1, "1002": 1})
    b.start()
    first = b.answer("1001", 200)
    second = b.answer("1002", 200)
    assert b.to_caller(first) == [200]
    assert b.to_caller(second) == []
    assert [a.request.method for a in sent(second, "BYE")] == ["BYE"]
    assert len(stateless(second, "ACK")) == 1
    assert b.core.answered_by == "1001"


def test_a_retransmitted_2xx_is_acked_again() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 200)
    out = b.answer("1001", 200)
    assert len(stateless(out, "ACK")) == 1
    assert b.to_caller(out) == []


def test_a_2xx_retransmitted_after_the_call_ended_is_acked_not_hung_up_again() -> None:
    # Under load the phone resends its 200 before our ACK reaches it; by then the caller may
    # have hung up and the phone got our BYE. That 200 is the same answer: ACK it again
    # (13.2.2.4), but no second BYE on a dialog already ended (the phone would see a BYE for
    # a call it no longer has, and it would be retransmitted for 64*T1).
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 200)
    b.caller_ack()
    assert len(sent(b.caller_request("BYE"), "BYE")) == 1  # to the callee
    out = b.answer("1001", 200)
    assert len(stateless(out, "ACK")) == 1
    assert sent(out, "BYE") == []
    assert b.to_caller(out) == []


def test_a_losing_forks_retransmitted_2xx_is_acked_without_another_bye() -> None:
    b = bench(registered={"1001": 1, "1002": 1})
    b.start()
    b.answer("1001", 200)
    assert len(sent(b.answer("1002", 200), "BYE")) == 1
    out = b.answer("1002", 200)
    assert len(stateless(out, "ACK")) == 1
    assert sent(out, "BYE") == []


def test_caller_bye_while_ringing_is_taken_as_a_cancel() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 180)
    out = b.caller_request("BYE")
    assert [a.response.status for a in out if isinstance(a, Respond)] == [200, 487]
    assert disposition(b) == "cancelled"


def test_bye_before_ack_ends_the_call_and_stops_the_retransmissions() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 200)
    out = b.caller_request("BYE")
    assert [a.response.status for a in out if isinstance(a, Respond)] == [200]
    assert len(sent(out, "BYE")) == 1  # to the callee only
    assert b.core.get_timer() is None
    assert disposition(b) == "answered"


# -- 2xx retransmission and ACKs (RFC 3261 13.3.1.4) ----------------------------------------------


def test_the_2xx_is_retransmitted_until_the_callers_ack() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 200)
    out = b.advance(0.5) + b.advance(1.0)
    assert len(stateless(out, 200)) == 2  # at T1 and 2*T1
    b.caller_ack()
    assert b.core.get_timer() is None
    assert stateless(b.advance(10.0), 200) == []


def test_an_ack_with_a_foreign_to_tag_still_stops_the_retransmissions() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 200)
    b.caller_ack(to_tag="made-up-by-pyvoip")
    assert b.core.get_timer() is None


def test_a_caller_that_never_acks_gets_bye_on_both_legs_after_64_t1() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 200)
    out = b.advance(32.0)
    assert len(sent(out, "BYE")) == 2
    assert disposition(b) == "failed"
    assert b.core.record().trace[-1] == "no ACK for the 2xx: hang up both legs"


def test_late_offer_the_callees_ack_waits_for_the_callers_answer() -> None:
    b = bench(registered={"1001": 1})  # INVITE without SDP
    b.start()
    out = b.answer("1001", 200, body=sdp("192.0.2.50", 6000))
    assert stateless(out, "ACK") == []
    # The offer in the 2xx reaches the caller on the relay (issue 16): our address, the A port.
    offer = audio_stream(parse_sdp(b.final_to_caller().body))
    assert offer is not None
    assert (offer.address, offer.port) == ("203.0.113.1", 20000)
    assert SetRemote(Side.B, audio_stream(parse_sdp(sdp("192.0.2.50", 6000)))) in out  # type: ignore[arg-type]
    answer = sdp("192.0.2.1", 4000)
    out = b.caller_ack(body=answer)
    (ack,) = stateless(out, "ACK")
    # The caller's answer reaches the callee on the relay too: the B port.
    relayed = audio_stream(parse_sdp(ack.message.body))
    assert relayed is not None
    assert (relayed.address, relayed.port) == ("203.0.113.1", 20002)
    assert ack.message.header("Content-Type") == "application/sdp"
    assert SetRemote(Side.A, audio_stream(parse_sdp(answer))) in out  # type: ignore[arg-type]
    assert b.core.pending_b_ack is None
    assert stateless(b.answer("1001", 200, body=sdp("192.0.2.50", 6000)), "ACK") != []


def test_a_retransmitted_late_offer_2xx_waits_for_the_callers_ack_too() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    b.answer("1001", 200, body=sdp("192.0.2.50", 6000))
    assert stateless(b.answer("1001", 200, body=sdp("192.0.2.50", 6000)), "ACK") == []


# -- forwarding (the routing core decides; the core carries it out) -------------------------------


def test_busy_extension_is_forwarded_to_its_busy_destination() -> None:
    b = internal("1001", registered={"1001": 1, "1002": 1}, busy=("1001",))
    out = b.start()
    assert [r.request.uri.user for r in sent(out, "INVITE")] == ["1002"]  # type: ignore[union-attr]
    (diversion,) = sent(out, "INVITE")[0].request.header_values("Diversion")
    assert "reason=user-busy" in diversion
    assert b.core.forwarding == [{"from": "1001", "reason": "user-busy", "to": "1002"}]


def test_offline_extension_is_forwarded_to_its_offline_destination() -> None:
    b = internal("1001", registered={"1003": 1})
    out = b.start()
    assert [r.request.uri.user for r in sent(out, "INVITE")] == ["1003"]  # type: ignore[union-attr]


def test_a_rejected_contact_ends_its_fork_and_routing_answers_the_caller() -> None:
    b = internal("1002", registered={"1002": 1})
    b.start()
    out = b.answer("1002", 486)
    assert b.to_caller(out) == [486]
    assert disposition(b) == "busy"


@pytest.mark.parametrize(("event", "status"), [("timeout", 408), ("transport", 503)])
def test_a_leg_that_never_answers_or_cannot_be_reached_fails_its_fork(
    event: str, status: int
) -> None:
    b = internal("1002", registered={"1002": 1})
    b.start()
    if event == "timeout":
        out = b.time_out("1002")
    else:
        leg = b.leg("1002")
        key = client_transaction_key(leg.invite.request)
        from pbx.call.core import TransactionEvent

        out = b.run(TransactionEvent(leg.ref, TransportFailed(key)))
    (ask,) = [a for a in out if isinstance(a, AskRouting)]
    assert getattr(ask.event, "status", None) == status


def test_unanswered_extension_is_forwarded_out_after_20_seconds() -> None:
    b = internal("1001", registered={"1001": 1})
    b.start()
    assert b.advance(19.9) == []
    out = b.advance(0.2)
    assert len(sent(out, "CANCEL")) == 0  # 1001 has sent nothing: cancelled at its first 1xx
    (dial_out,) = sent(out, "INVITE")
    assert dial_out.request.uri.user == "09012345678"  # type: ignore[union-attr]
    assert dial_out.peer.address == ("127.0.0.2", 5080)
    assert dial_out.request.header("P-Asserted-Identity") is not None


def test_max_ring_seconds_ends_an_unanswered_call_with_480_as_no_answer() -> None:
    snap = snapshot(ACME, calls=CallSettings(max_ring_seconds=5, no_answer_seconds=20))
    b = CallBench(
        snap,
        invite("1002", caller="1004"),
        FromExtension(TenantId("acme"), Extension("1004")),
        registered={"1002": 1},
    )
    b.start()
    out = b.advance(5.0)
    assert b.to_caller(out) == [480]
    assert disposition(b) == "no_answer"


def test_an_outbound_call_presents_the_callers_number_through_the_trunk() -> None:
    b = internal("0312349999")
    (out,) = sent(b.start(), "INVITE")
    assert out.peer.address == ("127.0.0.2", 5080)
    assert out.request.header("P-Asserted-Identity") == "<sip:0312345678@203.0.113.1>"


def test_an_international_call_is_refused_403_while_barred() -> None:
    b = internal("010441234567")
    assert b.to_caller(b.start()) == [403]


def test_a_contact_the_decision_cannot_reach_fails_with_480() -> None:
    b = internal("1002", registered={"1002": 1})

    def no_reach(ask: AskRouting) -> object:
        decided = CallBench._decide(b, ask)
        return type(decided)(decided.decision, {})

    b._decide = no_reach  # type: ignore[method-assign,assignment]
    out = b.start()
    assert sent(out, "INVITE") == []
    assert b.to_caller(out) == [480]


# -- in-dialog requests (RFC 3261 12.2, 14.1) -----------------------------------------------------


def answered(body: bytes = SDP_OFFER) -> CallBench:
    b = bench(registered={"1001": 1}, body=body)
    b.start()
    b.answer("1001", 200, body=sdp("192.0.2.50", 6000) if body else b"")
    b.caller_ack()
    return b


@pytest.mark.parametrize("method", ["INFO", "UPDATE", "INVITE"])
def test_in_dialog_requests_are_relayed_with_sdp_on_the_relay(method: str) -> None:
    b = answered()
    out = b.caller_request(method, body=sdp("192.0.2.1", 4100, "a=sendonly"))
    (relayed,) = sent(out, method)
    assert relayed.peer.address == ("192.0.2.50", 5060)
    if method != "INFO":
        assert parse_sdp(relayed.request.body).media[0].port == 20002
        assert [a.side for a in out if isinstance(a, SetRemote)] == [Side.A]
    # The callee answers; the answer goes back to the caller, re-anchored.
    leg = b.core.winner
    assert leg is not None
    from pbx.call.core import TransactionEvent
    from pbx.sip.build import build_response
    from pbx.sip.transaction import ResponseReceived

    resp = build_response(
        relayed.request,
        200,
        body=sdp("192.0.2.50", 6100),
        headers=(("Content-Type", "application/sdp"),),
    )
    ref = relayed.ref
    assert ref is not None
    out = b.run(
        TransactionEvent(ref, ResponseReceived(client_transaction_key(relayed.request), resp))
    )
    (back,) = [a.response for a in out if isinstance(a, Respond)]
    assert back.status == 200
    if method != "INFO":
        assert parse_sdp(back.body).media[0].port == 20000
    if method == "INVITE":
        assert len(stateless(out, "ACK")) == 1  # we ACK the callee's 2xx ourselves
        assert b.core.get_timer() is not None  # and retransmit ours until the caller ACKs


def test_callee_bye_hangs_up_the_caller() -> None:
    b = answered()
    out = b.callee_request("BYE")
    assert [a.response.status for a in out if isinstance(a, Respond)] == [200]
    (bye,) = sent(out, "BYE")
    assert bye.peer.address == ("192.0.2.1", 5060)
    assert bye.bye  # the shutdown waits for it
    assert any(isinstance(a, CloseMedia) for a in out)
    assert b.core.record().trace[-1] == "1001 hung up"


def test_reinvite_glare_gets_491() -> None:
    b = answered()
    b.callee_request("INVITE", body=sdp("192.0.2.50", 6200))  # relayed to the caller, pending
    out = b.caller_request("INVITE", body=sdp("192.0.2.1", 4200), cseq=3)
    assert [a.response.status for a in out if isinstance(a, Respond)] == [491]


def test_a_relayed_request_that_times_out_gets_408() -> None:
    b = answered()
    (relayed,) = sent(b.caller_request("INFO"), "INFO")
    from pbx.call.core import TransactionEvent
    from pbx.sip.transaction import TransactionTimedOut, TransactionTimer

    assert relayed.ref is not None
    key = client_transaction_key(relayed.request)
    out = b.run(TransactionEvent(relayed.ref, TransactionTimedOut(key, TransactionTimer.F)))
    assert [a.response.status for a in out if isinstance(a, Respond)] == [408]


def test_a_request_for_a_losing_legs_dialog_gets_481() -> None:
    b = answered()
    from pbx.call.core import DialogRequestReceived
    from pbx.sip.transaction import server_transaction_key
    from tests.call.bench import _in_dialog

    req = _in_dialog("INFO", "nope", "x", "y", "192.0.2.9:5060", 1, b"")
    out = b.run(DialogRequestReceived(server_transaction_key(req, ("192.0.2.9", 5060)), req))
    assert [a.response.status for a in out if isinstance(a, Respond)] == [481]


# -- media ----------------------------------------------------------------------------------------


def test_an_unreadable_offer_gets_400_and_one_without_g711_488() -> None:
    b = bench(body=b"garbage")
    assert b.to_caller(b.start()) == [400]
    no_audio = SDP_OFFER.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 9").replace(b"a=rtpmap:0", b"a=x:0")
    b = bench(body=no_audio)
    assert b.to_caller(b.start()) == [488]


def test_no_media_ports_gets_503() -> None:
    b = bench(body=SDP_OFFER, media=False)
    b.start()
    out = b.run(MediaFailed("no free RTP port pair"))
    assert b.to_caller(out) == [503]
    assert not any(isinstance(a, CloseMedia) for a in out)  # nothing was opened


def test_the_recording_user_answering_starts_the_recorder() -> None:
    b = internal("1001", registered={"1001": 1})
    b.request = invite("1001", caller="1004", body=SDP_OFFER)
    b.__post_init__()
    b.start()
    out = b.answer("1001", 200, body=sdp("192.0.2.50", 6000))
    (rec,) = [a for a in out if isinstance(a, StartRecording)]
    assert rec.path.endswith("recordings/c0ffee.wav")
    assert b.core.record().recording_path == rec.path
    b.run(RecordingFailed())
    assert b.core.record().recording_path is None


def test_silence_while_ringing_is_measured_again_from_the_answer() -> None:
    b = bench(registered={"1001": 1}, body=SDP_OFFER)
    b.start()
    assert b.run(MediaInactive(Side.A)) == []  # ringing: normal
    out = b.answer("1001", 200, body=sdp("192.0.2.50", 6000))
    assert [a.side for a in out if isinstance(a, RestartSilence)] == [Side.A]
    b.caller_ack()
    out = b.run(MediaInactive(Side.B))
    assert len(sent(out, "BYE")) == 2
    assert b.core.record().trace[-1] == "no RTP from the callee for 60s: hang up"


def test_after_hours_the_announcement_is_answered_played_and_hung_up() -> None:
    b = bench(body=SDP_OFFER, at="2026-11-27 21:00:00")
    out = b.start()
    assert b.to_caller(out) == [200]
    (play,) = [a for a in out if isinstance(a, PlayPrompt)]
    assert play.prompt == "009608"
    assert b.core.answered_by == "009608"
    b.caller_ack()
    out = b.run(PromptFinished(150))
    assert len(sent(out, "BYE")) == 1
    assert disposition(b) == "answered"


def test_an_announcement_that_cannot_play_fails_the_call() -> None:
    # A late offer is answered with our own offer now (tests/call/test_late_offer_prompt.py).
    b = bench(body=SDP_OFFER, at="2026-11-27 21:00:00", prompts=frozenset())
    out = b.start()
    assert b.to_caller(out) == [480]


# -- lines, records, shutdown ---------------------------------------------------------------------


def test_an_internal_call_holds_both_lines_and_releases_them_at_the_end() -> None:
    b = internal("1002", registered={"1002": 1})
    out = b.start()
    assert [a.line for a in out if isinstance(a, HoldLine)] == [("acme", "1004")]
    out = b.answer("1002", 200)
    assert [a.line for a in out if isinstance(a, HoldLine)] == [("acme", "1002")]
    b.caller_ack()
    b.caller_request("BYE")
    (ended,) = [a for a in b.actions if isinstance(a, CallEnded)]
    assert ended.lines == (("acme", "1004"), ("acme", "1002"))


def test_the_record_is_opened_at_the_invite_and_closed_with_the_times_of_the_call() -> None:
    b = bench(registered={"1001": 1})
    b.start()
    start = b.clock.wall()
    b.advance(3.0)
    b.answer("1001", 200)
    b.caller_ack()
    b.advance(7.0)
    b.caller_request("BYE")
    records = [a for a in b.actions if isinstance(a, WriteRecord)]
    # Opened at the INVITE, written again at the answer (durable before the call ends) and
    # when its recording starts (1001 records, late offer or not), closed.
    assert [r.opened for r in records] == [True, True, True, False]
    assert records[2].record.recording_path is not None
    answered = records[1].record
    assert (answered.answered_at, answered.answered_by, answered.ended_at) == (
        start + 3,
        "1001",
        None,
    )
    closed = records[3].record
    assert (closed.started_at, closed.answered_at, closed.ended_at) == (
        start,
        start + 3,
        start + 10,
    )
    assert closed.disposition == "answered"
    assert (closed.hangup_cause, closed.ended_by) == ("normal", "caller")
    assert closed.caller_call_id == b.core.a_invite.call_id
    assert closed.callee_call_id == b.core.legs[0].invite.request.call_id
    assert closed.caller_call_id != closed.callee_call_id
    assert b.core.view()["state"] == "ended"


@pytest.mark.parametrize(("answer", "status", "byes"), [(False, [503], 0), (True, [], 2)])
def test_shutdown_ends_ringing_calls_with_503_and_answered_ones_with_bye(
    answer: bool, status: list[int], byes: int
) -> None:
    b = bench(registered={"1001": 1})
    b.start()
    if answer:
        b.answer("1001", 200)
        b.caller_ack()
    out = b.run(ShutdownRequested())
    assert b.to_caller(out) == status
    assert len(sent(out, "BYE")) == byes
    assert b.run(ShutdownRequested()) == []  # once ended, nothing more


# -- the adapter's way of draining the actions -----------------------------------------------------


def test_take_actions_gives_what_next_action_would_in_order_and_empties_the_queue() -> None:
    one, two = bench(registered={"1001": 1}), bench(registered={"1001": 1})
    for b in (one, two):
        b.core.handle(Started(), b.clock.now())
    taken = one.core.take_actions()
    drained = []
    while (action := two.core.next_action()) is not None:
        drained.append(action)
    assert [type(a) for a in taken] == [type(a) for a in drained]
    # Late offer (no SDP in this INVITE): the relay opens first, routing comes once it is open.
    assert [type(a) for a in taken] == [TrackDialog, WriteRecord, OpenMedia]
    assert one.core.take_actions() == []


# -- hang-up causes (issue 16) --------------------------------------------------------------------


def _closed(b: CallBench) -> tuple[str | None, str | None]:
    (last,) = [a.record for a in b.actions if isinstance(a, WriteRecord) and not a.opened]
    return last.hangup_cause, last.ended_by


def test_each_way_a_call_ends_has_its_cause_and_side() -> None:
    callee_bye = bench(registered={"1001": 1})
    callee_bye.start()
    callee_bye.answer("1001", 200)
    callee_bye.caller_ack()
    callee_bye.callee_request("BYE")
    assert _closed(callee_bye) == ("normal", "callee")

    cancelled = bench(registered={"1001": 1})
    cancelled.start()
    cancelled.run(CallerCancelled())
    assert _closed(cancelled) == ("cancelled", "caller")

    busy = internal("1002", registered={"1002": 1})
    busy.start()
    busy.answer("1002", 486)
    assert _closed(busy) == ("busy", "callee")

    inactive = bench(body=SDP_OFFER, registered={"1001": 1})
    inactive.start()
    inactive.answer("1001", 200, body=sdp("192.0.2.50", 6000))
    inactive.caller_ack()
    inactive.run(MediaInactive(Side.B))
    assert _closed(inactive) == ("rtp_timeout", "server")

    shutdown = bench(registered={"1001": 1})
    shutdown.start()
    shutdown.answer("1001", 200)
    shutdown.run(ShutdownRequested())
    assert _closed(shutdown) == ("shutdown", "server")

    no_ack = bench(registered={"1001": 1})
    no_ack.start()
    no_ack.answer("1001", 200)
    no_ack.advance(40.0)  # 64*T1 without the caller's ACK
    assert _closed(no_ack) == ("no_ack", "server")

    refused = internal("1009", registered={})
    refused.start()
    assert _closed(refused) == ("rejected", "server")


# -- late offer on the relay (issue 16) -----------------------------------------------------------


def test_a_reinvite_without_sdp_is_anchored_and_its_ack_carries_the_answer() -> None:
    from pbx.call.core import AckReceived, TransactionEvent
    from pbx.sip.build import build_response
    from pbx.sip.transaction import ResponseReceived
    from tests.call.bench import _in_dialog

    b = answered()
    (relayed,) = sent(b.caller_request("INVITE", cseq=3), "INVITE")
    assert relayed.request.body == b""  # the offer is asked of the callee
    assert relayed.ref is not None
    callee_offer = sdp("192.0.2.50", 6300)
    resp = build_response(
        relayed.request,
        200,
        to_tag=relayed.request.to.tag,
        body=callee_offer,
        headers=(("Content-Type", "application/sdp"),),
    )
    event = ResponseReceived(client_transaction_key(relayed.request), resp)
    out = b.run(TransactionEvent(relayed.ref, event))
    assert stateless(out, "ACK") == []  # waits for the caller's answer
    (to_caller,) = [a.response for a in out if isinstance(a, Respond)]
    offer = audio_stream(parse_sdp(to_caller.body))
    assert offer is not None
    assert (offer.address, offer.port) == ("203.0.113.1", 20000)
    assert SetRemote(Side.B, audio_stream(parse_sdp(callee_offer))) in out  # type: ignore[arg-type]
    dialog = b.core.a_dialog.id
    answer = sdp("192.0.2.1", 4300)
    ack = _in_dialog(
        "ACK", dialog.call_id, dialog.remote_tag, dialog.local_tag, "192.0.2.1:5060", 3, answer
    )
    out = b.run(AckReceived(ack))
    (to_callee,) = stateless(out, "ACK")
    relayed_answer = audio_stream(parse_sdp(to_callee.message.body))
    assert relayed_answer is not None
    assert (relayed_answer.address, relayed_answer.port) == ("203.0.113.1", 20002)
    assert SetRemote(Side.A, audio_stream(parse_sdp(answer))) in out  # type: ignore[arg-type]
    # A retransmitted 2xx from the callee gets the same ACK again.
    again = b.run(TransactionEvent(relayed.ref, event))
    assert [a.message for a in stateless(again, "ACK")] == [to_callee.message]


def test_a_late_offer_call_opens_the_relay_and_records() -> None:
    b = bench(registered={"1001": 1})  # 1001 records; the INVITE has no SDP
    out = b.start()
    assert any(isinstance(a, OpenMedia) for a in out)
    b.answer("1001", 200, body=sdp("192.0.2.50", 6000))
    assert any(isinstance(a, StartRecording) for a in b.actions)
    assert b.core.record().recording_path is not None


def test_the_anchor_cannot_answer_a_late_offer_itself() -> None:
    b = CallBench(SNAPSHOT, invite(NUMBER), from_trunk(), at="2026-11-27 21:00:00")
    b.start()
    assert b.core.anchor is not None
    assert b.core.anchor.answer_ourselves() is None
    assert b.core.anchor.answer_to_caller(sdp("192.0.2.50", 6000)) is None
    assert b.core.anchor.offer_to_callee() == b""


# -- session timers (RFC 4028, issue 16) ----------------------------------------------------------


def _with_session_expires(value: str, supported: bool = True) -> CallBench:
    from dataclasses import replace as copy

    request = invite(NUMBER)
    extra = [("Session-Expires", value)] + ([("Supported", "timer")] if supported else [])
    return CallBench(
        SNAPSHOT,
        copy(request, headers=request.headers + tuple(extra)),
        from_trunk(),
        registered={"1001": 1},
    )


def test_a_session_expires_below_min_se_gets_422_with_min_se() -> None:
    b = _with_session_expires("30")
    b.start()
    final = b.final_to_caller()
    assert (final.status, final.header("Min-SE")) == (422, "90")
    assert _closed(b) == ("rejected", "server")


def test_a_session_timer_is_stated_refreshed_and_ends_both_legs_when_no_refresh_comes() -> None:
    b = _with_session_expires("120;refresher=uac")
    b.start()
    b.answer("1001", 200)
    final = b.final_to_caller()
    assert (final.header("Session-Expires"), final.header("Require")) == (
        "120;refresher=uac",
        "timer",
    )
    b.caller_ack()
    # The caller refreshes at half the interval (an UPDATE relayed to 1001 and answered).
    b.advance(60.0)
    (relayed,) = sent(b.caller_request("UPDATE", cseq=3), "UPDATE")
    from pbx.call.core import TransactionEvent
    from pbx.sip.build import build_response
    from pbx.sip.transaction import ResponseReceived

    assert relayed.ref is not None
    ok = build_response(relayed.request, 200, to_tag=relayed.request.to.tag)
    b.run(
        TransactionEvent(relayed.ref, ResponseReceived(client_transaction_key(relayed.request), ok))
    )
    assert b.advance(87.0) == []  # refreshed at 60: the bound is 60 + 120 - 32 = 148
    out = b.advance(2.0)
    assert len(sent(out, "BYE")) == 2  # both legs
    assert _closed(b) == ("session_timer", "server")
    assert b.core.record().trace[-1] == "session timer: no refresh in 120s: hang up"


@pytest.mark.parametrize(("status", "ends"), [(200, False), (481, True)])
def test_we_refresh_with_update_when_the_caller_asks_us_to(status: int, ends: bool) -> None:
    b = _with_session_expires("90;refresher=uas", supported=False)
    b.start()
    b.answer("1001", 200)
    assert b.final_to_caller().header("Require") is None
    b.caller_ack()
    out = b.advance(45.0)
    (update,) = sent(out, "UPDATE")
    assert update.request.header("Session-Expires") == "90;refresher=uas"
    assert update.peer.address == ("192.0.2.1", 5060)
    from pbx.call.core import TransactionEvent
    from pbx.sip.build import build_response
    from pbx.sip.transaction import ResponseReceived

    assert update.ref is not None
    answer = build_response(update.request, status, to_tag=update.request.to.tag)
    key = client_transaction_key(update.request)
    out = b.run(TransactionEvent(update.ref, ResponseReceived(key, answer)))
    assert (len(sent(out, "BYE")) == 2) is ends
    assert b.core.ended is ends
    if ends:
        assert _closed(b) == ("session_timer", "server")


def test_a_call_that_never_agreed_on_media_is_not_hung_up_for_silence() -> None:
    b = bench(registered={"1001": 1})  # no SDP in the INVITE, none in the 200 either
    b.start()
    b.answer("1001", 200)
    b.caller_ack()
    b.run(MediaInactive(Side.A))
    assert not b.core.ended
