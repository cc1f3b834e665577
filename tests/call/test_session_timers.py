"""Session timers (RFC 4028, issue 16) driven by ``[sip] session_expires`` / ``min_se``, and the
timer toward the callee's leg: pure core, fake time."""

from __future__ import annotations

from dataclasses import replace

from pbx.config.model import CallSettings, ConfigSnapshot, SipSettings
from tests.call.bench import CallBench, invite, sent
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
