"""Session timers (RFC 4028, issue 16) driven by ``[sip] session_expires`` / ``min_se``, and the
timer toward the callee's leg: pure core, fake time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pbx.call.core import CallAction, SendRequest, TransactionEvent, WriteRecord
from pbx.config.model import CallSettings, ConfigSnapshot, SipSettings
from pbx.sip.build import build_response
from pbx.sip.transaction import ResponseReceived, client_transaction_key
from tests.call.bench import SDP_OFFER, CallBench, invite, sdp, sent, stateless
from tests.call.test_core import ACME
from tests.routing.builders import NUMBER, from_trunk, snapshot


def _snapshot(session_expires: int = 1800, min_se: int = 90) -> ConfigSnapshot:
    base = snapshot(ACME, calls=CallSettings(max_ring_seconds=60))
    sip = SipSettings(
        listen=(), session_expires=session_expires, min_se=min_se, allow_below_rfc_minimum=True
    )
    return replace(base, server=replace(base.server, sip=sip))


def _bench(headers: list[tuple[str, str]], snap: ConfigSnapshot) -> CallBench:
    request = invite(NUMBER)
    return CallBench(
        snap,
        replace(request, headers=request.headers + tuple(headers)),
        from_trunk(),
        registered={"1001": 1},
    )


def test_min_se_comes_from_the_settings() -> None:
    b = _bench([("Session-Expires", "3")], _snapshot(session_expires=10, min_se=4))
    b.start()
    final = b.final_to_caller()
    assert (final.status, final.header("Min-SE")) == (422, "4")


def test_a_longer_interval_is_lowered_to_session_expires_but_not_below_the_callers_min_se() -> None:
    b = _bench([("Session-Expires", "1800"), ("Supported", "timer")], _snapshot(600))
    b.start()
    b.answer("1001", 200)
    assert b.final_to_caller().header("Session-Expires") == "600;refresher=uac"
    theirs = [("Session-Expires", "1800"), ("Min-SE", "900"), ("Supported", "timer")]
    b = _bench(theirs, _snapshot(600))
    b.start()
    b.answer("1001", 200)
    assert b.final_to_caller().header("Session-Expires") == "900;refresher=uac"


def test_a_short_lab_timer_ends_both_legs_at_the_bound() -> None:
    b = _bench([("Session-Expires", "6;refresher=uac")], _snapshot(6, 2))
    b.start()
    b.answer("1001", 200)
    b.caller_ack()
    assert sent(b.advance(3.9), "BYE") == []  # the bound: 6 - 6/3 = 4 s
    assert len(sent(b.advance(0.2), "BYE")) == 2


# -- toward the callee's leg (RFC 4028 section 7) ---------------------------------------------

ALLOW_UPDATE = ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE")


def _answered(
    caller: list[tuple[str, str]], callee: tuple[tuple[str, str], ...], body: bytes = b""
) -> CallBench:
    b = _bench(caller, _snapshot())
    b.start()
    b.answer("1001", 200, headers=callee, body=body)
    b.caller_ack()
    return b


def _respond(b: CallBench, request: SendRequest, status: int) -> list[CallAction]:
    assert request.ref is not None
    answer = build_response(request.request, status, to_tag=request.request.to.tag)
    key = client_transaction_key(request.request)
    return b.run(TransactionEvent(request.ref, ResponseReceived(key, answer)))


def test_our_invite_offers_a_session_timer_with_us_as_refresher() -> None:
    b = _bench([], _snapshot(session_expires=1200))
    b.start()
    invite_ = b.leg("1001").invite.request
    assert invite_.header("Session-Expires") == "1200;refresher=uac"
    assert (invite_.header("Supported"), invite_.header("Min-SE")) == ("timer", "90")
    b = _bench([("Session-Expires", "300")], _snapshot(session_expires=1200))
    b.start()
    assert b.leg("1001").invite.request.header("Session-Expires") == "300;refresher=uac"


def test_no_timer_toward_a_callee_that_ignores_it_when_the_caller_asked_none() -> None:
    b = _answered([], ())
    assert b.core.get_timer() is None


# A 481 ends the callee's dialog (RFC 3261 12.2.1.2): only the caller gets BYE then.
@pytest.mark.parametrize(("status", "byes"), [(200, 0), (500, 2), (481, 1)])
def test_we_refresh_the_callee_with_update_when_it_allows_update(status: int, byes: int) -> None:
    b = _answered([], (("Session-Expires", "120;refresher=uac"), ALLOW_UPDATE))
    assert sent(b.advance(59.0), "UPDATE") == []
    (update,) = sent(b.advance(1.0), "UPDATE")
    assert b.core.winner is not None
    assert update.peer == b.core.winner.peer
    assert update.request.header("Session-Expires") == "120;refresher=uac"
    assert update.request.body == b""
    out = _respond(b, update, status)
    assert len(sent(out, "BYE")) == byes
    if byes:
        assert _closed(b) == ("session_timer", "server")
        last = b.core.record().trace[-1]
        assert last == "session timer: our refresh toward the callee failed: hang up"
    else:
        assert sent(b.advance(59.0), "UPDATE") == []  # refreshed at 60: the next at 120
        assert len(sent(b.advance(1.0), "UPDATE")) == 1


def test_we_refresh_a_callee_without_update_by_re_invite_with_the_same_sdp() -> None:
    # The caller asked a timer (so the call keeps one toward a callee that knows none).
    b = _answered([("Session-Expires", "90;refresher=uac")], (), body=SDP_OFFER)
    (reinvite,) = sent(b.advance(45.0), "INVITE")
    assert reinvite.request.header("Session-Expires") is None  # it knows no session timers
    assert reinvite.request.body == b.leg("1001").invite.request.body
    out = _respond(b, reinvite, 200)
    (ack,) = stateless(out, "ACK")
    assert ack.message.cseq.number == reinvite.request.cseq.number
    timer = b.core._b_timer
    assert timer is not None
    assert (timer.refreshing, timer.refreshed_at) == (False, b.clock.monotonic())


def test_a_callee_that_refreshes_and_stops_is_hung_up_at_the_bound() -> None:
    b = _answered([], (("Session-Expires", "120;refresher=uas"), ALLOW_UPDATE))
    assert [a for a in b.advance(87.9) if isinstance(a, SendRequest)] == []  # not our turn
    out = b.advance(0.2)  # 120 - 32 = 88
    assert len(sent(out, "BYE")) == 2
    assert _closed(b) == ("session_timer", "server")
    last = b.core.record().trace[-1]
    assert last == "session timer toward the callee: no refresh in 120s: hang up"


def _closed(b: CallBench) -> tuple[str | None, str | None]:
    (last,) = [a.record for a in b.actions if isinstance(a, WriteRecord) and not a.opened]
    return last.hangup_cause, last.ended_by


def test_after_a_late_offer_a_re_invite_refresh_repeats_the_answer_in_the_callees_ack() -> None:
    b = _bench([("Session-Expires", "90;refresher=uac")], _snapshot())  # no SDP: late offer
    b.start()
    b.answer("1001", 200, body=sdp("192.0.2.50", 6000))
    out = b.caller_ack(body=sdp("192.0.2.1", 4300))
    (ack,) = stateless(out, "ACK")
    assert ack.message.body
    (reinvite,) = sent(b.advance(45.0), "INVITE")
    assert reinvite.request.body == ack.message.body


def test_the_callees_own_refresh_answered_by_the_caller_keeps_the_call_up() -> None:
    b = _answered([], (("Session-Expires", "120;refresher=uas"), ALLOW_UPDATE))
    b.advance(60.0)
    (relayed,) = sent(b.callee_request("UPDATE", cseq=2), "UPDATE")  # to the caller
    _respond(b, relayed, 200)
    assert sent(b.advance(87.9), "BYE") == []  # refreshed at 60: the bound is 60 + 88
    assert len(sent(b.advance(0.2), "BYE")) == 2


# -- a callee's 422 (RFC 4028 section 7.4) ------------------------------------------------------


def _invites(actions: list[CallAction]) -> list[SendRequest]:
    return sent(actions, "INVITE")


def test_a_callees_422_gets_the_invite_again_offering_its_min_se() -> None:
    b = _bench([], _snapshot(session_expires=1200))
    b.start()
    first = b.leg("1001").invite.request
    out = b.answer("1001", 422, headers=(("Min-SE", "3600"),))
    (again,) = _invites(out)
    request = again.request
    assert again.peer == b.leg("1001").peer
    assert again.ref == b.leg("1001").ref != None  # noqa: E711 - a new transaction's ref
    assert (request.call_id, request.from_.tag) == (first.call_id, first.from_.tag)
    assert request.cseq.number == first.cseq.number + 1
    assert request.via[0].branch != first.via[0].branch
    assert request.header("Session-Expires") == "3600;refresher=uac"
    assert request.header("Min-SE") == "3600"
    assert [v for k, v in request.headers if k.lower() in ("supported", "k")] == ["timer"]
    assert request.body == first.body
    assert b.to_caller(out) == []  # still ringing: nothing final to the caller
    assert "1001: 422, Min-SE 3600s -> INVITE again offering it" in b.core.record().trace
    # The callee answers without stating a timer (the caller asked one): we refresh it at
    # half of what this leg offered, not of the call's own interval.
    b2 = _bench([("Session-Expires", "1800;refresher=uac")], _snapshot(session_expires=1800))
    b2.start()
    b2.answer("1001", 422, headers=(("Min-SE", "7200"),))
    b2.answer("1001", 200, body=SDP_OFFER)
    b2.caller_ack()
    timer = b2.core._b_timer
    assert timer is not None
    assert (timer.interval, timer.refresher) == (7200, "uac")
    assert timer.refresh_at == timer.refreshed_at + 3600


@pytest.mark.parametrize(
    "headers",
    [
        (),  # no Min-SE: nothing to ask for
        (("Min-SE", "1200"),),  # what we offered already
        (("Min-SE", "600"),),
        (("Min-SE", "soon"),),
        (("Min-SE", "99999999999"),),
        (("Min-SE", "86401"),),  # over a day
    ],
)
def test_a_422_that_asks_nothing_we_can_offer_fails_the_leg(
    headers: tuple[tuple[str, str], ...],
) -> None:
    b = _bench([], _snapshot(session_expires=1200))
    b.start()
    out = b.answer("1001", 422, headers=headers)
    assert _invites(out) == []
    assert b.leg("1001").state.name == "ENDED"


def test_a_second_422_on_the_same_leg_fails_it() -> None:
    b = _bench([], _snapshot(session_expires=1200))
    b.start()
    b.answer("1001", 422, headers=(("Min-SE", "3600"),))
    out = b.answer("1001", 422, headers=(("Min-SE", "7200"),))
    assert _invites(out) == []
    assert b.leg("1001").state.name == "ENDED"
    assert b.to_caller(out)  # the only target failed: the caller gets its final answer
