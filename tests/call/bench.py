"""``CallBench``: one call core joined in memory to a caller and its callees, on fake time.

Modelled on the transaction tests' ``TransactionPair`` (and h11's ``ConnectionPair``): the bench
feeds the core events, carries out its actions the way the engine would (routing questions go to
the real routing core with a ``LineState``; the relay "opens" at once on fixed ports), and keeps
every action so tests can assert on what went to whom. Phones are built from the core's own
requests: ``answer("1001", 200)`` makes the response the 1001 leg's phone would send.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pbx.call.core import (
    AckReceived,
    AskRouting,
    CallAction,
    CallCore,
    CallEvent,
    Decided,
    DialogRequestReceived,
    ForkLeg,
    MediaReady,
    OpenMedia,
    Peer,
    Reach,
    Respond,
    SendRequest,
    SendStateless,
    Started,
    TimerFired,
    TransactionEvent,
)
from pbx.clock import FakeClock
from pbx.config.model import ConfigSnapshot, Extension, TenantId
from pbx.routing.model import CallRequest, ContactId, FromExtension, FromTrunk, LineState
from pbx.routing.router import next_step, start_call
from pbx.sip.build import build_response
from pbx.sip.message import NameAddress, SipRequest, SipResponse, SipUri
from pbx.sip.parse import parse_message
from pbx.sip.transaction import (
    ResponseReceived,
    ServerKey,
    TransactionTimedOut,
    TransactionTimer,
    client_transaction_key,
    server_transaction_key,
)
from tests.routing.builders import tokyo

CALLER = ("192.0.2.1", 5060)
CARRIER = ("127.0.0.2", 5080)
SDP_OFFER = (
    b"v=0\r\no=caller 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)


def sdp(address: str, port: int, *extra: str) -> bytes:
    lines = [
        "v=0",
        f"o=x 5 5 IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def invite(dialled: str, *, caller: str = "09011112222", body: bytes = b"") -> SipRequest:
    """The caller's INVITE (from the carrier by default)."""
    content = "Content-Type: application/sdp\r\n" if body else ""
    head = (
        f"INVITE sip:{dialled}@pbx.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-caller-1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{caller}@carrier.example>;tag=caller-tag\r\n"
        f"To: <sip:{dialled}@pbx.example>\r\n"
        "Call-ID: call-1@192.0.2.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:caller@192.0.2.1:5060>\r\n"
        f"{content}Content-Length: {len(body)}\r\n\r\n"
    )
    msg = parse_message(head.encode() + body)
    assert isinstance(msg, SipRequest)
    return msg


class Locator:
    def local_address(
        self, dest_host: str, reliable: bool, secure: bool = False
    ) -> tuple[str, int]:
        return ("203.0.113.1", 5060)


@dataclass
class Timers:
    t1: float = 0.5
    t2: float = 4.0


@dataclass
class CallBench:
    """One call: ``start()`` it, then drive the legs by label ("1001", "0312345678")."""

    snapshot: ConfigSnapshot
    request: SipRequest
    origin: FromTrunk | FromExtension
    registered: dict[str, int] = field(default_factory=dict)
    busy: tuple[str, ...] = ()
    media: bool = True  # the relay opens as soon as asked
    # The SRTP keys the media plane hands out (the built-in relay's; none: rtpengine's).
    keys: tuple[bytes, bytes] = (b"", b"")
    prompts: frozenset[str] = frozenset({"009608"})
    at: str = "2026-11-27 10:00:00"  # a Friday
    clock: FakeClock = field(init=False)
    core: CallCore = field(init=False)
    actions: list[CallAction] = field(init=False, default_factory=list)
    decisions: list[Decided] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.clock = FakeClock(monotonic=100.0, wall=tokyo(self.at).timestamp())
        tenant = next(iter(self.snapshot.tenants))
        self.a_key: ServerKey = server_transaction_key(self.request, CALLER)
        self.core = CallCore(
            "c0ffee",
            self.snapshot,
            CallRequest(self.origin, self.request.uri.user or ""),  # type: ignore[union-attr]
            tenant,
            "caller",
            self.request.uri.user or "",  # type: ignore[union-attr]
            self.a_key,
            self.request,
            Peer(CALLER, False),
            "pbx-tag",
            locator=Locator(),
            sip_timers=Timers(),
            prompts=self.prompts,
            now=self.clock.now(),
        )

    # -- driving -----------------------------------------------------------------------------
    def run(self, event: CallEvent) -> list[CallAction]:
        """Feed ``event``; answer routing and media at once; return the actions it caused."""
        self.core.handle(event, self.clock.now())
        out: list[CallAction] = []
        while (action := self.core.next_action()) is not None:
            out.append(action)
            if isinstance(action, AskRouting):
                self.core.handle(self._decide(action), self.clock.now())
            elif isinstance(action, OpenMedia) and self.media:
                ready = MediaReady(20000, 20002, 4242, keys=self.keys)
                self.core.handle(ready, self.clock.now())
        self.actions.extend(out)
        return out

    def start(self) -> list[CallAction]:
        return self.run(Started())

    def advance(self, seconds: float) -> list[CallAction]:
        """Let ``seconds`` pass, firing the core's timer each time it comes due."""
        end = self.clock.monotonic() + seconds
        out: list[CallAction] = []
        while (due := self.core.get_timer()) is not None and due <= end:
            self.clock.advance(max(0.0, due - self.clock.monotonic()))
            out += self.run(TimerFired())
        self.clock.advance(end - self.clock.monotonic())
        return out

    def _decide(self, ask: AskRouting) -> Decided:
        lines = self._lines()
        now = self.clock.now().utc
        if ask.event is None or ask.progress is None:
            decision = start_call(self.snapshot, self.core.request, now, lines)
        else:
            decision = next_step(self.snapshot, ask.progress, ask.event, now, lines)
        reach = {
            contact: Reach(
                SipUri("sip", "192.0.2.50", contact.split("-")[0], port=5060 + index),
                Peer((f"192.0.2.{50 + index}", 5060), False),
            )
            for index, contact in enumerate(c for cs in lines.registered.values() for c in cs)
        }
        decided = Decided(decision, reach)
        self.decisions.append(decided)
        return decided

    def _lines(self) -> LineState:
        tenant = TenantId(next(iter(self.snapshot.tenants)))
        registered = {
            (tenant, Extension(ext)): tuple(
                ContactId(f"{ext}-{'abcdefgh'[i]}") for i in range(count)
            )
            for ext, count in self.registered.items()
        }
        calls = {(tenant, Extension(e)): 1 for e in self.busy}
        for line in self.core.lines:
            calls[line] = calls.get(line, 0) + 1
        return LineState(registered=registered, calls=calls)

    # -- the callees ----------------------------------------------------------------------------
    def legs(self, label: str | None = None) -> list[ForkLeg]:
        return [leg for leg in self.core.legs if label is None or leg.label == label]

    def leg(self, label: str, index: int = 0) -> ForkLeg:
        return self.legs(label)[index]

    def answer(
        self,
        label: str,
        status: int,
        *,
        body: bytes = b"",
        index: int = 0,
        tag: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> list[CallAction]:
        """The leg's phone responds to our INVITE with ``status`` (and ``headers``)."""
        leg = self.leg(label, index)
        req = leg.invite.request
        contact = (NameAddress(SipUri("sip", leg.peer.address[0], label, port=5060)),)
        resp = build_response(
            req,
            status,
            to_tag=tag or f"{label}-{index}",
            contact=contact if 100 < status < 300 else (),
            body=body,
            headers=((("Content-Type", "application/sdp"),) if body else ()) + headers,
        )
        return self.run(
            TransactionEvent(leg.ref, ResponseReceived(client_transaction_key(req), resp))
        )

    def time_out(self, label: str, index: int = 0) -> list[CallAction]:
        leg = self.leg(label, index)
        key = client_transaction_key(leg.invite.request)
        return self.run(TransactionEvent(leg.ref, TransactionTimedOut(key, TransactionTimer.B)))

    # -- the caller -------------------------------------------------------------------------------
    def to_caller(self, actions: Iterable[CallAction] | None = None) -> list[int]:
        """Statuses answered to the caller's INVITE."""
        source = self.actions if actions is None else actions
        return [a.response.status for a in source if isinstance(a, Respond) and a.key == self.a_key]

    def final_to_caller(self) -> SipResponse:
        (final,) = [
            a.response
            for a in self.actions
            if isinstance(a, Respond) and a.key == self.a_key and a.response.status >= 200
        ]
        return final

    def caller_ack(self, body: bytes = b"", to_tag: str | None = None) -> list[CallAction]:
        final = self.final_to_caller()
        ack = SipRequest(
            method="ACK",
            uri=self.request.uri,
            via=self.request.via,
            from_=self.request.from_,
            to=final.to if to_tag is None else final.to.with_tag(to_tag),
            call_id=self.request.call_id,
            cseq=final.cseq.__class__(final.cseq.number, "ACK"),
            headers=(("Content-Type", "application/sdp"),) if body else (),
            body=body,
        )
        return self.run(AckReceived(ack))

    def caller_request(self, method: str, body: bytes = b"", cseq: int = 2) -> list[CallAction]:
        """An in-dialog request from the caller on its dialog with us."""
        dialog = self.core.a_dialog
        req = _in_dialog(
            method,
            dialog.id.call_id,
            dialog.id.remote_tag,
            dialog.id.local_tag,
            "192.0.2.1:5060",
            cseq,
            body,
        )
        return self.run(DialogRequestReceived(server_transaction_key(req, CALLER), req))

    def callee_request(self, method: str, body: bytes = b"", cseq: int = 1) -> list[CallAction]:
        """An in-dialog request from the answering callee on its dialog with us."""
        winner = self.core.winner
        assert winner is not None
        assert winner.dialog is not None
        d = winner.dialog.id
        req = _in_dialog(
            method, d.call_id, d.remote_tag, d.local_tag, "192.0.2.50:5060", cseq, body
        )
        return self.run(
            DialogRequestReceived(server_transaction_key(req, winner.peer.address), req)
        )


def sent(actions: Iterable[CallAction], method: str) -> list[SendRequest]:
    """The requests of ``method`` among ``actions``."""
    return [a for a in actions if isinstance(a, SendRequest) and a.request.method == method]


def stateless(actions: Iterable[CallAction], what: str | int) -> list[SendStateless]:
    """ACKs ("ACK") or retransmitted responses (by status) among ``actions``."""
    out = []
    for a in actions:
        if not isinstance(a, SendStateless):
            continue
        msg = a.message
        if (isinstance(msg, SipRequest) and msg.method == what) or (
            isinstance(msg, SipResponse) and msg.status == what
        ):
            out.append(a)
    return out


def _in_dialog(
    method: str,
    call_id: str,
    from_tag: str,
    to_tag: str,
    via_host: str,
    cseq: int,
    body: bytes,
) -> SipRequest:
    content = "Content-Type: application/sdp\r\n" if body else ""
    text = (
        f"{method} sip:pbx@203.0.113.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch=z9hG4bK-{method.lower()}-{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:someone@example>;tag={from_tag}\r\n"
        f"To: <sip:pbx@example>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:someone@192.0.2.9>\r\n"
        f"{content}Content-Length: {len(body)}\r\n\r\n"
    )
    msg = parse_message(text.encode() + body)
    assert isinstance(msg, SipRequest)
    return msg
