"""Issue 15 in the call core: CANCEL Reason (RFC 3326), dead contacts to the offline forward,
transport errors, in-dialog requests to the dialog's remote target (RFC 3261 12.2.1.1)."""

from __future__ import annotations

from pbx.call.core import CallerCancelled, TransactionEvent
from pbx.sip.build import ANSWERED_ELSEWHERE
from pbx.sip.transaction import TransportFailed, client_transaction_key
from tests.call.bench import sent
from tests.call.test_core import bench, internal


def test_forks_that_lose_to_an_answer_are_cancelled_as_completed_elsewhere() -> None:
    b = bench(registered={"1001": 2, "1002": 1})
    b.start()
    b.answer("1001", 180)
    out = b.answer("1002", 200)
    (cancel,) = sent(out, "CANCEL")  # 1001's second contact has sent nothing yet
    assert cancel.request.header("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert cancel.request.header("Reason") == ANSWERED_ELSEWHERE
    late = sent(b.answer("1001", 180, index=1), "CANCEL")  # cancelled at its first 1xx
    assert [c.request.header("Reason") for c in late] == [ANSWERED_ELSEWHERE]


def test_a_caller_that_gives_up_cancels_without_completed_elsewhere() -> None:
    b = bench(registered={"1001": 1, "1002": 1})
    b.start()
    b.answer("1001", 180)
    out = b.run(CallerCancelled()) + b.answer("1002", 180)
    cancels = sent(out, "CANCEL")
    assert len(cancels) == 2
    assert [c.request.header("Reason") for c in cancels] == [None, None]


def test_a_fork_replaced_by_its_no_answer_forward_is_a_missed_call() -> None:
    b = internal("1001", registered={"1001": 1})
    b.start()
    b.answer("1001", 180)
    (cancel,) = sent(b.advance(20.1), "CANCEL")
    assert cancel.request.header("Reason") is None


def test_a_transport_error_on_the_only_contact_takes_the_offline_forward() -> None:
    b = internal("1001", registered={"1001": 1, "1003": 1})  # 1001: offline -> 1003
    b.start()
    leg = b.leg("1001")
    key = client_transaction_key(leg.invite.request)
    out = b.run(TransactionEvent(leg.ref, TransportFailed(key)))
    (invite,) = sent(out, "INVITE")
    assert invite.request.uri.user == "1003"  # type: ignore[union-attr]
    assert "reason=unavailable" in (invite.request.header("Diversion") or "")
    assert b.core.forwarding == [{"from": "1001", "reason": "unavailable", "to": "1003"}]
    assert b.to_caller(out) == []


def test_a_contact_that_never_answers_takes_the_offline_forward_after_timer_b() -> None:
    b = internal("1001", registered={"1001": 1, "1003": 1})
    b.start()
    (invite,) = sent(b.time_out("1001"), "INVITE")
    assert invite.request.uri.user == "1003"  # type: ignore[union-attr]
    assert any("1001 offline (408) -> forward offline to 1003" in t for t in b.core.trace)
