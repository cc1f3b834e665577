"""The call engine: a back-to-back user agent that carries out the routing core's decisions.

Adapter (asyncio). Every call has an A leg (our UAS dialog with the caller) and B legs (UAC
dialogs, one per contact or trunk call). The routing core (``pbx.routing``) decides which forks
start, which are cancelled, which timers run and the final answer; this module only turns those
decisions into SIP (RFC 3261 sections 9, 12-15):

- INVITE from a trunk's address (trusted by address) or from an extension (digest, 401);
- parallel forking: one client INVITE per registered contact (sent to the binding's source
  address, over its TCP connection when it registered over TCP) or to the trunk;
- the first 180/183 goes to the caller once (a 183's SDP relayed); the first 2xx wins, every
  other fork gets CANCEL (its 487 absorbed); a 2xx from a loser gets ACK then BYE;
- a CANCEL from the caller cancels every fork and answers 487 (9.2);
- the 2xx to the caller is retransmitted until its ACK (13.3.1.4, ``TwoXxRetransmitter``); a
  call whose ACK never comes is ended with BYE on both legs;
- in-dialog BYE, re-INVITE, UPDATE and INFO are relayed to the other leg; 481 for unknown
  dialogs (12.2.2);
- one call record per call (``pbx.store``), opened at the INVITE and closed at the end.

Each call keeps the ``ConfigSnapshot`` taken when its INVITE arrived (reloads affect new calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from pbx.clock import Instant
from pbx.config.model import ConfigSnapshot, Extension, TenantConfig, TenantId
from pbx.errors import PbxError, RemoteProtocolError
from pbx.media.player import PlaybackFinished, PromptPlayer
from pbx.media.recorder import CallRecorder
from pbx.media.relay import MediaSession, PortPool, RelayCounters, Side
from pbx.media.sdp import (
    Origin,
    SessionDescription,
    answer_sdp,
    audio_stream,
    build_sdp,
    make_origin,
    parse_sdp,
    rewrite_sdp,
)
from pbx.media.wav import TELEPHONE_MONO, WavAudio, read_wav
from pbx.numbers import classify_number
from pbx.registrar import Binding
from pbx.routing.model import (
    CallRequest,
    ContactFailed,
    ContactId,
    Decision,
    DialOut,
    Fork,
    ForkAnswered,
    ForkEnded,
    ForkFailed,
    ForkId,
    FromExtension,
    FromTrunk,
    LineKey,
    LineLookup,
    LineState,
    Outcome,
    PlayAnnouncement,
    RingExtension,
    Timer,
    TimerExpired,
    TimerKind,
)
from pbx.routing.router import next_step, start_call
from pbx.sip.build import build_cancel, build_response, new_tag
from pbx.sip.dialog import (
    AckTimedOut,
    Dialog,
    DialogId,
    DialogTable,
    OutgoingInvite,
    TwoXxAcknowledged,
    TwoXxRetransmitter,
    copy_request,
    relay_response,
)
from pbx.sip.message import Address, NameAddress, SipRequest, SipResponse, SipUri, Via
from pbx.sip.transaction import (
    ResponseReceived,
    ServerKey,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    TxEvent,
)
from pbx.sip.transport import Inbound
from pbx.store import CallRecord, Disposition

if TYPE_CHECKING:
    from pbx.service import SipService

log = structlog.get_logger("pbx.b2bua")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
SDP = "application/sdp"
PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


class CallState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class LegState(enum.Enum):
    CALLING = "calling"  # INVITE sent, nothing back yet
    PROCEEDING = "proceeding"  # a provisional response came
    ANSWERED = "answered"  # 2xx: the leg's dialog is confirmed
    ENDED = "ended"  # final failure, cancelled, or hung up


@dataclass(eq=False, slots=True)
class Peer:
    """Where one leg's requests go (the source a phone registered from, the trunk, the caller)."""

    address: Address
    reliable: bool


@dataclass(eq=False, slots=True)
class BLeg:
    """One client INVITE of a fork (one contact of an extension, or one trunk call)."""

    fork_id: ForkId
    contact: ContactId | None
    label: str  # "1001" / "0312345678" for views and logs
    invite: OutgoingInvite
    peer: Peer
    state: LegState = LegState.CALLING
    dialog: Dialog | None = None
    cancel_wanted: bool = False
    cancel_sent: bool = False
    final: int | None = None
    answer: SipResponse | None = None


@dataclass(eq=False, slots=True)
class Call:
    """One call: the A leg, its forks and B legs, and what the record will say."""

    id: str
    snapshot: ConfigSnapshot
    request: CallRequest
    tenant: TenantId | None
    caller: str
    called: str
    a_key: ServerKey
    a_invite: SipRequest
    a_dialog: Dialog
    a_peer: Peer
    started_at: float
    progress: Any = None  # CallProgress, after the first decision
    state: CallState = CallState.RINGING
    answered_at: float | None = None
    ended_at: float | None = None
    legs: list[BLeg] = field(default_factory=list)
    bindings: dict[ContactId, Binding] = field(default_factory=dict)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    winner: BLeg | None = None
    answered_by: str | None = None
    provisional_sent: bool = False
    early_media_sent: bool = False
    forwarding: list[dict[str, Any]] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    lines: list[LineKey] = field(default_factory=list)
    disposition: Disposition | None = None
    max_ring_fired: bool = False
    # 2xx responses to INVITEs (the initial one to the caller, relayed re-INVITEs to either
    # side) retransmitted until their ACK (13.3.1.4).
    retransmissions: list[_Retransmission] = field(default_factory=list)
    pending_b_ack: SipResponse | None = None
    recording_path: str | None = None
    # Media (only when the caller's INVITE carries an SDP offer): the relay session, the
    # caller's current offer, our o= line towards each leg, the body offered to B legs.
    media: MediaSession | None = None
    offer_a: SessionDescription | None = None
    origin_a: Origin | None = None
    origin_b: Origin | None = None
    b_body: bytes = b""
    media_host: str = ""
    recorder: CallRecorder | None = None
    player: PromptPlayer | None = None
    pending_offer: SessionDescription | None = None
    silent_while_ringing: set[Side] = field(default_factory=set)

    def legs_of(self, fork_id: ForkId) -> list[BLeg]:
        return [leg for leg in self.legs if leg.fork_id == fork_id]

    def record(self) -> CallRecord:
        return CallRecord(
            id=self.id,
            tenant=self.tenant,
            started_at=self.started_at,
            caller=self.caller,
            called=self.called,
            answered_at=self.answered_at,
            ended_at=self.ended_at,
            disposition=self.disposition,
            answered_by=self.answered_by,
            forwarding=tuple(self.forwarding),
            trace=tuple(self.trace),
            recording_path=self.recording_path,
        )


class _Retransmission:
    """One 2xx being retransmitted, with its timer; ``initial``: the answer to the caller."""

    __slots__ = ("initial", "retrans", "timer")

    def __init__(self, retrans: TwoXxRetransmitter, initial: bool) -> None:
        self.retrans = retrans
        self.initial = initial
        self.timer: asyncio.TimerHandle | None = None


class _Side:
    """Which leg of which call a dialog is: the A leg (``leg`` None) or a B leg."""

    __slots__ = ("call", "leg")

    def __init__(self, call: Call, leg: BLeg | None) -> None:
        self.call = call
        self.leg = leg


class CallEngine:
    """The ``CallHandler`` of ``SipService``: runs every call."""

    def __init__(self, service: SipService) -> None:
        self.service = service
        self.calls: dict[str, Call] = {}
        self.by_invite: dict[ServerKey, Call] = {}
        self.dialogs = DialogTable()
        self.sides: dict[DialogId, _Side] = {}
        # Calls by the caller's Call-ID and From tag, for an ACK whose To tag is not ours.
        self.by_caller: dict[tuple[str, str], Call] = {}
        self.line_calls: Counter[LineKey] = Counter()
        self._pool: PortPool | None = None
        self._prompt: WavAudio | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        service.metrics.gauge(
            "pbx_media_ports_in_use",
            "RTP ports held by media sessions (RTCP ports not counted)",
            lambda: self._pool.in_use if self._pool is not None else 0,
        )
        self.m_calls = service.metrics.counter("pbx_calls_total", "Calls ended, by disposition")
        # RTP/RTCP packet totals of every media session, live or closed, summed per scrape.
        self.relay_counters = RelayCounters()
        self.relay_counters.export(service.metrics)
        service.metrics.gauge("pbx_calls_active", "Calls in progress", lambda: len(self.calls))
        # Graceful shutdown (``drain``): new calls are refused while calls in progress finish.
        self.draining = False
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        self._byes_pending = 0
        self._byes_answered = asyncio.Event()
        self._byes_answered.set()

    # -- clock and addresses ---------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _local(self, dest_host: str, reliable: bool) -> tuple[str, int]:
        """Our address and port for Via/Contact towards ``dest_host``."""
        transport = self.service.transport
        wanted = "TCP" if reliable else "UDP"
        host, port = "127.0.0.1", 5060
        if transport is not None:
            for listen in transport.listening:
                if listen.transport == wanted:
                    host, port = listen.host, listen.port
                    break
        advertise = self.service.holder.current.server.sip.advertise
        if advertise:
            host = advertise
        elif host in ("0.0.0.0", "::", "") and transport is not None:
            host = transport.local_address_towards(dest_host)
        return host, port

    def _via(self, peer: Peer) -> Via:
        host, port = self._local(peer.address[0], peer.reliable)
        return Via("TCP" if peer.reliable else "UDP", host, port, (("rport", None),))

    def _contact(self, peer: Peer) -> NameAddress:
        host, port = self._local(peer.address[0], peer.reliable)
        params: tuple[tuple[str, str | None], ...] = (
            (("transport", "tcp"),) if peer.reliable else ()
        )
        return NameAddress(SipUri("sip", host, "pbx", port=port, params=params))

    # -- CallHandler -------------------------------------------------------------------------
    def on_request(
        self, key: ServerKey, request: SipRequest, inbound: Inbound, now: Instant
    ) -> None:
        try:
            if request.to.tag is None and request.method == "INVITE":
                self._new_call(key, request, inbound)
            elif request.to.tag is None:
                # 12.2.2 does not apply; outside a dialog we only take INVITE (and OPTIONS,
                # REGISTER in the service).
                self._respond(key, request, 481 if request.method == "BYE" else 405)
            else:
                self._in_dialog(key, request, inbound)
        except RemoteProtocolError as exc:
            log.info("call_request_refused", method=request.method, error=str(exc))
            self._respond(key, request, exc.status_hint or 400)

    def on_ack(self, request: SipRequest, inbound: Inbound, now: Instant) -> None:
        dialog_id = DialogId.of_request(request)
        side = self.sides.get(dialog_id) if dialog_id is not None else None
        if side is None:
            # Liberal in what we accept: pyVoIP 1.6 acknowledges a 2xx with a To tag of its own
            # making. The caller's Call-ID, From tag and CSeq still name our 2xx.
            call = self.by_caller.get((request.call_id, request.from_.tag or ""))
            if call is None:
                return
            log.debug("ack_with_foreign_to_tag", call=call.id, to_tag=request.to.tag)
            side = _Side(call, None)
            request = replace(request, to=request.to.with_tag(call.a_dialog.id.local_tag))
        call = side.call
        for item in list(call.retransmissions):
            if not item.retrans.receive_ack(request, self._now()):
                continue
            self._drain_retransmitter(call, item)
            if item.initial and call.pending_b_ack is not None and call.winner is not None:
                self._ack_b(call, call.winner, call.pending_b_ack, request.body, request)
                call.pending_b_ack = None
            return
        # Otherwise a repeated ACK: the other side was acknowledged by us already.

    def on_cancel(self, invite_key: ServerKey, cancel: SipRequest, now: Instant) -> None:
        call = self.by_invite.get(invite_key)
        if call is None or call.state is not CallState.RINGING:
            return
        call.trace.append("the caller cancelled")
        log.info("call_cancelled", call=call.id)
        self._fail_call(call, 487, "cancelled")

    # -- new calls ---------------------------------------------------------------------------
    def _new_call(self, key: ServerKey, req: SipRequest, inbound: Inbound) -> None:
        if self.draining:
            # RFC 3261 21.5.4: 503 with Retry-After tells callers and carriers to try later.
            response = build_response(req, 503, to_tag=new_tag(), headers=(("Retry-After", "60"),))
            self.service.respond(key, response)
            return
        snapshot = self.service.holder.current  # taken once: the call keeps it
        if req.max_forwards is not None and req.max_forwards <= 0:
            self._respond(key, req, 483)
            return
        if not req.contact:
            self._respond(key, req, 400, "Missing Contact")
            return
        dialled = _dialled(req)
        if dialled is None:
            self._respond(key, req, 404)
            return
        trunk = snapshot.trunk_for_host(inbound.source[0])
        tenant: TenantConfig | None
        origin: FromTrunk | FromExtension
        if trunk is not None:
            caller = _user_of(req.from_) or None
            origin = FromTrunk(trunk.name, caller, prior_hops=len(req.header_values("Diversion")))
            tenant = snapshot.tenant_for_number(classify_number(dialled).digits)
            caller_text = caller or "anonymous"
        else:
            tenant = _tenant_of(snapshot, req)
            if tenant is None:
                self._respond(key, req, 404)
                return
            username = self.service.authenticate(key, req, inbound, tenant, time.time())
            if username is None:
                return  # 401 sent
            from_user = _user_of(req.from_)
            if username != from_user or Extension(username) not in tenant.users:
                log.warning("call_identity_mismatch", username=username, from_user=from_user)
                self._respond(key, req, 403)
                return
            origin = FromExtension(tenant.id, Extension(username))
            caller_text = username
        peer = Peer(inbound.source, inbound.transport == "TCP")
        a_dialog = Dialog.from_invite_as_uas(
            req, new_tag(), self._contact(peer), local_via=self._via(peer)
        )
        call = Call(
            id=secrets.token_hex(8),
            snapshot=snapshot,
            request=CallRequest(origin, dialled),
            tenant=tenant.id if tenant is not None else None,
            caller=caller_text,
            called=dialled,
            a_key=key,
            a_invite=req,
            a_dialog=a_dialog,
            a_peer=peer,
            started_at=time.time(),
        )
        self.calls[call.id] = call
        self._no_calls.clear()
        self.by_invite[key] = call
        self.by_caller[(req.call_id, req.from_.tag or "")] = call
        self._index(a_dialog, _Side(call, None))
        if isinstance(origin, FromExtension):
            self._take_line(call, (origin.tenant, origin.extension))
        log.debug(
            "call_started", call=call.id, caller=call.caller, called=dialled, tenant=call.tenant
        )
        self.service.store.record_call(call.record())
        if req.body:
            self._spawn(self._start_with_media(call, tenant))
        else:
            self._route(call, tenant)

    def _route(self, call: Call, tenant: TenantConfig | None) -> None:
        state = self._line_state(call, tenant)
        decision = start_call(call.snapshot, call.request, _utcnow(), state)
        if decision.progress.tenant is not None:
            call.tenant = decision.progress.tenant
        self._carry_out(call, decision)

    # -- media (RTP anchored on our relay) -------------------------------------------------
    async def _start_with_media(self, call: Call, tenant: TenantConfig | None) -> None:
        """Open the relay for an INVITE with an SDP offer, then route the call."""
        try:
            try:
                offer = parse_sdp(call.a_invite.body)
            except RemoteProtocolError as exc:
                call.trace.append(f"unreadable SDP offer: {exc}")
                self._fail_call(call, 400, "failed")
                return
            stream = audio_stream(offer)
            if stream is None or not stream.active:
                call.trace.append("no PCMU/PCMA audio in the offer -> 488")
                self._fail_call(call, 488, "failed")
                return
            settings = call.snapshot.server.media
            if self._pool is None:
                self._pool = PortPool(settings.rtp_port_min, settings.rtp_port_max)
            host = self._local(call.a_peer.address[0], call.a_peer.reliable)[0]
            try:
                media = await MediaSession.open(
                    self._pool,
                    self._bind_host(),
                    inactivity_seconds=settings.inactivity_seconds,
                    on_inactive=lambda side: self._on_inactive(call, side),
                    counters=self.relay_counters,
                )
            except (PbxError, OSError) as exc:
                log.warning("media_unavailable", call=call.id, error=str(exc))
                call.trace.append(f"no media ports: {exc} -> 503")
                self._fail_call(call, 503, "failed")
                return
            if call.state is CallState.ENDED:
                media.close()
                return
            call.media = media
            call.media_host = host
            call.offer_a = offer
            session_id = secrets.randbelow(2**31)
            call.origin_a = make_origin(session_id, host)
            call.origin_b = make_origin(session_id + 1, host)
            media.set_remote(Side.A, stream.address, stream.port, stream.direction)
            call.b_body = build_sdp(
                rewrite_sdp(offer, address=host, port=media.b.port, origin=call.origin_b)
            )
            self._route(call, tenant)
        except Exception:  # the per-call boundary
            log.exception("call_start_failed", call=call.id)
            if call.state is CallState.RINGING:
                self._fail_call(call, 500, "failed")
        finally:
            self.service.flush()

    def _bind_host(self) -> str:
        transport = self.service.transport
        if transport is not None:
            for listen in transport.listening:
                if listen.transport == "UDP":
                    return listen.host
        return "0.0.0.0"

    def _answer_for_a(self, call: Call, body: bytes) -> bytes | None:
        """A B leg's SDP answer rewritten for the caller (relay's A port); None if unusable."""
        media, offer, origin = call.media, call.offer_a, call.origin_a
        if media is None or offer is None or origin is None or not body:
            return None
        try:
            answer = parse_sdp(body)
        except RemoteProtocolError:
            return None
        stream = audio_stream(answer)
        if stream is not None:
            media.set_remote(Side.B, stream.address, stream.port, stream.direction)
        return build_sdp(
            rewrite_sdp(
                answer, address=call.media_host, port=media.a.port, origin=origin, offer=offer
            )
        )

    def _on_inactive(self, call: Call, side: Side) -> None:
        if call.state is CallState.RINGING:
            # The relay reports a silent party once; silence while ringing is normal, so it
            # is checked again inactivity_seconds after the answer (``_arm_silence_check``).
            call.silent_while_ringing.add(side)
            return
        if call.state is not CallState.ANSWERED:
            return
        seconds = call.snapshot.server.media.inactivity_seconds
        who = "caller" if side is Side.A else "callee"
        call.trace.append(f"no RTP from the {who} for {seconds}s: hang up")
        log.info("media_inactive", call=call.id, side=side.value)
        self._hang_up(call, None, "answered")
        self.service.flush()

    def _arm_silence_check(self, call: Call) -> None:
        media = call.media
        if media is None or not call.silent_while_ringing:
            return
        counts = {side: _packets_from(media, side) for side in call.silent_while_ringing}
        seconds = call.snapshot.server.media.inactivity_seconds
        call.timers.append(self.loop.call_later(seconds, self._silence_check, call, counts))

    def _silence_check(self, call: Call, counts: dict[Side, int]) -> None:
        media = call.media
        if media is None or call.state is not CallState.ANSWERED:
            return
        for side, count in counts.items():
            if _packets_from(media, side) == count:
                self._on_inactive(call, side)
                return

    async def _start_recording(self, call: Call) -> None:
        media = call.media
        if media is None:
            return
        directory = call.snapshot.server.storage.data_dir / "recordings"
        try:
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
            recorder = await CallRecorder.start(directory, f"{call.id}.wav", media)
        except OSError as exc:
            log.warning("recording_failed", call=call.id, error=str(exc))
            call.recording_path = None
            return
        if call.state is CallState.ENDED:
            await recorder.close()
            return
        call.recorder = recorder

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _line_state(self, call: Call, tenant: TenantConfig | None) -> LineLookup:
        if tenant is None:
            return LineState()
        return _LiveLines(self, call, tenant, time.time())

    # -- decisions -----------------------------------------------------------------------------
    def _ask(self, call: Call, event: ForkEnded) -> Decision | None:
        """Routing's answer to a fork ending, carried out."""
        if call.progress is None or call.state is CallState.ENDED:
            return None
        tenant = call.snapshot.tenants.get(call.tenant) if call.tenant else None
        decision = next_step(
            call.snapshot, call.progress, event, _utcnow(), self._line_state(call, tenant)
        )
        self._carry_out(call, decision)
        return decision

    def _carry_out(self, call: Call, decision: Decision) -> None:
        call.progress = decision.progress
        call.trace.extend(decision.trace)
        for line in decision.trace:
            log.debug("routing", call=call.id, trace=line)
        for fork_id in decision.cancel:
            self._cancel_fork(call, fork_id)
        if decision.final is not None and call.state is CallState.RINGING:
            self._fail_call(call, decision.final, _disposition(call, decision.final))
            return
        for fork in decision.start:
            self._start_fork(call, fork)
        for timer in decision.timers:
            handle = self.loop.call_later(timer.seconds, self._on_timer, call, timer)
            call.timers.append(handle)

    def _on_timer(self, call: Call, timer: Timer) -> None:
        try:
            if call.state is not CallState.RINGING:
                return
            if timer.kind is TimerKind.MAX_RING:
                call.max_ring_fired = True
            self._ask(call, TimerExpired(timer))
        except Exception:  # the per-call boundary
            log.exception("call_timer_failed", call=call.id)
        self.service.flush()

    # -- forks -----------------------------------------------------------------------------
    def _start_fork(self, call: Call, fork: Fork) -> None:
        if getattr(fork, "diversions", ()):
            last = fork.diversions[0]  # type: ignore[union-attr]
            call.forwarding.append(
                {
                    "from": last.extension or last.number,
                    "reason": last.reason,
                    "to": _fork_label(fork),
                }
            )
        if isinstance(fork, RingExtension):
            for contact in fork.contacts:
                binding = call.bindings.get(contact)
                if binding is None:
                    self._later(self._leg_unreachable, call, fork.fork_id, contact)
                    continue
                self._invite_contact(call, fork, contact, binding)
        elif isinstance(fork, DialOut):
            self._dial_out(call, fork)
        elif isinstance(fork, PlayAnnouncement):
            if call.media is None:
                # Without an SDP offer (no media anchored) the announcement cannot play.
                self._later(self._announcement_failed, call, fork.fork_id)
            else:
                self._later(self._play_announcement, call, fork)

    def _later(self, func: Callable[..., object], *args: Any) -> None:
        def run() -> None:
            try:
                func(*args)
            except Exception:
                log.exception("call_step_failed")
            self.service.flush()

        self.loop.call_soon(run)

    def _leg_unreachable(self, call: Call, fork_id: ForkId, contact: ContactId) -> None:
        self._ask(call, ContactFailed(fork_id, contact, 480))

    def _announcement_failed(self, call: Call, fork_id: ForkId) -> None:
        call.trace.append("009608: no media to play the announcement")
        self._ask(call, ForkFailed(fork_id, 480))

    def _play_announcement(self, call: Call, fork: PlayAnnouncement) -> None:
        """Answer the caller ourselves and stream the prompt; BYE when it has played."""
        media, offer, origin = call.media, call.offer_a, call.origin_a
        if call.state is not CallState.RINGING or media is None or offer is None or not origin:
            return
        try:
            if self._prompt is None:
                self._prompt = read_wav(PROMPTS / f"{fork.prompt}.wav", expect=TELEPHONE_MONO)
            prompt = self._prompt
        except (OSError, PbxError) as exc:
            log.warning("prompt_unavailable", call=call.id, error=str(exc))
            self._announcement_failed(call, fork.fork_id)
            return
        answer = answer_sdp(offer, address=call.media_host, port=media.a.port, origin=origin)
        stream = audio_stream(answer)
        codec = stream.codec if stream is not None else None
        if codec is None:
            self._announcement_failed(call, fork.fork_id)
            return
        call.state = CallState.ANSWERED
        call.answered_at = time.time()
        call.answered_by = fork.prompt
        self._ask(call, ForkAnswered(fork.fork_id, None))
        self._cancel_timers(call)
        self._arm_silence_check(call)
        response = call.a_dialog.respond(
            call.a_invite, 200, body=build_sdp(answer), content_type=SDP
        )
        self.service.respond(call.a_key, response)
        self.by_invite.pop(call.a_key, None)
        self._start_retransmitter(call, response, call.a_peer, initial=True)

        def done(result: PlaybackFinished) -> None:
            if call.state is CallState.ANSWERED:
                call.trace.append(f"{fork.prompt} played ({result.packets_sent} packets): hang up")
                self._hang_up(call, None, "answered")
                self.service.flush()

        player = PromptPlayer.from_wav(prompt, codec, media.a.send_rtp, on_done=done)
        call.player = player
        player.start()

    def _b_body(self, call: Call) -> tuple[bytes, str | None]:
        if call.media is not None:
            return call.b_body, SDP
        a = call.a_invite
        return a.body, a.header("Content-Type") if a.body else None

    def _invite_contact(
        self, call: Call, fork: RingExtension, contact: ContactId, binding: Binding
    ) -> None:
        tenant = call.snapshot.tenants[fork.tenant]
        peer = self._peer_of(binding)
        number = fork.caller.number or "anonymous"
        display = f'"{fork.caller.name}"' if fork.caller.name else None
        from_ = NameAddress(SipUri("sip", tenant.domain, number), display)
        to = NameAddress(SipUri("sip", tenant.domain, fork.extension))
        headers = [("Allow", ALLOW), *_diversion_headers(fork.diversions, tenant.domain)]
        body, content_type = self._b_body(call)
        invite = OutgoingInvite.build(
            request_uri=binding.uri,
            from_=from_,
            to=to,
            contact=self._contact(peer),
            via=self._via(peer),
            body=body,
            content_type=content_type,
            headers=headers,
            max_forwards=_max_forwards(call.a_invite),
        )
        leg = BLeg(fork.fork_id, contact, fork.extension, invite, peer)
        self._send_invite(call, leg)

    def _peer_of(self, binding: Binding) -> Peer:
        """Where requests to a registered contact go: its source address (symmetric, NAT), over
        its TCP connection while that is open; a TCP contact whose connection is gone is
        reached by a new connection to its Contact address."""
        if binding.transport != "TCP":
            return Peer(binding.source, False)
        transport = self.service.transport
        alive = (
            transport is not None
            and binding.connection_id is not None
            and binding.connection_id.isdigit()
            and transport.connection_alive(int(binding.connection_id))
        )
        uri = binding.uri
        if alive or not isinstance(uri, SipUri):
            return Peer(binding.source, True)
        return Peer((uri.host.strip("[]"), uri.port or 5060), True)

    def _dial_out(self, call: Call, fork: DialOut) -> None:
        trunk = next((t for t in call.snapshot.server.trunks if t.name == fork.trunk), None)
        if trunk is None:
            self._later(self._ask, call, ForkFailed(fork.fork_id, 503))
            return
        peer = Peer((trunk.host, trunk.port), False)
        host, _ = self._local(trunk.host, False)
        headers: list[tuple[str, str]] = [("Allow", ALLOW)]
        if fork.caller_id:
            from_ = NameAddress(SipUri("sip", host, fork.caller_id))
            headers.append(("P-Asserted-Identity", f"<sip:{fork.caller_id}@{host}>"))
        else:
            from_ = NameAddress(SipUri("sip", "anonymous.invalid", "anonymous"), '"Anonymous"')
            headers.append(("Privacy", "id"))
        headers.extend(_diversion_headers(fork.diversions, host))
        body, content_type = self._b_body(call)
        uri = SipUri("sip", trunk.host, fork.number, port=trunk.port)
        invite = OutgoingInvite.build(
            request_uri=uri,
            from_=from_,
            to=NameAddress(SipUri("sip", trunk.host, fork.number)),
            contact=self._contact(peer),
            via=self._via(peer),
            body=body,
            content_type=content_type,
            headers=headers,
            max_forwards=_max_forwards(call.a_invite),
        )
        leg = BLeg(fork.fork_id, None, fork.number, invite, peer)
        self._send_invite(call, leg)

    def _send_invite(self, call: Call, leg: BLeg) -> None:
        call.legs.append(leg)
        log.debug("fork_invite", call=call.id, fork=leg.fork_id, to=leg.label)

        def on_event(event: TxEvent) -> None:
            try:
                self._on_leg_event(call, leg, event)
            except Exception:  # the per-call boundary
                log.exception("leg_event_failed", call=call.id, leg=leg.label)

        self.service.send_request(
            leg.invite.request, leg.peer.address, on_event, reliable=leg.peer.reliable
        )

    def _cancel_fork(self, call: Call, fork_id: ForkId) -> None:
        for leg in call.legs_of(fork_id):
            self._cancel_leg(leg)

    def _cancel_leg(self, leg: BLeg) -> None:
        if leg.state in (LegState.ENDED, LegState.ANSWERED) or leg.cancel_wanted:
            return
        leg.cancel_wanted = True
        if leg.state is LegState.PROCEEDING:
            self._send_cancel(leg)

    def _send_cancel(self, leg: BLeg) -> None:
        # 9.1: "a CANCEL request SHOULD NOT be sent to cancel an INVITE until a provisional
        # response is received": a leg with nothing back yet is cancelled at its first 1xx.
        if leg.cancel_sent:
            return
        leg.cancel_sent = True
        self.service.send_request(
            build_cancel(leg.invite.request), leg.peer.address, _ignore, reliable=leg.peer.reliable
        )

    # -- responses on B legs -----------------------------------------------------------------
    def _on_leg_event(self, call: Call, leg: BLeg, event: TxEvent) -> None:
        if isinstance(event, ResponseReceived):
            self._on_leg_response(call, leg, event.response)
        elif isinstance(event, TransactionTimedOut | TransportFailed) and leg.state in (
            LegState.CALLING,
            LegState.PROCEEDING,
        ):
            status = 408 if isinstance(event, TransactionTimedOut) else 503
            self._leg_failed(call, leg, status)

    def _on_leg_response(self, call: Call, leg: BLeg, resp: SipResponse) -> None:
        status = resp.status
        if resp.cseq.method != "INVITE":
            return
        dialog = leg.invite.receive_response(resp) if status != 100 else None
        if status < 200:
            if leg.state is LegState.CALLING:
                leg.state = LegState.PROCEEDING
            if leg.cancel_wanted:
                self._send_cancel(leg)
                return
            if dialog is not None and leg.dialog is None:
                leg.dialog = dialog
            if call.state is CallState.RINGING and status in (180, 183):
                self._relay_provisional(call, resp)
            return
        if status < 300:
            self._on_leg_answered(call, leg, resp, dialog)
            return
        if leg.state in (LegState.ENDED, LegState.ANSWERED):
            return
        self._leg_failed(call, leg, status)

    def _relay_provisional(self, call: Call, resp: SipResponse) -> None:
        has_sdp = bool(resp.body)
        if has_sdp and call.early_media_sent:
            return
        if not has_sdp and call.provisional_sent:
            return
        body = resp.body
        if has_sdp and call.media is not None:
            rewritten = self._answer_for_a(call, resp.body)
            if rewritten is None:
                has_sdp, body = False, b""
                if call.provisional_sent:
                    return
            else:
                body = rewritten
        call.provisional_sent = True
        call.early_media_sent = call.early_media_sent or has_sdp
        out = relay_response(resp, call.a_invite, call.a_dialog, body=body)
        self.service.respond(call.a_key, out)

    def _leg_failed(self, call: Call, leg: BLeg, status: int) -> None:
        leg.state = LegState.ENDED
        leg.final = status
        if leg.cancel_wanted or call.state is not CallState.RINGING:
            return  # the 487 of a leg we cancelled: absorbed
        if leg.contact is not None:
            self._ask(call, ContactFailed(leg.fork_id, leg.contact, status))
        else:
            self._ask(call, ForkFailed(leg.fork_id, status))

    def _on_leg_answered(
        self, call: Call, leg: BLeg, resp: SipResponse, dialog: Dialog | None
    ) -> None:
        if dialog is None:
            return
        if leg.state is LegState.ANSWERED:
            # A retransmitted 2xx: our ACK was lost (13.2.2.4: send it again).
            if leg is call.winner and call.pending_b_ack is not None:
                return  # the ACK waits for the caller's (late offer)
            self._send_stateless(dialog.ack_for(resp), leg.peer)
            return
        leg.state = LegState.ANSWERED
        leg.dialog = dialog
        leg.answer = resp
        if call.state is not CallState.RINGING or leg.cancel_wanted:
            # Lost the race: acknowledge and hang up this one (RFC 3261 13.2.2.4).
            self._send_stateless(dialog.ack_for(resp), leg.peer)
            bye = dialog.new_request("BYE")
            self.service.send_request(bye, leg.peer.address, _ignore, reliable=leg.peer.reliable)
            leg.state = LegState.ENDED
            return
        # The winner.
        call.state = CallState.ANSWERED
        call.winner = leg
        call.answered_at = time.time()
        call.answered_by = leg.label
        self._index(dialog, _Side(call, leg))
        fork = call.progress.live_fork(leg.fork_id) if call.progress else None
        if fork is not None and isinstance(fork.fork, RingExtension):
            self._take_line(call, (fork.fork.tenant, fork.fork.extension))
        for other in call.legs:
            if other is not leg and other.fork_id == leg.fork_id:
                self._cancel_leg(other)
        decision = self._ask(call, ForkAnswered(leg.fork_id, leg.contact))
        if decision is not None and decision.record and call.media is not None:
            call.recording_path = str(
                call.snapshot.server.storage.data_dir / "recordings" / f"{call.id}.wav"
            )
            self._spawn(self._start_recording(call))
        for other in call.legs:
            if other is not leg:
                self._cancel_leg(other)
        self._cancel_timers(call)
        self._arm_silence_check(call)
        # Late offer (INVITE without SDP, offer in the 2xx): B's ACK carries the caller's
        # answer, so it waits for the caller's ACK.
        if not call.a_invite.body and resp.body:
            call.pending_b_ack = resp
        else:
            self._send_stateless(dialog.ack_for(resp), leg.peer)
        body = self._answer_for_a(call, resp.body) if call.media is not None else None
        out = relay_response(resp, call.a_invite, call.a_dialog, body=body)
        self.service.respond(call.a_key, out)
        self.by_invite.pop(call.a_key, None)
        self._start_retransmitter(call, out, call.a_peer, initial=True)
        log.debug("call_answered", call=call.id, by=leg.label)

    def _ack_b(
        self, call: Call, leg: BLeg, resp: SipResponse, body: bytes, a_ack: SipRequest
    ) -> None:
        dialog = leg.dialog
        if dialog is None:
            return
        content_type = a_ack.header("Content-Type") if body else None
        ack = dialog.ack_for(resp, body=body, content_type=content_type)
        self._send_stateless(ack, leg.peer)

    def _send_stateless(self, msg: SipRequest | SipResponse, peer: Peer) -> None:
        self.service.send_stateless(msg, peer.address)

    # -- 2xx retransmission to the caller (13.3.1.4) -------------------------------------------
    def _start_retransmitter(
        self, call: Call, response: SipResponse, peer: Peer, *, initial: bool
    ) -> None:
        retrans = TwoXxRetransmitter(response, peer.address, self._now(), self.service.table.timers)
        item = _Retransmission(retrans, initial)
        call.retransmissions.append(item)
        self._arm_retransmitter(call, item)

    def _arm_retransmitter(self, call: Call, item: _Retransmission) -> None:
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        deadline = item.retrans.get_timer()
        if deadline is None:
            if item in call.retransmissions:
                call.retransmissions.remove(item)
            return
        item.timer = self.loop.call_at(deadline, self._on_retransmit, call, item)

    def _on_retransmit(self, call: Call, item: _Retransmission) -> None:
        item.timer = None
        try:
            item.retrans.handle_timer(self._now())
            for msg, destination in item.retrans.messages_to_send():
                self.service.send_stateless(msg, destination)
            self._drain_retransmitter(call, item)
        except Exception:
            log.exception("retransmit_failed", call=call.id)
        self.service.flush()

    def _drain_retransmitter(self, call: Call, item: _Retransmission) -> None:
        while (event := item.retrans.next_event()) is not None:
            if isinstance(event, AckTimedOut):
                which = "the 2xx" if item.initial else "a re-INVITE's 2xx"
                call.trace.append(f"no ACK for {which}: hang up both legs")
                log.warning("call_ack_timeout", call=call.id, initial=item.initial)
                self._hang_up(call, None, "failed" if item.initial else "answered")
            elif isinstance(event, TwoXxAcknowledged):
                pass
        self._arm_retransmitter(call, item)

    # -- in-dialog requests (12.2.2) -----------------------------------------------------------
    def _in_dialog(self, key: ServerKey, req: SipRequest, inbound: Inbound) -> None:
        dialog = self.dialogs.match_request(req)
        side = self.sides.get(dialog.id) if dialog is not None else None
        if dialog is None or side is None:
            self._respond(key, req, 481)
            return
        refusal = dialog.receive_request(req)
        if refusal is not None:
            self.service.respond(key, refusal)
            return
        call = side.call
        if req.method == "BYE" and call.state is CallState.RINGING:
            # A caller's BYE on the early dialog: taken as a CANCEL (the INVITE gets 487).
            self.service.respond(key, build_response(req, 200))
            call.trace.append("the caller hung up while ringing")
            self._fail_call(call, 487, "cancelled")
            return
        if req.method == "BYE":
            self.service.respond(key, dialog.respond(req, 200))
            call.trace.append(f"{'caller' if side.leg is None else side.leg.label} hung up")
            self._hang_up(call, dialog, "answered")
            return
        other, peer = self._other(call, side)
        if other is None or peer is None or other.is_terminated:
            self.service.respond(key, dialog.respond(req, 481))
            return
        if req.method == "INVITE" and other.invite_in_progress:
            self.service.respond(key, dialog.respond(req, 491))
            return
        offer = self._offer_across(call, side, req)
        out = copy_request(req, other, body=offer[0] if offer is not None else None)
        relayed = {"done": False}

        def on_event(event: TxEvent) -> None:
            try:
                self._on_relayed_event(call, key, req, dialog, other, peer, out, event, relayed)
            except Exception:
                log.exception("relay_failed", call=call.id, method=req.method)

        self.service.send_request(out, peer.address, on_event, reliable=peer.reliable)

    def _on_relayed_event(
        self,
        call: Call,
        key: ServerKey,
        req: SipRequest,
        dialog: Dialog,
        other: Dialog,
        peer: Peer,
        out: SipRequest,
        event: TxEvent,
        relayed: dict[str, bool],
    ) -> None:
        if isinstance(event, ResponseReceived):
            resp = event.response
            if resp.status < 200:
                return
            other.receive_response(resp)
            if out.method == "INVITE" and resp.status < 300:
                self._send_stateless(other.ack_for(resp), peer)
            if relayed["done"]:
                return
            relayed["done"] = True
            body = None
            if resp.status < 300 and resp.body and call.media is not None:
                body = self._answer_across(call, dialog is call.a_dialog, resp.body)
            answer = relay_response(resp, req, dialog, body=body)
            self.service.respond(key, answer)
            if out.method == "INVITE" and resp.status < 300:
                winner = call.winner
                requester = (
                    call.a_peer
                    if dialog is call.a_dialog
                    else (winner.peer if winner is not None else None)
                )
                if requester is not None:
                    self._start_retransmitter(call, answer, requester, initial=False)
        elif isinstance(event, TransactionTimedOut | TransportFailed) and not relayed["done"]:
            relayed["done"] = True
            self.service.respond(key, dialog.respond(req, 408))

    def _offer_across(
        self, call: Call, side: _Side, req: SipRequest
    ) -> tuple[bytes, SessionDescription] | None:
        """A mid-call SDP offer (re-INVITE, UPDATE) rewritten for the other leg."""
        media = call.media
        if media is None or not req.body or req.method not in ("INVITE", "UPDATE"):
            return None
        try:
            offer = parse_sdp(req.body)
        except RemoteProtocolError:
            return None
        stream = audio_stream(offer)
        from_a = side.leg is None
        if stream is not None:
            media.set_remote(
                Side.A if from_a else Side.B, stream.address, stream.port, stream.direction
            )
        if from_a:
            call.origin_b = (call.origin_b or make_origin(1, call.media_host)).next_version()
            origin, port = call.origin_b, media.b.port
        else:
            call.origin_a = (call.origin_a or make_origin(1, call.media_host)).next_version()
            origin, port = call.origin_a, media.a.port
        body = build_sdp(rewrite_sdp(offer, address=call.media_host, port=port, origin=origin))
        call.pending_offer = offer
        return body, offer

    def _answer_across(self, call: Call, to_a: bool, body: bytes) -> bytes | None:
        """The answer to a relayed mid-call offer, rewritten for the leg that offered."""
        media, offer = call.media, call.pending_offer
        if media is None or offer is None:
            return None
        try:
            answer = parse_sdp(body)
        except RemoteProtocolError:
            return None
        stream = audio_stream(answer)
        if stream is not None:
            media.set_remote(
                Side.B if to_a else Side.A, stream.address, stream.port, stream.direction
            )
        if to_a:
            call.origin_a = (call.origin_a or make_origin(1, call.media_host)).next_version()
            origin, port = call.origin_a, media.a.port
        else:
            call.origin_b = (call.origin_b or make_origin(1, call.media_host)).next_version()
            origin, port = call.origin_b, media.b.port
        return build_sdp(
            rewrite_sdp(answer, address=call.media_host, port=port, origin=origin, offer=offer)
        )

    def _other(self, call: Call, side: _Side) -> tuple[Dialog | None, Peer | None]:
        if side.leg is None:
            winner = call.winner
            return (winner.dialog, winner.peer) if winner is not None else (None, None)
        return call.a_dialog, call.a_peer

    # -- ending calls --------------------------------------------------------------------------
    def _fail_call(self, call: Call, status: int, disposition: Disposition) -> None:
        """End an unanswered call: cancel every fork, answer the caller ``status``."""
        for leg in call.legs:
            self._cancel_leg(leg)
        if call.state is CallState.RINGING:
            self.service.respond(call.a_key, call.a_dialog.respond(call.a_invite, status))
        self._end(call, disposition)

    def _hang_up(self, call: Call, by: Dialog | None, disposition: Disposition) -> None:
        """End an answered call: BYE to every leg except ``by`` (which hung up)."""
        winner = call.winner
        for dialog, peer in (
            (call.a_dialog, call.a_peer),
            (winner.dialog if winner else None, winner.peer if winner else None),
        ):
            if dialog is None or peer is None or dialog is by or dialog.is_terminated:
                continue
            if dialog.is_early:
                continue
            bye = dialog.new_request("BYE")
            self._byes_pending += 1
            self._byes_answered.clear()
            self.service.send_request(bye, peer.address, self._bye_done, reliable=peer.reliable)
        if winner is not None:
            winner.state = LegState.ENDED
        self._end(call, disposition)

    def _bye_done(self, event: TxEvent) -> None:
        """A BYE's client transaction ended (answered, timed out or failed)."""
        if isinstance(event, TransactionTerminated):
            self._byes_pending -= 1
            if self._byes_pending <= 0:
                self._byes_pending = 0
                self._byes_answered.set()

    def _end(self, call: Call, disposition: Disposition) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.ended_at = time.time()
        call.disposition = disposition
        self._cancel_timers(call)
        for item in call.retransmissions:
            if item.timer is not None:
                item.timer.cancel()
        call.retransmissions.clear()
        self._release_media(call)
        for line in call.lines:
            self.line_calls[line] -= 1
            if self.line_calls[line] <= 0:
                del self.line_calls[line]
        call.lines.clear()
        self.calls.pop(call.id, None)
        if not self.calls:
            self._no_calls.set()
        self.by_invite.pop(call.a_key, None)
        # Dialogs stay indexed briefly so that a crossing BYE or a retransmission is answered.
        self.loop.call_later(32.0, self._forget_dialogs, call)
        self.m_calls.inc(disposition=disposition)
        log.info(
            "call_ended",
            call=call.id,
            disposition=disposition,
            answered_by=call.answered_by,
            duration=round(call.ended_at - call.started_at, 3),
        )
        self.service.store.close_call(call.record())

    def _release_media(self, call: Call) -> None:
        """Stop the player and recorder, close the relay: its ports go back to the pool."""
        if call.player is not None:
            call.player.stop()
            call.player = None
        recorder, call.recorder = call.recorder, None
        media, call.media = call.media, None
        if recorder is not None:

            async def close_then_release() -> None:
                try:
                    await recorder.close()
                finally:
                    if media is not None:
                        media.close()

            self._spawn(close_then_release())
        elif media is not None:
            media.close()

    def _forget_dialogs(self, call: Call) -> None:
        caller = (call.a_invite.call_id, call.a_invite.from_.tag or "")
        if self.by_caller.get(caller) is call:
            del self.by_caller[caller]
        for dialog in [call.a_dialog, *(leg.dialog for leg in call.legs)]:
            if dialog is not None:
                self.dialogs.remove(dialog)
                side = self.sides.get(dialog.id)
                if side is not None and side.call is call:
                    del self.sides[dialog.id]

    def _cancel_timers(self, call: Call) -> None:
        for handle in call.timers:
            handle.cancel()
        call.timers.clear()

    # -- helpers -------------------------------------------------------------------------------
    def _index(self, dialog: Dialog, side: _Side) -> None:
        try:
            self.dialogs.add(dialog)
        except PbxError:
            return
        self.sides[dialog.id] = side

    def _take_line(self, call: Call, line: LineKey) -> None:
        self.line_calls[line] += 1
        call.lines.append(line)

    def _respond(
        self, key: ServerKey, req: SipRequest, status: int, reason: str | None = None
    ) -> None:
        self.service.respond(key, build_response(req, status, reason, to_tag=new_tag()))

    def _now(self) -> float:
        return self.loop.time()

    async def drain(self, seconds: float, bye_seconds: float = 5.0) -> int:
        """Graceful shutdown: refuse new calls (503), let calls in progress end within
        ``seconds`` (``cut_drain`` ends the wait early), then end the rest: BYE to both sides
        of answered calls, 503 to callers still ringing, each record closed. Returns how many
        calls were ended here. Waits up to ``bye_seconds`` for the BYEs to be answered."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._no_calls.wait()
        remaining = list(self.calls.values())
        for call in remaining:
            call.trace.append("ended by server shutdown")
            if call.state is CallState.RINGING:
                self._fail_call(call, 503, "failed")
            else:
                self._hang_up(call, None, "answered")
        self.service.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bye_seconds):
                await self._byes_answered.wait()
        return len(remaining)

    def cut_drain(self) -> None:
        """Stop waiting for calls to end by themselves (a second SIGTERM)."""
        self._no_calls.set()

    async def stop(self) -> None:
        """Server shutdown: timers stop; open records are closed as failed at next start-up."""
        for call in list(self.calls.values()):
            self._cancel_timers(call)
            for item in call.retransmissions:
                if item.timer is not None:
                    item.timer.cancel()

    # -- admin view ----------------------------------------------------------------------------
    def calls_view(self) -> list[dict[str, Any]]:
        """The active calls for ``GET /calls``."""
        out = []
        for call in self.calls.values():
            out.append(
                {
                    "id": call.id,
                    "tenant": call.tenant,
                    "caller": call.caller,
                    "called": call.called,
                    "state": call.state.value,
                    "config_version": call.snapshot.version,
                    "started_at": call.started_at,
                    "answered_at": call.answered_at,
                    "answered_by": call.answered_by,
                    "legs": [
                        {"fork": leg.fork_id, "to": leg.label, "state": leg.state.value}
                        for leg in call.legs
                    ],
                }
            )
        return out


# ---------------------------------------------------------------------------------------------


class _LiveLines:
    """The routing core's view of the lines (``LineLookup``), read from the registrar and the
    engine's call counts only for the extensions a decision asks about. Building a full
    ``LineState`` per decision would cost a presence lookup per user of the tenant."""

    def __init__(self, engine: CallEngine, call: Call, tenant: TenantConfig, now: float) -> None:
        self.engine = engine
        self.call = call
        self.tenant = tenant
        self.now = now

    def contacts(self, tenant: TenantId, extension: Extension) -> tuple[ContactId, ...]:
        if tenant != self.tenant.id:
            return ()
        presence = self.engine.service.registrations.presence(self.tenant, extension, self.now)
        ids = []
        for binding in presence.contacts:
            contact = ContactId(binding.contact_key)
            self.call.bindings[contact] = binding  # the forks started from this decision dial it
            ids.append(contact)
        return tuple(ids)

    def calls_of(self, tenant: TenantId, extension: Extension) -> int:
        return self.engine.line_calls.get((tenant, extension), 0)


def _ignore(event: TxEvent) -> None:
    """Callback for requests whose outcome changes nothing (CANCEL, BYE)."""


def _packets_from(media: MediaSession, side: Side) -> int:
    stats = media.stats(side)
    return stats.rtp_received + stats.rtcp_received


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _user_of(address: NameAddress) -> str:
    uri = address.uri
    if isinstance(uri, SipUri):
        return uri.user or ""
    return getattr(uri, "number", "") or ""


def _dialled(req: SipRequest) -> str | None:
    uri = req.uri
    user: str | None = None
    if isinstance(uri, SipUri):
        user = uri.user
    elif hasattr(uri, "number"):
        user = uri.number
    if not user:
        return None
    return user.split(";", 1)[0]


def _tenant_of(snapshot: ConfigSnapshot, req: SipRequest) -> TenantConfig | None:
    """The phone's tenant: the first of From, To and Request-URI hosts naming a tenant domain;
    else the default tenant."""
    for uri in (req.from_.uri, req.to.uri, req.uri):
        if isinstance(uri, SipUri):
            tid = snapshot.tenant_by_domain.get(uri.host.lower())
            if tid is not None:
                return snapshot.tenants[tid]
    return snapshot.tenant_for_domain("")


def _max_forwards(req: SipRequest) -> int:
    value = req.max_forwards if req.max_forwards is not None else 70
    return max(1, min(70, value - 1))


def _diversion_headers(diversions: Any, host: str) -> list[tuple[str, str]]:
    """RFC 5806 Diversion values, most recent first, with their counters."""
    out = []
    for index, diversion in enumerate(diversions):
        counter = len(diversions) - index
        out.append(
            (
                "Diversion",
                f"<sip:{diversion.number}@{host}>;reason={diversion.reason};counter={counter}",
            )
        )
    return out


def _fork_label(fork: Fork) -> str:
    if isinstance(fork, RingExtension):
        return fork.extension
    if isinstance(fork, DialOut):
        return fork.number
    return "009608"


def _disposition(call: Call, status: int) -> Disposition:
    if status == 486:
        return "busy"
    progress = call.progress
    tried = dict(progress.tried) if progress is not None else {}
    if call.max_ring_fired or Outcome.NO_ANSWER in tried.values():
        return "no_answer"
    return "failed"
