"""Issue 15 in the call core: CANCEL Reason (RFC 3326), dead contacts to the offline forward,
transport errors, in-dialog requests to the dialog's remote target (RFC 3261 12.2.1.1)."""

from __future__ import annotations

from pbx.call.core import AskRouting, CallerCancelled, Decided, Peer, Reach, TransactionEvent
from pbx.sip.build import ANSWERED_ELSEWHERE
from pbx.sip.transaction import TransportFailed, client_transaction_key
from tests.call.bench import CallBench, invite, sent
from tests.call.test_core import SNAPSHOT, bench, internal


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


class TcpBench(CallBench):
    """Callees registered over TCP: reached over their connection (its source address), which
    is not where their Contact says."""

    def _decide(self, ask: AskRouting) -> Decided:
        decided = super()._decide(ask)
        reach = {
            contact: Reach(r.uri, Peer(("10.9.9.9", 40001 + i), True))
            for i, (contact, r) in enumerate(decided.reach.items())
        }
        return Decided(decided.decision, reach)


def test_in_dialog_requests_to_a_tcp_phone_follow_its_remote_target_over_its_connection() -> None:
    b = TcpBench(
        SNAPSHOT, invite("1001", caller="1004"), internal("1001").origin, registered={"1001": 1}
    )
    b.start()
    (invite_out,) = sent(b.actions, "INVITE")
    assert invite_out.peer == Peer(("10.9.9.9", 40001), True)
    assert invite_out.request.via[0].transport == "TCP"
    b.answer("1001", 200)  # its 2xx Contact: sip:1001@10.9.9.9:5060 (12.2.1.1: remote target)
    b.caller_ack()
    (update,) = sent(b.caller_request("UPDATE"), "UPDATE")
    assert str(update.request.uri) == "sip:1001@10.9.9.9:5060"
    assert update.peer == Peer(("10.9.9.9", 40001), True)  # the connection, not the Contact
    assert update.request.via[0].transport == "TCP"
    # The phone refreshes its target (a request with a new Contact, 12.2.2): followed too.
    b.callee_request("UPDATE", cseq=5)
    (bye,) = sent(b.caller_request("BYE", cseq=3), "BYE")
    assert str(bye.request.uri) == "sip:someone@192.0.2.9"
    assert bye.peer == Peer(("10.9.9.9", 40001), True)
