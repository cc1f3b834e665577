"""Transactions (RFC 3261 section 17, RFC 6026), driven with fake time.

Every timer test follows the STYLE rule: ``now = tx.get_timer(); tx.handle_timer(now)``.
Default timers: T1 = 0.5 s, T2 = 4 s, T4 = 5 s, so 64*T1 = 32 s.
"""

from __future__ import annotations

import pytest

from pbx.errors import LocalProtocolError
from pbx.sip.build import build_cancel, build_response
from pbx.sip.message import (
    Address,
    CallId,
    CSeq,
    NameAddress,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
)
from pbx.sip.transaction import (
    AckReceived,
    BranchServerKey,
    ClientKey,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    Rfc2543ServerKey,
    SipTimers,
    Transaction,
    TransactionState,
    TransactionTable,
    TransactionTerminated,
    TransactionTimedOut,
    TransactionTimer,
    TransportFailed,
    TxEvent,
    UnmatchedResponseReceived,
    client_transaction_key,
    invite_key_for_cancel,
    is_reliable_transport,
    server_transaction_key,
)

PHONE: Address = ("192.0.2.5", 5062)
PBX: Address = ("192.0.2.10", 5060)


def make_request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc",
    cseq: int = 1,
    transport: str = "UDP",
    to_tag: str | None = None,
    via_port: int | None = 5062,
) -> SipRequest:
    params: tuple[tuple[str, str | None], ...] = (("rport", None),)
    if branch is not None:
        params = (("branch", branch), *params)
    to = NameAddress(SipUri("sip", "example.com", user="1001"))
    return SipRequest(
        method=method,
        uri=SipUri("sip", "example.com", user="1001"),
        via=(Via(transport, "192.0.2.5", via_port, params),),
        from_=NameAddress(SipUri("sip", "example.com", user="2001"), None, (("tag", "f1"),)),
        to=to.with_tag(to_tag) if to_tag else to,
        call_id=CallId("call-1@192.0.2.5"),
        cseq=CSeq(cseq, method),
    )


def ack_for(request: SipRequest, response: SipResponse, *, branch: str | None = None) -> SipRequest:
    """The ACK a UAC sends: same branch for a non-2xx, ``branch`` (a new one) for a 2xx."""
    via = request.via
    if branch is not None:
        via = (Via(via[0].transport, via[0].host, via[0].port, (("branch", branch),)),)
    return SipRequest(
        method="ACK",
        uri=request.uri,
        via=via[:1],
        from_=request.from_,
        to=response.to,
        call_id=request.call_id,
        cseq=CSeq(request.cseq.number, "ACK"),
    )


def events_of(tx: Transaction) -> list[TxEvent]:
    out: list[TxEvent] = []
    while (event := tx.next_event()) is not None:
        out.append(event)
    return out


def sent(tx: Transaction) -> list[SipMessage]:
    return [msg for msg, _ in tx.messages_to_send()]


def fire_until(tx: Transaction, end: float) -> list[tuple[float, list[SipMessage]]]:
    """Fire every timer due up to ``end``; returns (instant, messages sent then) per firing."""
    firings: list[tuple[float, list[SipMessage]]] = []
    while (now := tx.get_timer()) is not None and now <= end:
        tx.handle_timer(now)
        firings.append((now, sent(tx)))
    return firings


class TransactionPair:
    """A client and a server transaction joined in memory, like h11's ConnectionPair.

    ``to_server``/``to_client`` carry what one side sent to the other (or lose it with
    ``drop=True``); the server transaction is made from the first request that arrives.
    """

    def __init__(
        self,
        request: SipRequest,
        now: float = 0.0,
        timers: SipTimers | None = None,
        *,
        reliable: bool = False,
    ) -> None:
        self.timers = timers or SipTimers()
        self.reliable = reliable
        self.client: InviteClientTransaction | NonInviteClientTransaction
        if request.method == "INVITE":
            self.client = InviteClientTransaction(request, PBX, now, self.timers, reliable=reliable)
        else:
            self.client = NonInviteClientTransaction(
                request, PBX, now, self.timers, reliable=reliable
            )
        self.server: InviteServerTransaction | NonInviteServerTransaction | None = None

    @property
    def has_server(self) -> bool:
        return self.server is not None

    def to_server(self, now: float, *, drop: bool = False) -> list[SipMessage]:
        messages: list[SipMessage] = []
        for msg, address in self.client.messages_to_send():
            assert address == PBX
            assert isinstance(msg, SipRequest)
            messages.append(msg)
            if drop:
                continue
            if self.server is None:
                cls = (
                    InviteServerTransaction
                    if msg.method == "INVITE"
                    else NonInviteServerTransaction
                )
                self.server = cls(msg, PHONE, self.timers, reliable=self.reliable)
            else:
                self.server.receive(msg, now)
        return messages

    def to_client(self, now: float, *, drop: bool = False) -> list[SipMessage]:
        assert self.server is not None
        messages: list[SipMessage] = []
        for msg, address in self.server.messages_to_send():
            assert address == PHONE
            assert isinstance(msg, SipResponse)
            messages.append(msg)
            if not drop:
                self.client.receive(msg, now)
        return messages

    def respond(self, status: int, now: float) -> SipResponse:
        assert self.server is not None
        resp = build_response(self.client.request, status, to_tag="srv")  # the server keeps none
        self.server.respond(resp, now)
        return resp


def statuses(messages: list[SipMessage]) -> list[int | str]:
    return [m.status if isinstance(m, SipResponse) else m.method for m in messages]


# -- SipTimers ----------------------------------------------------------------------------------


def test_timers_derive_from_t1_t2_t4_and_the_transport() -> None:
    timers = SipTimers(t1=1.0, t2=8.0, t4=10.0)
    assert timers.duration(TransactionTimer.A, reliable=False) == 1.0
    assert timers.duration(TransactionTimer.A, reliable=True) is None
    assert timers.duration(TransactionTimer.B, reliable=True) == 64.0
    assert timers.duration(TransactionTimer.D, reliable=False) == 64.0  # max(32, 64*T1)
    assert SipTimers().duration(TransactionTimer.D, reliable=False) == 32.0
    assert timers.duration(TransactionTimer.D, reliable=True) == 0.0
    assert timers.duration(TransactionTimer.I, reliable=False) == 10.0
    assert timers.duration(TransactionTimer.J, reliable=False) == 64.0
    assert timers.duration(TransactionTimer.K, reliable=True) == 0.0
    assert timers.duration(TransactionTimer.L, reliable=True) == 64.0
    assert timers.duration(TransactionTimer.M, reliable=False) == 64.0


def test_timers_refuse_nonsense() -> None:
    with pytest.raises(LocalProtocolError):
        SipTimers(t1=5.0, t2=4.0)


# -- INVITE client (17.1.1, RFC 6026 8.4) -------------------------------------------------------


def test_invite_client_sends_invite_and_retransmits_on_timer_a_doubling_until_timer_b() -> None:
    tx = InviteClientTransaction(make_request(), PBX, now=100.0)
    assert statuses(sent(tx)) == ["INVITE"]
    assert tx.state is TransactionState.CALLING
    firings = fire_until(tx, 200.0)
    # A: T1, 2T1, 4T1, ... with no cap; B at 64*T1 ends it (7 transmissions in all).
    assert [(t - 100.0, statuses(m)) for t, m in firings] == [
        (0.5, ["INVITE"]),
        (1.5, ["INVITE"]),
        (3.5, ["INVITE"]),
        (7.5, ["INVITE"]),
        (15.5, ["INVITE"]),
        (31.5, ["INVITE"]),
        (32.0, []),
    ]
    assert events_of(tx) == [
        TransactionTimedOut(tx.key, TransactionTimer.B),
        TransactionTerminated(tx.key),
    ]
    assert tx.terminated
    assert tx.get_timer() is None


def test_invite_client_timer_a_interval_exceeds_t2() -> None:
    tx = InviteClientTransaction(make_request(), PBX, 0.0, SipTimers(t1=0.5, t2=1.0))
    sent(tx)
    times = [t for t, _ in fire_until(tx, 31.9)]
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


def test_invite_client_stops_retransmitting_after_a_provisional_response() -> None:
    pair = TransactionPair(make_request())
    pair.to_server(0.0)
    pair.to_client(0.1)  # the server's 100 Trying
    assert pair.client.state is TransactionState.PROCEEDING
    assert pair.client.get_timer() is None  # no A, no B: the TU's own timer rules now
    assert [type(e) for e in events_of(pair.client)] == [ResponseReceived]


def test_invite_client_acks_a_non2xx_final_and_passes_it_up() -> None:
    invite = make_request()
    tx = InviteClientTransaction(invite, PBX, 0.0)
    sent(tx)
    busy = build_response(invite, 486, to_tag="srv")
    tx.receive(busy, 0.2)
    [ack] = sent(tx)
    assert isinstance(ack, SipRequest)
    assert ack.method == "ACK"
    assert ack.via == invite.via
    assert ack.to.tag == "srv"
    assert ack.cseq == CSeq(1, "ACK")
    assert events_of(tx) == [ResponseReceived(tx.key, busy)]
    assert tx.state is TransactionState.COMPLETED


def test_invite_client_absorbs_retransmitted_final_and_resends_ack() -> None:
    invite = make_request()
    tx = InviteClientTransaction(invite, PBX, 0.0)
    sent(tx)
    busy = build_response(invite, 486, to_tag="srv")
    tx.receive(busy, 0.2)
    [ack] = sent(tx)
    events_of(tx)
    tx.receive(busy, 0.7)
    assert sent(tx) == [ack]
    assert events_of(tx) == []  # absorbed: the TU saw it once


def test_invite_client_terminates_on_timer_d_32s_after_non2xx_over_udp() -> None:
    invite = make_request()
    tx = InviteClientTransaction(invite, PBX, 0.0)
    tx.receive(build_response(invite, 404, to_tag="srv"), 1.0)
    events_of(tx)
    assert tx.get_timer() == 33.0
    tx.handle_timer(33.0)
    assert events_of(tx) == [TransactionTerminated(tx.key)]


def test_invite_client_over_tcp_has_no_timer_a_and_terminates_at_once_after_non2xx() -> None:
    invite = make_request(transport="TCP")
    tx = InviteClientTransaction(invite, PBX, 0.0, reliable=True)
    assert tx.get_timer() == 32.0  # B only
    busy = build_response(invite, 486, to_tag="srv")
    tx.receive(busy, 1.0)
    assert statuses(sent(tx)) == ["INVITE", "ACK"]
    assert events_of(tx) == [ResponseReceived(tx.key, busy), TransactionTerminated(tx.key)]


def test_invite_client_over_tcp_times_out_on_timer_b() -> None:
    tx = InviteClientTransaction(make_request(transport="TCP"), PBX, 0.0, reliable=True)
    sent(tx)
    assert [(t, m) for t, m in fire_until(tx, 100.0)] == [(32.0, [])]
    assert TransactionTimedOut(tx.key, TransactionTimer.B) in events_of(tx)


def test_invite_client_passes_every_2xx_up_in_accepted_until_timer_m() -> None:
    invite = make_request()
    tx = InviteClientTransaction(invite, PBX, 0.0)
    sent(tx)
    ok = build_response(invite, 200, to_tag="a")
    ok_other_fork = build_response(invite, 200, to_tag="b")
    tx.receive(ok, 2.0)
    assert tx.state is TransactionState.ACCEPTED
    tx.receive(ok, 2.5)
    tx.receive(ok_other_fork, 3.0)
    tx.receive(build_response(invite, 180, to_tag="a"), 3.1)  # late provisional: absorbed
    assert sent(tx) == []  # the TU ACKs 2xx (13.2.2.4), never the transaction
    assert events_of(tx) == [
        ResponseReceived(tx.key, ok),
        ResponseReceived(tx.key, ok),
        ResponseReceived(tx.key, ok_other_fork),
    ]
    assert tx.get_timer() == 2.0 + 32.0
    tx.handle_timer(34.0)
    assert events_of(tx) == [TransactionTerminated(tx.key)]


def test_invite_client_reports_transport_error_in_calling() -> None:
    tx = InviteClientTransaction(make_request(), PBX, 0.0)
    tx.handle_transport_error(0.1)
    assert events_of(tx) == [TransportFailed(tx.key), TransactionTerminated(tx.key)]
    assert tx.get_timer() is None


def test_invite_client_refuses_non_invite() -> None:
    with pytest.raises(LocalProtocolError):
        InviteClientTransaction(make_request("BYE"), PBX, 0.0)


# -- non-INVITE client (17.1.2) -----------------------------------------------------------------


def test_non_invite_client_retransmits_on_timer_e_capped_at_t2_until_timer_f() -> None:
    tx = NonInviteClientTransaction(make_request("OPTIONS"), PBX, 0.0)
    assert statuses(sent(tx)) == ["OPTIONS"]
    firings = fire_until(tx, 100.0)
    retransmit_times = [t for t, m in firings if m]
    assert retransmit_times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert firings[-1] == (32.0, [])
    assert events_of(tx) == [
        TransactionTimedOut(tx.key, TransactionTimer.F),
        TransactionTerminated(tx.key),
    ]


def test_non_invite_client_retransmits_every_t2_in_proceeding() -> None:
    request = make_request("REGISTER")
    tx = NonInviteClientTransaction(request, PBX, 0.0)
    sent(tx)
    tx.receive(build_response(request, 100), 0.2)
    assert tx.state is TransactionState.PROCEEDING
    times = [t for t, m in fire_until(tx, 13.0) if m]
    assert times == [0.5, 4.5, 8.5, 12.5]  # E keeps its pending value, then T2 each time
    assert tx.get_timer() == 16.5


def test_non_invite_client_absorbs_final_retransmissions_until_timer_k() -> None:
    request = make_request("BYE")
    tx = NonInviteClientTransaction(request, PBX, 0.0)
    sent(tx)
    ok = build_response(request, 200)
    tx.receive(ok, 0.3)
    tx.receive(ok, 0.8)
    assert events_of(tx) == [ResponseReceived(tx.key, ok)]
    assert sent(tx) == []
    assert tx.get_timer() == 0.3 + 5.0  # K = T4
    tx.handle_timer(5.3)
    assert events_of(tx) == [TransactionTerminated(tx.key)]


def test_non_invite_client_over_tcp_terminates_on_final_and_never_retransmits() -> None:
    request = make_request("BYE", transport="TCP")
    tx = NonInviteClientTransaction(request, PBX, 0.0, reliable=True)
    assert tx.get_timer() == 32.0  # F only
    tx.receive(build_response(request, 481), 1.0)
    assert [type(e) for e in events_of(tx)] == [ResponseReceived, TransactionTerminated]


def test_non_invite_client_reports_transport_error_in_proceeding() -> None:
    request = make_request("OPTIONS")
    tx = NonInviteClientTransaction(request, PBX, 0.0)
    tx.receive(build_response(request, 100), 0.1)
    events_of(tx)
    tx.handle_transport_error(0.5)
    assert events_of(tx) == [TransportFailed(tx.key), TransactionTerminated(tx.key)]


# -- INVITE server (17.2.1, RFC 6026 7.1) -------------------------------------------------------


def test_invite_server_sends_100_trying_at_once_and_passes_invite_up() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    [trying] = tx.messages_to_send()
    assert isinstance(trying[0], SipResponse)
    assert (trying[0].status, trying[0].to.tag, trying[1]) == (100, None, PHONE)
    assert events_of(tx) == [RequestReceived(tx.key, invite, PHONE)]
    assert tx.state is TransactionState.PROCEEDING
    assert tx.get_timer() is None


def test_invite_server_answers_retransmitted_invite_with_last_provisional() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    sent(tx)
    tx.receive(invite, 0.5)
    assert statuses(sent(tx)) == [100]
    ringing = build_response(invite, 180, to_tag="srv")
    tx.respond(ringing, 1.0)
    assert sent(tx) == [ringing]
    tx.receive(invite, 1.5)
    assert sent(tx) == [ringing]
    assert events_of(tx) == [RequestReceived(tx.key, invite, PHONE)]  # the INVITE, once


def test_invite_server_retransmits_final_response_on_timer_g() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    sent(tx)
    busy = build_response(invite, 486, to_tag="srv")
    tx.respond(busy, 10.0)
    assert sent(tx) == [busy]
    firings = fire_until(tx, 100.0)
    # G: T1 doubling, capped at T2; H at 64*T1 ends it.
    assert [t - 10.0 for t, m in firings if m == [busy]] == [
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]
    assert firings[-1] == (42.0, [])


def test_invite_server_times_out_on_timer_h_without_ack() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    tx.respond(build_response(invite, 480, to_tag="srv"), 0.0)
    events_of(tx)
    fire_until(tx, 100.0)
    assert events_of(tx) == [
        TransactionTimedOut(tx.key, TransactionTimer.H),
        TransactionTerminated(tx.key),
    ]


def test_invite_server_resends_final_on_retransmitted_invite_in_completed() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    busy = build_response(invite, 486, to_tag="srv")
    tx.respond(busy, 0.0)
    sent(tx)
    tx.receive(invite, 0.1)
    assert sent(tx) == [busy]


def test_invite_server_absorbs_ack_and_its_retransmissions_until_timer_i() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    busy = build_response(invite, 486, to_tag="srv")
    tx.respond(busy, 0.0)
    events_of(tx)
    sent(tx)
    ack = ack_for(invite, busy)
    tx.receive(ack, 0.2)
    assert tx.state is TransactionState.CONFIRMED
    assert tx.get_timer() == 0.2 + 5.0  # I = T4; G and H are stopped
    tx.receive(ack, 0.3)
    tx.receive(invite, 0.4)
    assert sent(tx) == []
    assert events_of(tx) == []
    tx.handle_timer(5.2)
    assert events_of(tx) == [TransactionTerminated(tx.key)]


def test_invite_server_over_tcp_never_retransmits_and_terminates_on_ack() -> None:
    invite = make_request(transport="TCP")
    tx = InviteServerTransaction(invite, PHONE, reliable=True)
    busy = build_response(invite, 486, to_tag="srv")
    tx.respond(busy, 0.0)
    assert tx.get_timer() == 32.0  # H only, no G
    tx.receive(ack_for(invite, busy), 0.1)
    assert events_of(tx)[-1] == TransactionTerminated(tx.key)


def test_invite_server_accepted_absorbs_invites_passes_acks_up_and_sends_tu_2xx() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    sent(tx)
    events_of(tx)
    ok = build_response(invite, 200, to_tag="srv")
    tx.respond(ok, 1.0)
    assert tx.state is TransactionState.ACCEPTED
    assert sent(tx) == [ok]
    assert tx.get_timer() == 1.0 + 32.0  # L; no G: the TU retransmits 2xx (13.3.1.4)
    tx.receive(invite, 1.2)
    assert sent(tx) == []
    tx.respond(ok, 1.5)  # the TU's own 2xx retransmission
    assert sent(tx) == [ok]
    ack = ack_for(invite, ok)
    tx.receive(ack, 1.6)
    assert events_of(tx) == [AckReceived(tx.key, ack, PHONE)]
    tx.handle_timer(33.0)
    assert events_of(tx) == [TransactionTerminated(tx.key)]


def test_invite_server_refuses_a_second_final_response() -> None:
    invite = make_request()
    tx = InviteServerTransaction(invite, PHONE)
    tx.respond(build_response(invite, 486, to_tag="srv"), 0.0)
    with pytest.raises(LocalProtocolError):
        tx.respond(build_response(invite, 200, to_tag="srv"), 0.1)
    with pytest.raises(LocalProtocolError):
        tx.respond(build_response(invite, 180, to_tag="srv"), 0.1)


def test_invite_server_refuses_a_response_to_another_request() -> None:
    tx = InviteServerTransaction(make_request(), PHONE)
    with pytest.raises(LocalProtocolError):
        tx.respond(build_response(make_request(cseq=2), 486), 0.0)


def test_invite_server_reports_transport_error_in_completed() -> None:
    invite = make_request(transport="TCP")
    tx = InviteServerTransaction(invite, PHONE, reliable=True)
    tx.respond(build_response(invite, 486, to_tag="srv"), 0.0)
    events_of(tx)
    tx.handle_transport_error(0.1)
    assert events_of(tx) == [TransportFailed(tx.key), TransactionTerminated(tx.key)]


# -- non-INVITE server (17.2.2) -----------------------------------------------------------------


def test_non_invite_server_discards_retransmissions_in_trying() -> None:
    request = make_request("REGISTER")
    tx = NonInviteServerTransaction(request, PHONE)
    assert sent(tx) == []  # no 100 for non-INVITE from the transaction
    tx.receive(request, 0.5)
    assert sent(tx) == []
    assert events_of(tx) == [RequestReceived(tx.key, request, PHONE)]


def test_non_invite_server_resends_last_response_on_retransmission() -> None:
    request = make_request("REGISTER")
    tx = NonInviteServerTransaction(request, PHONE)
    trying = build_response(request, 100)
    tx.respond(trying, 0.1)
    tx.receive(request, 0.5)
    assert sent(tx) == [trying, trying]
    ok = build_response(request, 200, to_tag="srv")
    tx.respond(ok, 0.6)
    tx.receive(request, 0.7)
    assert sent(tx) == [ok, ok]


def test_non_invite_server_discards_further_finals_in_completed() -> None:
    request = make_request("OPTIONS")
    tx = NonInviteServerTransaction(request, PHONE)
    tx.respond(build_response(request, 200, to_tag="srv"), 0.0)
    sent(tx)
    tx.respond(build_response(request, 500, to_tag="srv"), 0.1)
    assert sent(tx) == []
    with pytest.raises(LocalProtocolError):
        tx.respond(build_response(request, 180, to_tag="srv"), 0.1)


def test_non_invite_server_terminates_on_timer_j_over_udp_and_at_once_over_tcp() -> None:
    request = make_request("OPTIONS")
    udp = NonInviteServerTransaction(request, PHONE)
    udp.respond(build_response(request, 200, to_tag="srv"), 2.0)
    events_of(udp)
    assert udp.get_timer() == 34.0  # J = 64*T1
    udp.handle_timer(34.0)
    assert events_of(udp) == [TransactionTerminated(udp.key)]

    tcp_request = make_request("OPTIONS", transport="TCP")
    tcp = NonInviteServerTransaction(tcp_request, PHONE, reliable=True)
    tcp.respond(build_response(tcp_request, 200, to_tag="srv"), 2.0)
    assert events_of(tcp)[-1] == TransactionTerminated(tcp.key)
    assert tcp.get_timer() is None


# -- client and server together -----------------------------------------------------------------


def test_pair_recovers_a_lost_invite_with_timer_a_and_completes_a_rejected_call() -> None:
    pair = TransactionPair(make_request())
    pair.to_server(0.0, drop=True)
    assert not pair.has_server
    now = pair.client.get_timer()
    assert now == 0.5
    pair.client.handle_timer(now)
    pair.to_server(now)
    assert pair.server is not None
    assert statuses(pair.to_client(0.55)) == [100]
    pair.respond(486, 1.0)
    assert statuses(pair.to_client(1.0, drop=True)) == [486]  # the final is lost
    now = pair.server.get_timer()
    assert now == 1.5
    pair.server.handle_timer(now)  # timer G
    assert statuses(pair.to_client(now)) == [486]
    assert statuses(pair.to_server(now)) == ["ACK"]
    assert pair.server.state is TransactionState.CONFIRMED
    assert pair.client.state is TransactionState.COMPLETED
    assert [type(e) for e in events_of(pair.client)] == [ResponseReceived, ResponseReceived]
    fire_until(pair.server, 100.0)
    fire_until(pair.client, 100.0)
    assert pair.server.terminated
    assert pair.client.terminated


def test_pair_lost_ack_is_recovered_by_the_retransmitted_final() -> None:
    pair = TransactionPair(make_request())
    pair.to_server(0.0)
    pair.respond(603, 0.1)
    pair.to_client(0.1)
    assert statuses(pair.to_server(0.1, drop=True)) == ["ACK"]
    now = pair.server.get_timer() if pair.server else None
    assert now == 0.6
    assert pair.server is not None
    pair.server.handle_timer(now)
    pair.to_client(now)
    assert statuses(pair.to_server(now)) == ["ACK"]  # the client re-ACKs the retransmission
    assert pair.server.state is TransactionState.CONFIRMED


def test_pair_answered_call_ends_both_sides_after_timers_l_and_m() -> None:
    pair = TransactionPair(make_request())
    pair.to_server(0.0)
    pair.respond(180, 0.5)
    pair.respond(200, 2.0)
    assert statuses(pair.to_client(2.0)) == [100, 180, 200]
    assert pair.client.state is TransactionState.ACCEPTED
    assert pair.server is not None
    assert pair.server.state is TransactionState.ACCEPTED
    assert pair.to_server(2.0) == []  # no ACK from the transaction for a 2xx
    fire_until(pair.client, 100.0)
    fire_until(pair.server, 100.0)
    assert pair.client.terminated
    assert pair.server.terminated


def test_pair_non_invite_over_udp_recovers_a_lost_request() -> None:
    pair = TransactionPair(make_request("OPTIONS"))
    pair.to_server(0.0, drop=True)
    pair.client.handle_timer(0.5)
    pair.to_server(0.5)
    pair.respond(200, 0.6)
    assert statuses(pair.to_client(0.6)) == [200]
    assert pair.client.state is TransactionState.COMPLETED


# -- matching (17.1.3, 17.2.3) ------------------------------------------------------------------


def test_server_key_maps_ack_for_non2xx_to_the_invite_transaction() -> None:
    invite = make_request()
    ack = ack_for(invite, build_response(invite, 486, to_tag="srv"))
    assert server_transaction_key(ack) == server_transaction_key(invite)


def test_server_key_keeps_cancel_apart_from_the_invite_it_targets() -> None:
    invite = make_request()
    cancel = build_cancel(invite)
    assert server_transaction_key(cancel) != server_transaction_key(invite)
    assert invite_key_for_cancel(cancel) == server_transaction_key(invite)


def test_server_key_includes_the_cseq_number_for_pyvoip_branch_reuse() -> None:
    first = make_request(branch="z9hG4bKsame", cseq=1)
    retry = make_request(branch="z9hG4bKsame", cseq=2)
    assert server_transaction_key(first) != server_transaction_key(retry)


def test_server_key_uses_branch_sent_by_and_method() -> None:
    key = server_transaction_key(make_request(via_port=None))
    assert key == BranchServerKey("z9hG4bKabc", "192.0.2.5", 5060, "INVITE", 1)
    assert server_transaction_key(make_request(via_port=5070)) != key
    assert server_transaction_key(make_request(branch="z9hG4bKother")) != key


def test_server_key_falls_back_to_rfc2543_matching_without_magic_cookie() -> None:
    invite = make_request(branch="1234")
    key = server_transaction_key(invite)
    assert isinstance(key, Rfc2543ServerKey)
    ack = ack_for(invite, build_response(invite, 486, to_tag="srv"))
    assert server_transaction_key(ack) == key  # To tag differs, but not used for ACK
    no_branch = make_request(branch=None)
    assert isinstance(server_transaction_key(no_branch), Rfc2543ServerKey)
    assert server_transaction_key(make_request(branch="1234", cseq=2)) != key
    bye = make_request("BYE", branch="1234", to_tag="a")
    assert server_transaction_key(bye) != server_transaction_key(
        make_request("BYE", branch="1234", to_tag="b")
    )
    assert invite_key_for_cancel(build_cancel(invite)) == key


def test_client_key_is_top_via_branch_and_cseq_method() -> None:
    invite = make_request()
    assert client_transaction_key(build_response(invite, 180)) == ClientKey("z9hG4bKabc", "INVITE")
    cancel = build_cancel(invite)
    assert client_transaction_key(build_response(cancel, 200)) == ClientKey("z9hG4bKabc", "CANCEL")


# -- TransactionTable ---------------------------------------------------------------------------


def test_table_creates_a_server_transaction_and_absorbs_retransmissions() -> None:
    table = TransactionTable()
    invite = make_request()
    events = table.receive(invite, PHONE, 0.0)
    key = server_transaction_key(invite, PHONE)
    assert events == [RequestReceived(key, invite, PHONE)]
    assert [(statuses([m]), a) for m, a in table.messages_to_send()] == [([100], PHONE)]
    assert table.receive(invite, PHONE, 0.3) == []
    assert statuses([m for m, _ in table.messages_to_send()]) == [100]
    assert len(table) == 1


def test_table_routes_ack_for_non2xx_to_the_invite_transaction() -> None:
    table = TransactionTable()
    invite = make_request()
    [event] = table.receive(invite, PHONE, 0.0)
    assert isinstance(event, RequestReceived)
    busy = build_response(invite, 486, to_tag="srv")
    assert table.respond(event.key, busy, 0.1) == []
    assert table.receive(ack_for(invite, busy), PHONE, 0.2) == []
    tx = table.get(event.key)
    assert tx is not None
    assert tx.state is TransactionState.CONFIRMED


def test_table_passes_ack_for_2xx_up_without_a_transaction() -> None:
    table = TransactionTable()
    invite = make_request()
    [event] = table.receive(invite, PHONE, 0.0)
    assert isinstance(event, RequestReceived)
    ok = build_response(invite, 200, to_tag="srv")
    table.respond(event.key, ok, 0.1)
    ack = ack_for(invite, ok, branch="z9hG4bKnew")
    assert table.receive(ack, PHONE, 0.2) == [AckReceived(None, ack, PHONE)]


def test_table_treats_same_branch_with_new_cseq_as_a_new_transaction() -> None:
    # pyVoIP 1.6: INVITE (CSeq 1) -> 401 -> ACK -> INVITE with credentials, same branch, CSeq 2.
    table = TransactionTable()
    first = make_request(branch="z9hG4bKpyvoip", cseq=1)
    [event] = table.receive(first, PHONE, 0.0)
    assert isinstance(event, RequestReceived)
    challenge = build_response(first, 401, to_tag="srv")
    table.respond(event.key, challenge, 0.01)
    assert table.receive(ack_for(first, challenge), PHONE, 0.02) == []
    retry = make_request(branch="z9hG4bKpyvoip", cseq=2)
    events = table.receive(retry, PHONE, 0.03)
    assert [type(e) for e in events] == [RequestReceived]
    assert isinstance(events[0], RequestReceived)
    assert events[0].request is retry
    assert len(table) == 2


def test_table_matches_rfc2543_ack_only_with_the_to_tag_we_sent() -> None:
    table = TransactionTable()
    invite = make_request(branch=None)
    [event] = table.receive(invite, PHONE, 0.0)
    assert isinstance(event, RequestReceived)
    busy = build_response(invite, 486, to_tag="srv")
    table.respond(event.key, busy, 0.1)
    wrong = ack_for(invite, build_response(invite, 486, to_tag="other"))
    assert table.receive(wrong, PHONE, 0.2) == [AckReceived(None, wrong, PHONE)]
    assert table.receive(ack_for(invite, busy), PHONE, 0.3) == []
    tx = table.get(event.key)
    assert tx is not None
    assert tx.state is TransactionState.CONFIRMED


def test_table_finds_the_invite_a_cancel_targets() -> None:
    table = TransactionTable()
    invite = make_request()
    table.receive(invite, PHONE, 0.0)
    cancel = build_cancel(invite)
    [event] = table.receive(cancel, PHONE, 0.5)
    assert isinstance(event, RequestReceived)
    assert event.key != server_transaction_key(invite, PHONE)
    found = table.find_invite_for_cancel(cancel, PHONE)
    assert found is not None
    assert found.key == server_transaction_key(invite, PHONE)
    assert (
        table.find_invite_for_cancel(build_cancel(make_request(branch="z9hG4bKx")), PHONE) is None
    )
    # A CANCEL from another address is not for this INVITE (the key includes the source).
    assert table.find_invite_for_cancel(cancel, ("192.0.2.99", 5060)) is None


def test_table_keeps_same_branch_requests_from_different_sources_apart() -> None:
    table = TransactionTable()
    request = make_request(method="OPTIONS")
    other = ("192.0.2.99", 5070)
    [first] = table.receive(request, PHONE, 0.0)
    [second] = table.receive(request, other, 0.1)
    assert isinstance(first, RequestReceived)
    assert isinstance(second, RequestReceived)
    assert first.key != second.key
    assert len(table) == 2


def test_table_client_transaction_gets_responses_and_unknown_ones_go_up() -> None:
    table = TransactionTable()
    invite = make_request()
    key = table.send_request(invite, PBX, 0.0)
    assert table.messages_to_send() == [(invite, PBX)]
    ringing = build_response(invite, 180, to_tag="x")
    assert table.receive(ringing, PBX, 0.1) == [ResponseReceived(key, ringing)]
    stray = build_response(make_request(branch="z9hG4bKelse"), 200, to_tag="y")
    assert table.receive(stray, PBX, 0.2) == [UnmatchedResponseReceived(stray, PBX)]
    with pytest.raises(LocalProtocolError):
        table.send_request(invite, PBX, 0.3)


def test_table_drives_retransmissions_and_timeouts_through_next_deadline() -> None:
    table = TransactionTable()
    key = table.send_request(make_request("OPTIONS"), PBX, 0.0)
    table.messages_to_send()
    instants: list[float] = []
    events: list[TxEvent] = []
    while (now := table.next_deadline()) is not None:
        events.extend(table.handle_timers(now))
        if table.messages_to_send():
            instants.append(now)
    assert instants == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events == [TransactionTimedOut(key, TransactionTimer.F), TransactionTerminated(key)]
    assert len(table) == 0


def test_table_timers_fire_exactly_in_order_within_one_slot_and_across_slots() -> None:
    # Deadlines share 20 ms slots (issue #21); each still fires at its own instant, earliest
    # first, and next_deadline is exact. Timer A of INVITEs sent at 0, 5 and 13 ms: 500, 505
    # and 513 ms (one slot), and of one sent at 30 ms: 530 ms (the next slot).
    table = TransactionTable()
    keys = [
        table.send_request(make_request(branch=f"z9hG4bK{i}"), PBX, at)
        for i, at in enumerate((0.013, 0.0, 0.030, 0.005))
    ]
    table.messages_to_send()
    assert table.next_deadline() == 0.5
    assert table.handle_timers(0.499) == []
    assert table.messages_to_send() == []
    table.handle_timers(0.507)  # A of the INVITEs sent at 0 and 5 ms, in that order
    sent = [msg.via[0].branch for msg, _ in table.messages_to_send()]
    assert sent == ["z9hG4bK1", "z9hG4bK3"]
    assert table.next_deadline() == 0.513
    table.handle_timers(0.513)
    assert [msg.via[0].branch for msg, _ in table.messages_to_send()] == ["z9hG4bK0"]
    assert table.next_deadline() == 0.530
    table.handle_timers(0.6)
    assert [msg.via[0].branch for msg, _ in table.messages_to_send()] == ["z9hG4bK2"]
    # A doubled, from when it fired: the INVITE sent at 0 ms fired at 507 ms, next at 1,507.
    assert table.next_deadline() == pytest.approx(1.507)
    assert len(table) == len(keys)


def test_table_next_deadline_follows_when_the_earliest_transaction_ends() -> None:
    table = TransactionTable()
    early, late = make_request(branch="z9hG4bKearly"), make_request(branch="z9hG4bKlate")
    table.send_request(early, PBX, 0.0)
    table.send_request(late, PBX, 0.3)
    assert table.next_deadline() == 0.5
    table.receive(build_response(early, 180, to_tag="x"), PBX, 0.1)  # its timers stop
    assert table.next_deadline() == 0.8
    table.receive(build_response(late, 180, to_tag="y"), PBX, 0.4)
    assert table.next_deadline() is None
    table.receive(build_response(early, 486, to_tag="x"), PBX, 0.5)  # timer D: 32.5
    assert table.next_deadline() == 32.5


def test_table_forgets_terminated_transactions_and_skips_stale_deadlines() -> None:
    table = TransactionTable()
    invite = make_request()
    key = table.send_request(invite, PBX, 0.0)
    assert table.next_deadline() == 0.5
    table.receive(build_response(invite, 180, to_tag="x"), PBX, 0.1)  # A and B stop
    assert table.next_deadline() is None
    events = table.receive(build_response(invite, 486, to_tag="x"), PBX, 0.2)
    assert events[-1] == ResponseReceived(key, build_response(invite, 486, to_tag="x"))
    assert table.next_deadline() == 32.2  # timer D
    assert table.handle_timers(32.2) == [TransactionTerminated(key)]
    assert key not in table
    assert table.next_deadline() is None


def test_table_over_tcp_ends_server_transactions_at_once() -> None:
    table = TransactionTable()
    request = make_request("OPTIONS", transport="TCP")
    [event] = table.receive(request, PHONE, 0.0, reliable=True)
    assert isinstance(event, RequestReceived)
    events = table.respond(event.key, build_response(request, 200, to_tag="t"), 0.1)
    assert events == [TransactionTerminated(event.key)]
    assert len(table) == 0


def test_table_reports_transport_failure_to_every_transaction_of_that_peer() -> None:
    table = TransactionTable()
    a = table.send_request(make_request("OPTIONS", branch="z9hG4bKa"), PBX, 0.0, reliable=True)
    b = table.send_request(make_request("OPTIONS", branch="z9hG4bKb"), PBX, 0.0, reliable=True)
    other = table.send_request(make_request("OPTIONS", branch="z9hG4bKc"), PHONE, 0.0)
    events = table.transport_failed(PBX, 0.1)
    assert events == [
        TransportFailed(a),
        TransactionTerminated(a),
        TransportFailed(b),
        TransactionTerminated(b),
    ]
    assert other in table
    assert len(table) == 1


def test_table_finds_a_peers_transactions_after_others_ended_and_forgets_ended_peers() -> None:
    # The table indexes transactions by peer (no scan of every live one on a transport
    # failure); the index must follow transactions that end on their own.
    table = TransactionTable()
    done_req = make_request("OPTIONS", branch="z9hG4bKd")
    done = table.send_request(done_req, PBX, 0.0, reliable=True)
    live = table.send_request(make_request("OPTIONS", branch="z9hG4bKl"), PBX, 0.0, reliable=True)
    # Without an explicit transport a message may leave over the peer's TCP connection, so a
    # UDP transaction to that peer is told too.
    udp = table.send_request(make_request("OPTIONS", branch="z9hG4bKu"), PBX, 0.0)
    server_req = make_request("OPTIONS", branch="z9hG4bKs")
    [received] = table.receive(server_req, PHONE, 0.0)
    assert isinstance(received, RequestReceived)
    ended = table.receive(build_response(done_req, 200, to_tag="t"), PBX, 0.1)
    assert ended[-1] == TransactionTerminated(done)  # timer K is 0 over TCP
    assert table.transport_failed(PBX, 0.2) == [
        TransportFailed(live),
        TransactionTerminated(live),
        TransportFailed(udp),
        TransactionTerminated(udp),
    ]
    assert table.transport_failed(PBX, 0.3) == []
    assert table._by_peer == {PHONE: {received.key: None}}
    table.respond(received.key, build_response(server_req, 200, to_tag="t"), 0.4)
    table.handle_timers(64.0)  # timer J
    assert len(table) == 0
    assert table._by_peer == {}


def test_table_abandon_forgets_a_transaction() -> None:
    table = TransactionTable()
    invite = make_request()
    key = table.send_request(invite, PBX, 0.0)
    table.receive(build_response(invite, 180, to_tag="x"), PBX, 0.1)
    assert table.abandon(key) == [TransactionTerminated(key)]
    assert table.abandon(key) == []
    assert len(table) == 0


def test_table_respond_to_an_unknown_transaction_is_a_local_error() -> None:
    table = TransactionTable()
    with pytest.raises(LocalProtocolError):
        table.respond(
            server_transaction_key(make_request()), build_response(make_request(), 200), 0
        )


def test_table_heap_stays_bounded_under_many_rearms() -> None:
    table = TransactionTable()
    for i in range(50):
        table.send_request(make_request("OPTIONS", branch=f"z9hG4bK{i}"), PBX, 0.0)
    now = 0.0
    while now < 30.0:
        now = table.next_deadline() or 31.0
        table.handle_timers(now)
        table.messages_to_send()
    assert table.timer_entries <= 64 + 4 * len(table)
    assert len(table) == 50


def test_table_send_stateless_queues_in_order() -> None:
    table = TransactionTable()
    invite = make_request()
    table.send_request(invite, PBX, 0.0)
    ack = ack_for(invite, build_response(invite, 200, to_tag="x"), branch="z9hG4bKack")
    table.send_stateless(ack, PBX)
    assert [m for m, _ in table.messages_to_send()] == [invite, ack]


# -- odds and ends ------------------------------------------------------------------------------


def test_handle_timer_before_the_deadline_does_nothing() -> None:
    tx = InviteClientTransaction(make_request(), PBX, 0.0)
    sent(tx)
    tx.handle_timer(0.49)
    assert sent(tx) == []
    assert tx.get_timer() == 0.5
    assert tx.state is TransactionState.CALLING


def test_late_timer_call_fires_every_overdue_timer_in_order() -> None:
    tx = InviteClientTransaction(make_request(), PBX, 0.0)
    sent(tx)
    tx.handle_timer(40.0)  # the adapter slept through A and B: B still ends it
    assert statuses(sent(tx)) == ["INVITE"]  # A fired once, then B
    assert events_of(tx) == [
        TransactionTimedOut(tx.key, TransactionTimer.B),
        TransactionTerminated(tx.key),
    ]


def test_invite_client_absorbs_2xx_and_1xx_after_a_non2xx_final() -> None:
    invite = make_request()
    tx = InviteClientTransaction(invite, PBX, 0.0)
    tx.receive(build_response(invite, 486, to_tag="srv"), 0.1)
    events_of(tx)
    sent(tx)
    tx.receive(build_response(invite, 200, to_tag="srv"), 0.2)
    tx.receive(build_response(invite, 180, to_tag="srv"), 0.3)
    assert events_of(tx) == []
    assert sent(tx) == []


def test_invite_server_over_tcp_still_sends_100_trying() -> None:
    tx = InviteServerTransaction(make_request(transport="TCP"), PHONE, reliable=True)
    assert statuses(sent(tx)) == [100]


def test_non_invite_server_reports_transport_error_after_a_response() -> None:
    request = make_request("SUBSCRIBE")
    tx = NonInviteServerTransaction(request, PHONE)
    tx.respond(build_response(request, 100), 0.0)
    events_of(tx)
    tx.handle_transport_error(0.1)
    assert events_of(tx) == [TransportFailed(tx.key), TransactionTerminated(tx.key)]


@pytest.mark.parametrize(
    ("transport", "reliable"), [("UDP", False), ("tcp", True), ("TLS", True), ("WSS", True)]
)
def test_is_reliable_transport(transport: str, reliable: bool) -> None:
    assert is_reliable_transport(transport) is reliable


def test_custom_t1_scales_every_64_t1_timer() -> None:
    timers = SipTimers(t1=0.1, t2=0.4, t4=0.5, d=0.0)
    tx = NonInviteClientTransaction(make_request("OPTIONS"), PBX, 0.0, timers)
    sent(tx)
    firings = fire_until(tx, 100.0)
    assert firings[-1][0] == pytest.approx(6.4)  # F = 64*T1
    invite = make_request()
    ict = InviteClientTransaction(invite, PBX, 0.0, timers)
    ict.receive(build_response(invite, 486, to_tag="x"), 0.0)
    assert ict.get_timer() == pytest.approx(6.4)  # D = max(d, 64*T1)


def test_table_counts_retransmissions_received_and_sent() -> None:
    table = TransactionTable()
    invite = make_request()
    [event] = table.receive(invite, PHONE, 0.0)
    assert isinstance(event, RequestReceived)
    table.messages_to_send()
    table.respond(event.key, build_response(invite, 486, to_tag="t"), 0.1)
    table.messages_to_send()
    assert (table.retransmissions_received, table.retransmissions_sent) == (0, 0)
    table.receive(invite, PHONE, 0.2)  # the INVITE again: our 486 again
    assert (table.retransmissions_received, table.retransmissions_sent) == (1, 1)
    deadline = table.next_deadline()
    assert deadline is not None
    table.handle_timers(deadline)  # timer G: the 486 once more
    assert table.retransmissions_sent == 2
    assert [statuses([m]) for m, _ in table.messages_to_send()] == [[486], [486]]


def test_table_withdraws_the_queued_100_when_the_tu_answers_at_once() -> None:
    # pyVoIP 1.6 reads a 100 to its INVITE as progress and ignores the 401 behind it.
    table = TransactionTable()
    invite = make_request()
    [event] = table.receive(invite, PHONE, 0.0)
    assert isinstance(event, RequestReceived)
    table.respond(event.key, build_response(invite, 401, to_tag="srv"), 0.0)
    assert statuses([m for m, _ in table.messages_to_send()]) == [401]


def test_table_keeps_the_100_that_already_left_before_the_tu_answered() -> None:
    table = TransactionTable()
    invite = make_request()
    [event] = table.receive(invite, PHONE, 0.0)
    assert isinstance(event, RequestReceived)
    assert statuses([m for m, _ in table.messages_to_send()]) == [100]
    other = make_request(branch="z9hG4bKother")
    table.receive(other, PHONE, 0.05)  # another INVITE's 100 waits in the outbox
    table.respond(event.key, build_response(invite, 180, to_tag="srv"), 0.1)
    assert statuses([m for m, _ in table.messages_to_send()]) == [100, 180]
