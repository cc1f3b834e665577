"""The call core: one sans-IO object per call, the B2BUA's logic (RFC 3261 sections 9, 12-15).

Events in, with the clock reading of the moment (``handle(event, now)``); actions out
(``next_action``); one deadline (``get_timer``), handled by ``handle(TimerFired(), now)``. The
asyncio engine (``pbx.b2bua``) turns actions into I/O and feeds back what happens; nothing here
awaits, reads a clock, draws randomness of its own or touches a socket or the database.

A call has an A leg (our UAS dialog with the caller) and fork legs (UAC INVITEs, one per
contact of an extension fork, or one per trunk call). The routing core decides which forks start
and end, the timers and the final answer: the core asks (``AskRouting``) and carries out the
answer (``Decided``). What the core owns:

- forking: one INVITE per contact or trunk call; the first 180/183 goes to the caller once (a
  183's SDP re-anchored on the relay);
- the first 2xx wins; every other leg is cancelled, and 9.1's rule is kept: "a CANCEL request
  SHOULD NOT be sent to cancel an INVITE until a provisional response is received", so a leg
  with nothing back yet is cancelled at its first 1xx; the 487 of a cancelled leg is absorbed;
- a leg that answers after losing (another fork won, or the caller cancelled) gets ACK then BYE
  (13.2.2.4);
- late offer: an INVITE without SDP whose answer's 2xx carries the offer; the fork leg's ACK
  waits for the caller's ACK, which carries the answer (13.2.2.4, RFC 3264 section 4);
- a caller's CANCEL (9.2), or BYE on the early dialog, ends every fork; the caller gets 487;
- the 2xx to the caller (and to relayed re-INVITEs) is retransmitted until its ACK
  (13.3.1.4); without one, both legs get BYE;
- in-dialog BYE, re-INVITE, UPDATE and INFO are relayed to the other leg (12.2), a re-INVITE
  that crosses one in progress gets 491 (14.1), and requests for a dialog we no longer have get
  481 (12.2.2);
- media: the caller's SDP offer opens the relay, and every offer and answer crossing is
  re-anchored on it (``pbx.media.anchor``); the 009608 announcement is answered by us.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from pbx.call import session_timer as st
from pbx.call.encryption import encryption_note
from pbx.call.record import CallRecord, Disposition, EndedBy, HangupCause, Json
from pbx.clock import Instant
from pbx.config.model import ConfigSnapshot, TenantId
from pbx.errors import RemoteProtocolError
from pbx.immutable import immutable
from pbx.media.anchor import Anchored, MediaAnchor
from pbx.media.g711 import Codec
from pbx.media.latch import Side
from pbx.media.sdp import AudioStream, SessionDescription, audio_stream, parse_sdp
from pbx.routing.model import (
    CallProgress,
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
    LineKey,
    Outcome,
    PlayAnnouncement,
    RingExtension,
    RingTimer,
    TimerExpired,
    TimerKind,
)
from pbx.sip.build import ANSWERED_ELSEWHERE, build_cancel, build_response
from pbx.sip.dialog import (
    AckTimedOut,
    Dialog,
    DialogId,
    OutgoingInvite,
    SipTimerValues,
    TwoXxRetransmitter,
    copy_request,
    relay_response,
)
from pbx.sip.message import Address, NameAddress, SipRequest, SipResponse, SipUri, Uri, Via
from pbx.sip.transaction import (
    ResponseReceived,
    ServerKey,
    TransactionTimedOut,
    TransportFailed,
    TxEvent,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
SDP = "application/sdp"


class CallState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class LegState(enum.Enum):
    CALLING = "calling"  # INVITE sent, nothing back yet
    PROCEEDING = "proceeding"  # a provisional response came
    ANSWERED = "answered"  # 2xx: the leg's dialog is confirmed
    ENDED = "ended"  # final failure, cancelled, or hung up


@immutable
class Peer:
    """Where one leg's requests go (the source a phone registered from, the trunk, the caller)."""

    address: Address
    reliable: bool
    secure: bool = False  # over TLS (issue #18): Via/Contact say so; implies reliable


@immutable
class Reach:
    """How to reach one registered contact: its Request-URI and where to send."""

    uri: Uri
    peer: Peer
    route: tuple[str, ...] = ()  # issue #20: the binding's Path, sent as Route headers


class Locator(Protocol):
    """Our own address and port for Via/Contact/SDP towards a host (the listening sockets and
    ``[sip] advertise``): the one question the core asks of the server."""

    def local_address(
        self, dest_host: str, reliable: bool, secure: bool = False
    ) -> tuple[str, int]: ...


# --- events (in) -------------------------------------------------------------------------------


@immutable
class Started:
    """The call was admitted: open media (with an SDP offer) or ask routing."""


@immutable
class MediaReady:
    """The relay is open: its A and B ports on ``host``; ``session_id`` seeds our o= lines."""

    a_port: int
    b_port: int
    session_id: int
    keys: tuple[bytes, bytes] = (b"", b"")  # our SRTP keys for sides A and B (issue #18)
    host: str = ""  # the relay's address when it is not this node's (rtpengine, issue #20)


@immutable
class MediaFailed:
    """The relay could not be opened (no free ports, a socket error)."""

    reason: str


@immutable
class MediaInactive:
    """The relay saw nothing from ``side`` for ``[media] inactivity_seconds``."""

    side: Side


@immutable
class PromptFinished:
    """The announcement has played."""

    packets_sent: int


@immutable
class RecordingFailed:
    """The recorder could not start; the record names no recording."""


@immutable
class Decided:
    """The routing core's answer to the last ``AskRouting``; ``reach`` for its contacts."""

    decision: Decision
    reach: Mapping[ContactId, Reach] = field(default_factory=dict)


@immutable
class TransactionEvent:
    """Something happened on a client transaction we started with ``ref``."""

    ref: int
    event: TxEvent


@immutable
class DialogRequestReceived:
    """A request within one of this call's dialogs (not ACK, not CANCEL)."""

    key: ServerKey
    request: SipRequest


@immutable
class AckReceived:
    """An ACK for one of this call's 2xx responses (or a repeated one)."""

    request: SipRequest


@immutable
class CallerCancelled:
    """The caller's CANCEL matched the INVITE (answered 200 by the service already)."""


@immutable
class TimerFired:
    """``get_timer()``'s deadline has come."""


@immutable
class ShutdownRequested:
    """The server stops: end the call now."""


CallEvent = (
    Started
    | MediaReady
    | MediaFailed
    | MediaInactive
    | PromptFinished
    | RecordingFailed
    | Decided
    | TransactionEvent
    | DialogRequestReceived
    | AckReceived
    | CallerCancelled
    | TimerFired
    | ShutdownRequested
)

# --- actions (out) -------------------------------------------------------------------------------


@immutable
class Respond:
    """Send ``response`` through the server transaction ``key``."""

    key: ServerKey
    response: SipResponse


@immutable
class SendRequest:
    """Start a client transaction; its events come back as ``TransactionEvent(ref, ...)``
    (``ref`` None: nobody listens). ``bye``: a BYE the shutdown waits for."""

    request: SipRequest
    peer: Peer
    ref: int | None = None
    bye: bool = False


@immutable
class SendStateless:
    """Send outside any transaction (ACK to a 2xx, a retransmitted 2xx)."""

    message: SipRequest | SipResponse
    destination: Address


@immutable
class OpenMedia:
    """Open the relay (both sides); answer with ``MediaReady`` or ``MediaFailed``."""

    host: str  # our media address, as written into SDP


@immutable
class SetRemote:
    """The relay's ``side`` now sends to the stream that side's party declared."""

    side: Side
    stream: AudioStream


@immutable
class RestartSilence:
    """Measure ``side``'s silence from now (it was silent while the call rang)."""

    side: Side


@immutable
class StartRecording:
    """Record the relay into ``path``."""

    path: str


@immutable
class PlayPrompt:
    """Play the prompt to the caller with ``codec``; ``PromptFinished`` when done."""

    prompt: str
    codec: Codec


@immutable
class CloseMedia:
    """Stop the player and recorder and close the relay (if open, or once it opens)."""


@immutable
class AskRouting:
    """Ask the routing core: ``start_call`` (``event`` None) or ``next_step(event)``; answer
    with ``Decided``."""

    event: ForkEnded | None
    progress: CallProgress | None


@immutable
class HoldLine:
    """The call occupies ``line`` (its user counts as busy) until the call ends."""

    line: LineKey


@immutable
class TrackDialog:
    """Route requests of ``dialog_id`` to this call."""

    dialog_id: DialogId


@immutable
class WriteRecord:
    """Store the call record (``opened``: the call is in progress, the row new or updated at
    the answer; else it is closed)."""

    record: CallRecord
    opened: bool


@immutable
class CallEnded:
    """The call is over: release its lines; its dialogs may be forgotten a little later."""

    disposition: Disposition
    lines: tuple[LineKey, ...]
    duration: float


CallAction = (
    Respond
    | SendRequest
    | SendStateless
    | OpenMedia
    | SetRemote
    | RestartSilence
    | StartRecording
    | PlayPrompt
    | CloseMedia
    | AskRouting
    | HoldLine
    | TrackDialog
    | WriteRecord
    | CallEnded
)
# The actions the media side of the engine carries out.
MEDIA_ACTIONS = (OpenMedia, SetRemote, RestartSilence, StartRecording, PlayPrompt, CloseMedia)

# --- the call ------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class ForkLeg:
    """One client INVITE of a fork (one contact of an extension, or one trunk call)."""

    ref: int
    fork_id: ForkId
    contact: ContactId | None
    label: str  # "1001" / "0312345678" for views and logs
    invite: OutgoingInvite
    peer: Peer
    state: LegState = LegState.CALLING
    dialog: Dialog | None = None
    cancel_wanted: bool = False
    cancel_sent: bool = False
    cancel_reason: str | None = None  # the CANCEL's Reason (RFC 3326): answered elsewhere
    answered_dialog: DialogId | None = None  # the dialog of the 2xx taken on this leg
    # The session interval offered after the callee's 422 (RFC 4028 section 7.4); None: the
    # call's own (``CallCore._offered_interval``), and no 422 retried yet.
    session_interval: int | None = None


@dataclass(eq=False, slots=True)
class _RelayedRequest:
    """A request from one leg sent on to the other, waiting for the answer to relay back."""

    key: ServerKey
    request: SipRequest
    dialog: Dialog  # where it came in
    other: Dialog  # where it went out
    peer: Peer
    out: SipRequest
    done: bool = False
    # A re-INVITE without SDP (issue 16): the other side's 2xx carries the offer, so its ACK
    # waits for the requester's, which carries the answer.
    late_2xx: SipResponse | None = None
    late_ack: SipRequest | None = None


@dataclass(eq=False, slots=True)
class _Retransmission:
    """One 2xx being retransmitted; ``initial``: the answer to the caller's INVITE."""

    retrans: TwoXxRetransmitter
    initial: bool
    relayed: _RelayedRequest | None = None  # a late-offer re-INVITE whose ACK waits for this


class CallCore:
    """One call: the A leg, its forks and their legs, and what the record will say."""

    # Slotted: every event reads and writes a dozen of these; no instance dict to look in.
    __slots__ = (
        "_actions",
        "_asking",
        "_asks",
        "_b_refresh_ref",
        "_b_timer",
        "_caller_offer",
        "_deferred",
        "_emit",
        "_late_prompt",
        "_locator",
        "_media_wanted",
        "_next_ref",
        "_now",
        "_pending",
        "_prompts",
        "_reach",
        "_refresh_ref",
        "_retransmissions",
        "_ring_timers",
        "_session_request",
        "_sip_timers",
        "a_dialog",
        "a_invite",
        "a_key",
        "a_peer",
        "anchor",
        "answered_at",
        "answered_by",
        "called",
        "caller",
        "disposition",
        "early_media_sent",
        "ended",
        "ended_at",
        "ended_by",
        "forwarding",
        "hangup_cause",
        "id",
        "legs",
        "lines",
        "max_ring_fired",
        "media_host",
        "pending_b_ack",
        "progress",
        "provisional_sent",
        "recording_path",
        "request",
        "session_timer",
        "silent_while_ringing",
        "snapshot",
        "started_at",
        "state",
        "tenant",
        "trace",
        "winner",
    )

    def __init__(
        self,
        call_id: str,
        snapshot: ConfigSnapshot,
        request: CallRequest,
        tenant: TenantId | None,
        caller: str,
        called: str,
        a_key: ServerKey,
        a_invite: SipRequest,
        a_peer: Peer,
        a_tag: str,
        *,
        locator: Locator,
        sip_timers: SipTimerValues,
        prompts: frozenset[str],
        now: Instant,
    ) -> None:
        self.id = call_id
        self.snapshot = snapshot  # taken once, at the INVITE: reloads affect new calls only
        self.request = request
        self.tenant = tenant
        self.caller = caller
        self.called = called
        self.a_key = a_key
        self.a_invite = a_invite
        self.a_peer = a_peer
        self._locator = locator
        self._sip_timers = sip_timers
        self._prompts = prompts
        via, contact = self._via_contact(a_peer)
        self.a_dialog = Dialog.from_invite_as_uas(a_invite, a_tag, contact, local_via=via)
        self.started_at = now.wall
        self.state = CallState.RINGING
        self.ended = False  # state is ENDED (kept apart: read on every event)
        self.progress: CallProgress | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.answered_by: str | None = None
        self.disposition: Disposition | None = None
        self.hangup_cause: HangupCause | None = None
        self.ended_by: EndedBy | None = None
        self.legs: list[ForkLeg] = []
        self.winner: ForkLeg | None = None
        self.forwarding: list[Json] = []
        self.trace: list[str] = []
        self.lines: list[LineKey] = []
        self.recording_path: str | None = None
        self.provisional_sent = False
        self.early_media_sent = False
        self.max_ring_fired = False
        self.pending_b_ack: SipResponse | None = None
        self.anchor: MediaAnchor | None = None
        self.media_host = ""
        self.silent_while_ringing: set[Side] = set()
        self._caller_offer: SessionDescription | None = None
        self._session_request: st.Requested | None = None  # RFC 4028, issue 16
        self.session_timer: st.SessionTimer | None = None
        self._refresh_ref: int | None = None
        self._b_timer: st.SessionTimer | None = None  # toward the callee (issue 16)
        self._b_refresh_ref: int | None = None
        self._late_prompt: str | None = None  # played once the late offer's ACK answers
        self._media_wanted = False
        self._reach: dict[ContactId, Reach] = {}
        self._ring_timers: list[tuple[float, RingTimer]] = []
        self._retransmissions: list[_Retransmission] = []
        self._pending: dict[int, ForkLeg | _RelayedRequest] = {}
        self._next_ref = 0
        self._asking = False
        # Lists, not deques: they hold a few entries at most, and an ended call lives on for
        # 32 s (crossing BYEs, retransmissions), where an empty deque keeps a 64-slot block
        # (about 600 bytes) and an empty list 56 bytes (issue #21: the working set).
        self._asks: list[ForkEnded] = []
        self._deferred: list[Callable[[], None]] = []
        self._actions: list[CallAction] = []
        self._emit: Callable[[CallAction], None] = self._actions.append
        self._now = now

    # -- the sans-IO verbs -------------------------------------------------------------------
    def handle(self, event: CallEvent, now: Instant) -> None:
        """Take in one event at ``now``; then drain ``next_action`` and re-arm ``get_timer``."""
        self._now = now
        _HANDLERS[type(event)](self, event)
        # Steps that follow a decision run once it is carried out (a contact that cannot be
        # reached, an announcement), like a call_soon in the adapter: one decision at a time.
        while self._deferred:
            self._deferred.pop(0)()
        if self._asks:
            self._ask_next()

    def next_action(self) -> CallAction | None:
        """The next thing to do, or None."""
        return self._actions.pop(0) if self._actions else None

    def take_actions(self) -> list[CallAction]:
        """Every action due so far, in order (as many ``next_action`` calls would give)."""
        actions = self._actions[:]
        self._actions.clear()
        return actions

    def get_timer(self) -> float | None:
        """When ``TimerFired`` is next due (monotonic), or None."""
        soonest: float | None = None
        for at, _ in self._ring_timers:
            if soonest is None or at < soonest:
                soonest = at
        for item in self._retransmissions:
            due = item.retrans.get_timer()
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        for timer in (self.session_timer, self._b_timer):
            if timer is None or self.ended:
                continue
            for due in (timer.expires_at, timer.refresh_at):
                if due is not None and (soonest is None or due < soonest):
                    soonest = due
        return soonest

    def dialog_ids(self) -> list[DialogId]:
        """Every dialog of this call (the caller's and each leg's that has one)."""
        return [self.a_dialog.id, *(leg.dialog.id for leg in self.legs if leg.dialog)]

    def view(self) -> dict[str, object]:
        """The call as ``GET /calls`` shows it."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "caller": self.caller,
            "called": self.called,
            "state": self.state.value,
            "config_version": self.snapshot.version,
            "started_at": self.started_at,
            "answered_at": self.answered_at,
            "answered_by": self.answered_by,
            "call_id": self.a_invite.call_id,
            "legs": [
                {
                    "fork": leg.fork_id,
                    "to": leg.label,
                    "state": leg.state.value,
                    "call_id": leg.invite.request.call_id,
                }
                for leg in self.legs
            ],
        }

    def record(self) -> CallRecord:
        """The call record as it stands."""
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
            hangup_cause=self.hangup_cause,
            ended_by=self.ended_by,
            caller_call_id=self.a_invite.call_id,
            callee_call_id=self._callee_call_id(),
        )

    def _callee_call_id(self) -> str | None:
        leg = self.winner or (self.legs[-1] if self.legs else None)
        return leg.invite.request.call_id if leg is not None else None

    # -- start ---------------------------------------------------------------------------------
    def _on_started(self, event: object = None) -> None:
        origin = self.request.origin
        if isinstance(origin, FromExtension):
            self._hold_line((origin.tenant, origin.extension))
        self._emit(TrackDialog(self.a_dialog.id))
        self._emit(WriteRecord(self.record(), opened=True))
        sip = self.snapshot.server.sip
        wanted = st.requested(self.a_invite, sip.min_se, sip.session_expires)
        if isinstance(wanted, st.TooSmall):
            self.trace.append(f"Session-Expires below {wanted.min_se}s -> 422")
            self._fail_call(422, "failed", "rejected", (("Min-SE", str(wanted.min_se)),))
            return
        self._session_request = wanted
        if not self.a_invite.body:
            # Late offer (issue 16): the relay is opened all the same; the offer comes in the
            # 2xx and is anchored there, the answer in the caller's ACK.
            self._open_media()
            return
        try:
            offer = parse_sdp(self.a_invite.body)
        except RemoteProtocolError as exc:
            self.trace.append(f"unreadable SDP offer: {exc}")
            self._fail_call(400, "failed")
            return
        stream = audio_stream(offer)
        if stream is None or not stream.active:
            self.trace.append("no PCMU/PCMA audio in the offer -> 488")
            self._fail_call(488, "failed")
            return
        self._caller_offer = offer
        self._open_media()

    def _open_media(self) -> None:
        self.media_host = self._locator.local_address(self.a_peer.address[0], self.a_peer.reliable)[
            0
        ]
        self._media_wanted = True
        self._emit(OpenMedia(self.media_host))

    def _on_media_ready(self, event: MediaReady) -> None:
        offer = self._caller_offer
        if self.ended:
            self._emit(CloseMedia())
            return
        self.media_host = event.host or self.media_host
        stream = audio_stream(offer) if offer is not None else None
        if stream is not None and stream.crypto is not None and not all(event.keys):
            # An SRTP offer, and a media plane that gives no keys (rtpengine relays plain RTP
            # only here): a plain answer would not answer it (RFC 3264) and would drop the
            # caller's encryption unasked.
            self.trace.append("SRTP offered; this node's media engine has no SRTP -> 488")
            self._fail_call(488, "failed")
            return
        self.anchor = MediaAnchor(
            offer, self.media_host, event.a_port, event.b_port, event.session_id, event.keys
        )
        if stream is not None:
            self._emit(SetRemote(Side.A, stream))
        self._ask(None)

    def _on_media_failed(self, event: MediaFailed) -> None:
        self._media_wanted = False
        self.trace.append(f"no media ports: {event.reason} -> 503")
        self._fail_call(503, "failed")

    # -- routing ---------------------------------------------------------------------------------
    def _ask(self, event: ForkEnded | None) -> None:
        """Ask routing (one question at a time; the next waits for the answer)."""
        if self.ended:
            return
        if event is not None:
            self._asks.append(event)
            return
        self._asking = True
        self._emit(AskRouting(None, None))

    def _ask_next(self) -> None:
        while not self._asking and self._asks and not self.ended:
            if self.progress is None:
                return
            event = self._asks.pop(0)
            if self.state is not CallState.RINGING and not isinstance(event, ForkAnswered):
                continue  # the call was answered meanwhile: a fork ending changes nothing
            self._asking = True
            self._emit(AskRouting(event, self.progress))

    def _on_decided(self, event: Decided) -> None:
        self._asking = False
        if self.ended:
            return
        decision = event.decision
        self._reach.update(event.reach)
        self.progress = decision.progress
        if decision.progress.tenant is not None:
            self.tenant = decision.progress.tenant
        self.trace.extend(decision.trace)
        elsewhere = ANSWERED_ELSEWHERE if decision.answered is not None else None
        for fork_id in decision.cancel:
            for leg in self.legs:
                if leg.fork_id == fork_id:
                    self._cancel_leg(leg, elsewhere)
        if decision.final is not None and self.state is CallState.RINGING:
            disposition = self._disposition(decision.final)
            cause: HangupCause | None = "rejected" if disposition == "failed" else None
            self._fail_call(decision.final, disposition, cause)
            return
        recorded = decision.answered is not None and decision.record
        if recorded and self.winner is not None and self.anchor is not None:
            directory = self.snapshot.server.storage.data_dir / "recordings"
            self.recording_path = str(directory / f"{self.id}.wav")
            self._emit(StartRecording(self.recording_path))
            self._emit(WriteRecord(self.record(), opened=True))  # the recording is linked
        for fork in decision.start:
            self._start_fork(fork)
        if self.state is CallState.RINGING:
            for timer in decision.timers:
                self._ring_timers.append((self._now.monotonic + timer.seconds, timer))

    def _disposition(self, status: int) -> Disposition:
        if status == 486:
            return "busy"
        tried = dict(self.progress.tried) if self.progress is not None else {}
        if self.max_ring_fired or Outcome.NO_ANSWER in tried.values():
            return "no_answer"
        return "failed"

    # -- forks -------------------------------------------------------------------------------------
    def _start_fork(self, fork: Fork) -> None:
        diversions = getattr(fork, "diversions", ())
        if diversions:
            last = diversions[0]
            self.forwarding.append(
                {"from": last.extension or last.number, "reason": last.reason, "to": _label(fork)}
            )
        if isinstance(fork, RingExtension):
            for contact in fork.contacts:
                reach = self._reach.get(contact)
                if reach is None:
                    failed = ContactFailed(fork.fork_id, contact, 480)
                    self._deferred.append(partial(self._ask, failed))
                    continue
                self._invite_contact(fork, contact, reach)
        elif isinstance(fork, DialOut):
            self._dial_out(fork)
        elif isinstance(fork, PlayAnnouncement):
            if self.anchor is None:
                # Without an SDP offer (no media anchored) the announcement cannot play.
                self._deferred.append(partial(self._announcement_failed, fork.fork_id))
            else:
                self._deferred.append(partial(self._play_announcement, fork))

    def _invite_contact(self, fork: RingExtension, contact: ContactId, reach: Reach) -> None:
        tenant = self.snapshot.tenants[fork.tenant]
        number = fork.caller.number or "anonymous"
        display = f'"{fork.caller.name}"' if fork.caller.name else None
        headers = [("Allow", ALLOW), *_diversion_headers(fork.diversions, tenant.domain)]
        headers[:0] = [("Route", hop) for hop in reach.route]  # RFC 3327: the Path, in order
        self._send_invite(
            fork.fork_id,
            contact,
            fork.extension,
            reach.peer,
            uri=reach.uri,
            from_=NameAddress(SipUri("sip", tenant.domain, number), display),
            to=NameAddress(SipUri("sip", tenant.domain, fork.extension)),
            headers=headers,
        )

    def _dial_out(self, fork: DialOut) -> None:
        trunk = next((t for t in self.snapshot.server.trunks if t.name == fork.trunk), None)
        if trunk is None:
            failed = ForkFailed(fork.fork_id, 503)
            self._deferred.append(partial(self._ask, failed))
            return
        peer = Peer((trunk.host, trunk.port), False)
        host, _ = self._locator.local_address(trunk.host, False)
        headers: list[tuple[str, str]] = [("Allow", ALLOW)]
        if fork.caller_id:
            from_ = NameAddress(SipUri("sip", host, fork.caller_id))
            headers.append(("P-Asserted-Identity", f"<sip:{fork.caller_id}@{host}>"))
        else:
            from_ = NameAddress(SipUri("sip", "anonymous.invalid", "anonymous"), '"Anonymous"')
            headers.append(("Privacy", "id"))
        headers.extend(_diversion_headers(fork.diversions, host))
        self._send_invite(
            fork.fork_id,
            None,
            fork.number,
            peer,
            uri=SipUri("sip", trunk.host, fork.number, port=trunk.port),
            from_=from_,
            to=NameAddress(SipUri("sip", trunk.host, fork.number)),
            headers=headers,
        )

    def _send_invite(
        self,
        fork_id: ForkId,
        contact: ContactId | None,
        label: str,
        peer: Peer,
        *,
        uri: Uri,
        from_: NameAddress,
        to: NameAddress,
        headers: list[tuple[str, str]],
    ) -> None:
        content_type: str | None = SDP
        if self.anchor is not None and self.anchor.caller_offer is not None:
            body = self.anchor.offer_to_callee(secure=peer.secure)
        else:
            body = self.a_invite.body
            content_type = self.a_invite.header("Content-Type") if body else None
        sip = self.snapshot.server.sip  # RFC 4028 toward the callee (issue 16)
        headers = [*headers, *st.offer_headers(self._offered_interval(), sip.min_se)]
        via, our_contact = self._via_contact(peer)
        invite = OutgoingInvite.build(
            request_uri=uri,
            from_=from_,
            to=to,
            contact=our_contact,
            via=via,
            body=body,
            content_type=content_type,
            headers=headers,
            max_forwards=_max_forwards(self.a_invite),
        )
        leg = ForkLeg(self._ref(), fork_id, contact, label, invite, peer)
        self._pending[leg.ref] = leg
        self.legs.append(leg)
        self._emit(SendRequest(invite.request, peer, leg.ref))

    def _cancel_leg(self, leg: ForkLeg, reason: str | None = None) -> None:
        if leg.state in (LegState.ENDED, LegState.ANSWERED) or leg.cancel_wanted:
            return
        leg.cancel_wanted = True
        leg.cancel_reason = reason
        if leg.state is LegState.PROCEEDING:
            self._send_cancel(leg)

    def _send_cancel(self, leg: ForkLeg) -> None:
        # 9.1: a leg with nothing back yet is cancelled at its first provisional response.
        if leg.cancel_sent:
            return
        leg.cancel_sent = True
        self._emit(SendRequest(build_cancel(leg.invite.request, leg.cancel_reason), leg.peer))

    # -- the announcement (we answer) ------------------------------------------------------------
    def _announcement_failed(self, fork_id: ForkId) -> None:
        self.trace.append("009608: no media to play the announcement")
        self._ask(ForkFailed(fork_id, 480))

    def _play_announcement(self, fork: PlayAnnouncement) -> None:
        anchor = self.anchor
        if self.state is not CallState.RINGING or anchor is None:
            return
        known = fork.prompt in self._prompts
        late = anchor.caller_offer is None  # issue 16: we offer in the 200, the ACK answers
        answer = anchor.answer_ourselves() if known and not late else None
        if answer is None and not (known and late):
            self._announcement_failed(fork.fork_id)
            return
        self.state = CallState.ANSWERED
        self.answered_at = self._now.wall
        self.answered_by = fork.prompt
        self._emit(WriteRecord(self.record(), opened=True))
        self._ask(ForkAnswered(fork.fork_id, None))
        self._ring_timers.clear()
        self._restart_silence()
        body = answer.body if answer is not None else anchor.offer_ourselves()
        response = self.a_dialog.respond(self.a_invite, 200, body=body, content_type=SDP)
        self._emit(Respond(self.a_key, response))
        self._start_retransmitter(response, self.a_peer, initial=True)
        if answer is not None:
            self._emit(PlayPrompt(fork.prompt, answer.codec))
        else:
            self._late_prompt = fork.prompt

    def _play_after_ack(self, ack: SipRequest) -> None:
        """A late-offer caller's ACK answered our offer: play the prompt, or hang up."""
        prompt, self._late_prompt = self._late_prompt, None
        taken = self.anchor.prompt_answer(ack.body) if self.anchor is not None else None
        if prompt is None or taken is None:
            self.trace.append("no usable answer in the caller's ACK to our offer: hang up")
            self._hang_up(None, "answered")
            return
        codec, remote = taken
        self._emit(SetRemote(remote.side, remote.stream))
        self._emit(PlayPrompt(prompt, codec))

    def _on_prompt_finished(self, event: PromptFinished) -> None:
        if self.state is CallState.ANSWERED:
            self.trace.append(f"{self.answered_by} played ({event.packets_sent} packets): hang up")
            self._hang_up(None, "answered")

    # -- responses on fork legs ------------------------------------------------------------------
    def _on_transaction_event(self, event: TransactionEvent) -> None:
        if event.ref == self._refresh_ref:
            self._on_refresh_event(event.event)
            return
        if event.ref == self._b_refresh_ref:
            self._on_callee_refresh_event(event.event)
            return
        pending = self._pending.get(event.ref)
        if isinstance(pending, _RelayedRequest):
            self._on_relayed_event(pending, event.event)
            return
        if pending is None:
            return
        leg, tx_event = pending, event.event
        if isinstance(tx_event, ResponseReceived):
            self._on_leg_response(leg, tx_event.response)
        elif isinstance(tx_event, TransactionTimedOut | TransportFailed) and leg.state in (
            LegState.CALLING,
            LegState.PROCEEDING,
        ):
            self._leg_failed(leg, 408 if isinstance(tx_event, TransactionTimedOut) else 503)

    def _on_leg_response(self, leg: ForkLeg, resp: SipResponse) -> None:
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
            if self.state is CallState.RINGING and status in (180, 183):
                self._relay_provisional(resp)
            return
        if status < 300:
            self._on_leg_answered(leg, resp, dialog)
            return
        if leg.state in (LegState.ENDED, LegState.ANSWERED):
            return
        if status == 422 and self._retry_after_422(leg, resp):
            return
        self._leg_failed(leg, status)

    def _retry_after_422(self, leg: ForkLeg, resp: SipResponse) -> bool:
        """RFC 4028 section 7.4: the callee wants a longer session interval than we offered
        (422 with its ``Min-SE``). The leg's INVITE goes again, once, offering that interval as
        both ``Session-Expires`` and ``Min-SE``; False when it cannot (the leg fails with 422)."""
        if leg.session_interval is not None or leg.cancel_wanted:
            return False
        if self.state is not CallState.RINGING:
            return False
        interval = st.retry_interval(resp, self._offered_interval())
        if interval is None:
            return False
        invite = leg.invite.retried(
            st.offer_headers(interval, interval), replacing=st.OFFER_HEADER_NAMES
        )
        del self._pending[leg.ref]
        leg.ref = self._ref()
        leg.invite = invite
        leg.state = LegState.CALLING
        leg.dialog = None
        leg.session_interval = interval
        self._pending[leg.ref] = leg
        self.trace.append(f"{leg.label}: 422, Min-SE {interval}s -> INVITE again offering it")
        self._emit(SendRequest(invite.request, leg.peer, leg.ref))
        return True

    def _relay_provisional(self, resp: SipResponse) -> None:
        has_sdp = bool(resp.body)
        if has_sdp and self.early_media_sent:
            return
        if not has_sdp and self.provisional_sent:
            return
        body = resp.body
        if has_sdp and self.anchor is not None:
            anchored = self.anchor.answer_to_caller(resp.body)
            if anchored is None:
                has_sdp, body = False, b""
                if self.provisional_sent:
                    return
            else:
                body = self._apply(anchored)
        self.provisional_sent = True
        self.early_media_sent = self.early_media_sent or has_sdp
        out = relay_response(resp, self.a_invite, self.a_dialog, body=body)
        self._emit(Respond(self.a_key, out))

    def _leg_failed(self, leg: ForkLeg, status: int) -> None:
        leg.state = LegState.ENDED
        if leg.cancel_wanted or self.state is not CallState.RINGING:
            return  # the 487 of a leg we cancelled: absorbed
        if leg.contact is not None:
            self._ask(ContactFailed(leg.fork_id, leg.contact, status))
        else:
            self._ask(ForkFailed(leg.fork_id, status))

    def _on_leg_answered(self, leg: ForkLeg, resp: SipResponse, dialog: Dialog | None) -> None:
        if dialog is None:
            return
        if leg.answered_dialog == dialog.id:
            # A retransmitted 2xx: our ACK was lost or late (13.2.2.4: send it again). Only
            # that: also after the call ended (the leg got its BYE already), or a phone that
            # resends its 200 under load would get a second BYE for a dialog it has ended.
            if leg is self.winner and self.pending_b_ack is not None and not self.ended:
                return  # the ACK waits for the caller's (late offer)
            self._emit(SendStateless(dialog.ack_for(resp), leg.peer.address))
            return
        leg.state = LegState.ANSWERED
        leg.dialog = dialog
        leg.answered_dialog = dialog.id
        if self.state is not CallState.RINGING or leg.cancel_wanted:
            # Lost the race: acknowledge and hang up this one (RFC 3261 13.2.2.4).
            self._emit(SendStateless(dialog.ack_for(resp), leg.peer.address))
            self._emit(SendRequest(dialog.new_request("BYE"), leg.peer))
            leg.state = LegState.ENDED
            return
        # The winner.
        self.state = CallState.ANSWERED
        self.winner = leg
        self.answered_at = self._now.wall
        self.answered_by = leg.label
        self._emit(WriteRecord(self.record(), opened=True))  # durable at once (issue 16)
        self._emit(TrackDialog(dialog.id))
        if self._session_request is not None or st.accepted(resp):
            offered = leg.session_interval or self._offered_interval()
            sent_sdp = leg.invite.request.body
            self._b_timer = st.toward_callee(resp, offered, self._now.monotonic, sent_sdp)
        live = self.progress.live_fork(leg.fork_id) if self.progress else None
        if live is not None and isinstance(live.fork, RingExtension):
            self._hold_line((live.fork.tenant, live.fork.extension))
        for other in self.legs:
            if other is not leg:
                self._cancel_leg(other, ANSWERED_ELSEWHERE)
        self._ask(ForkAnswered(leg.fork_id, leg.contact))
        self._ring_timers.clear()
        self._restart_silence()
        # Late offer (INVITE without SDP, offer in the 2xx): B's ACK carries the caller's
        # answer, so it waits for the caller's ACK.
        if not self.a_invite.body and resp.body:
            self.pending_b_ack = resp
        else:
            self._emit(SendStateless(dialog.ack_for(resp), leg.peer.address))
        body = None
        if self.anchor is not None and self.anchor.caller_offer is None:
            # Late offer: B's offer goes to the caller on the relay's A port.
            anchored = self.anchor.offer_across(Side.B, resp.body)
            body = self._apply(anchored) if anchored is not None else None
        elif self.anchor is not None:
            anchored = self.anchor.answer_to_caller(resp.body)
            body = self._apply(anchored) if anchored is not None else None
            secured = self.anchor.secured
            self.trace.append(  # issue #18: the record says whether the call was encrypted
                encryption_note(
                    self.a_peer.secure, secured(Side.A), leg.peer.secure, secured(Side.B)
                )
            )
        out = relay_response(resp, self.a_invite, self.a_dialog, body=body)
        wanted = self._session_request
        if wanted is not None:
            timer = st.SessionTimer(wanted.interval, wanted.refresher, self._now.monotonic)
            self.session_timer = timer
            extra: tuple[tuple[str, str], ...] = (("Session-Expires", timer.header()),)
            if wanted.supported:
                extra += (("Require", "timer"),)
            out = replace(out, headers=out.headers + extra)
        self._emit(Respond(self.a_key, out))
        self._start_retransmitter(out, self.a_peer, initial=True)

    # -- ACKs and 2xx retransmission (13.3.1.4) ------------------------------------------------
    def _on_ack(self, event: AckReceived) -> None:
        request = event.request
        if not self._is_ours(DialogId.of_request(request)):
            # Liberal in what we accept: pyVoIP 1.6 acknowledges a 2xx with a To tag of its own
            # making. The caller's Call-ID, From tag and CSeq still name our 2xx.
            request = replace(request, to=request.to.with_tag(self.a_dialog.id.local_tag))
        for item in list(self._retransmissions):
            if not item.retrans.receive_ack(request, self._now.monotonic):
                continue
            self._retransmissions.remove(item)
            relayed = item.relayed
            if relayed is not None and relayed.late_2xx is not None:
                # The requester's answer to the late offer goes on in the other side's ACK.
                to_caller = relayed.dialog is self.a_dialog
                body = self._late_answer(Side.B if to_caller else Side.A, request)
                relayed.late_ack = relayed.other.ack_for(
                    relayed.late_2xx, body=body, content_type=SDP if body else None
                )
                self._emit(SendStateless(relayed.late_ack, relayed.peer.address))
                return
            if item.initial and self._late_prompt is not None:
                self._play_after_ack(request)
                return
            winner = self.winner
            if item.initial and self.pending_b_ack is not None and winner is not None:
                if winner.dialog is not None:
                    body = self._late_answer(Side.B, request)
                    if self._b_timer is not None and body:
                        self._b_timer.offer = body  # a re-INVITE refresh repeats it
                    content_type = (request.header("Content-Type") or SDP) if body else None
                    ack = winner.dialog.ack_for(
                        self.pending_b_ack, body=body, content_type=content_type
                    )
                    self._emit(SendStateless(ack, winner.peer.address))
                self.pending_b_ack = None
            return
        # Otherwise a repeated ACK: the other side was acknowledged by us already.

    def _late_answer(self, offerer: Side, ack: SipRequest) -> bytes:
        """The answer in a caller's or callee's ACK to a late offer, for the ``offerer`` side
        (re-anchored on the relay when there is one)."""
        if self.anchor is not None and ack.body:
            anchored = self.anchor.answer_across(offerer, ack.body)
            return self._apply(anchored) if anchored is not None else b""
        return ack.body

    def _start_retransmitter(self, response: SipResponse, peer: Peer, *, initial: bool) -> None:
        retrans = TwoXxRetransmitter(response, peer.address, self._now.monotonic, self._sip_timers)
        self._retransmissions.append(_Retransmission(retrans, initial))

    def _on_timer(self, event: object = None) -> None:
        now = self._now.monotonic
        for item in list(self._retransmissions):
            due = item.retrans.get_timer()
            if due is None or due > now:
                continue
            item.retrans.handle_timer(now)
            for msg, destination in item.retrans.messages_to_send():
                self._emit(SendStateless(msg, destination))
            if isinstance(item.retrans.next_event(), AckTimedOut):
                self._retransmissions.remove(item)
                which = "the 2xx" if item.initial else "a re-INVITE's 2xx"
                self.trace.append(f"no ACK for {which}: hang up both legs")
                disposition: Disposition = "failed" if item.initial else "answered"
                self._hang_up(None, disposition, "no_ack")
        self._session_timer_due(now)
        due_timers = [timer for at, timer in self._ring_timers if at <= now]
        self._ring_timers = [(at, t) for at, t in self._ring_timers if at > now]
        for timer in due_timers:
            if self.state is not CallState.RINGING:
                break
            if timer.kind is TimerKind.MAX_RING:
                self.max_ring_fired = True
            self._ask(TimerExpired(timer))

    def _offered_interval(self) -> int:
        """The session interval we offer the callee: the caller's, else ``[sip]
        session_expires``."""
        wanted = self._session_request
        return wanted.interval if wanted is not None else self.snapshot.server.sip.session_expires

    def _session_timer_due(self, now: float) -> None:
        self._caller_timer_due(now)
        self._callee_timer_due(now)

    def _caller_timer_due(self, now: float) -> None:
        timer = self.session_timer
        if timer is None or self.ended:
            return
        if now >= timer.expires_at:
            self.trace.append(f"session timer: no refresh in {timer.interval}s: hang up")
            self._hang_up(None, "answered", "session_timer")
        elif timer.refresh_at is not None and now >= timer.refresh_at:
            # We are the refresher toward the caller (it asked refresher=uas): an UPDATE.
            timer.refreshing = True
            self._refresh_ref = self._ref()
            headers = (("Session-Expires", timer.header()), ("Supported", "timer"))
            update = self.a_dialog.new_request("UPDATE", headers=headers)
            self._emit(SendRequest(update, self.a_peer, self._refresh_ref))

    def _callee_timer_due(self, now: float) -> None:
        timer, winner = self._b_timer, self.winner
        if timer is None or self.ended or winner is None or winner.dialog is None:
            return
        if now >= timer.expires_at:
            seconds = timer.interval
            self.trace.append(f"session timer toward the callee: no refresh in {seconds}s: hang up")
            self._hang_up(None, "answered", "session_timer")
        elif timer.refresh_at is not None and now >= timer.refresh_at:
            dialog = winner.dialog
            timer.refreshing = True
            if timer.method == "INVITE" and dialog.invite_in_progress:
                return  # the re-INVITE crossing the call refreshes it when answered
            self._b_refresh_ref = self._ref()
            headers = [("Supported", "timer")]
            if timer.stated:
                headers.append(("Session-Expires", timer.header()))
            body = timer.offer if timer.method == "INVITE" else b""
            request = dialog.new_request(
                timer.method, headers=headers, body=body, content_type=SDP if body else None
            )
            self._emit(SendRequest(request, winner.peer, self._b_refresh_ref))

    def _on_callee_refresh_event(self, event: TxEvent) -> None:
        timer, winner = self._b_timer, self.winner
        if timer is None or self.ended or winner is None or winner.dialog is None:
            return
        if isinstance(event, ResponseReceived):
            resp = event.response
            if resp.status < 200:
                return
            winner.dialog.receive_response(resp)
            if resp.cseq.method == "INVITE" and resp.status < 300:
                self._emit(SendStateless(winner.dialog.ack_for(resp), winner.peer.address))
            if not timer.refreshing:
                return  # a retransmitted 2xx: acknowledged again
            if resp.status < 300:
                timer.refreshed(self._now.monotonic)
                return
        elif not isinstance(event, TransactionTimedOut | TransportFailed):
            return
        self.trace.append("session timer: our refresh toward the callee failed: hang up")
        self._hang_up(None, "answered", "session_timer")

    def _on_refresh_event(self, event: TxEvent) -> None:
        timer = self.session_timer
        if timer is None or self.ended or not timer.refreshing:
            return
        if isinstance(event, ResponseReceived) and 200 <= event.response.status < 300:
            timer.refreshed(self._now.monotonic)
        elif (isinstance(event, ResponseReceived) and event.response.status >= 300) or isinstance(
            event, TransactionTimedOut | TransportFailed
        ):
            self.trace.append("session timer: the refresh failed: hang up")
            self._hang_up(None, "answered", "session_timer")

    # -- in-dialog requests (12.2.2) ---------------------------------------------------------
    def _on_dialog_request(self, event: DialogRequestReceived) -> None:
        key, req = event.key, event.request
        dialog, from_caller = self._dialog_of(req)
        if dialog is None:
            self._emit(Respond(key, build_response(req, 481)))
            return
        refusal = dialog.receive_request(req)
        if refusal is not None:
            self._emit(Respond(key, refusal))
            return
        if req.method == "BYE" and self.state is CallState.RINGING:
            # A caller's BYE on the early dialog: taken as a CANCEL (the INVITE gets 487).
            self._emit(Respond(key, build_response(req, 200)))
            self.trace.append("the caller hung up while ringing")
            self._fail_call(487, "cancelled")
            return
        if req.method == "BYE":
            self._emit(Respond(key, dialog.respond(req, 200)))
            who = "caller" if from_caller else (self.winner.label if self.winner else "callee")
            self.trace.append(f"{who} hung up")
            self._hang_up(dialog, "answered", "normal", "caller" if from_caller else "callee")
            return
        other, peer = self._other(from_caller)
        if other is None or peer is None or other.is_terminated:
            self._emit(Respond(key, dialog.respond(req, 481)))
            return
        if req.method == "INVITE" and other.invite_in_progress:
            self._emit(Respond(key, dialog.respond(req, 491)))
            return
        body: bytes | None = None
        if self.anchor is not None and req.body and req.method in ("INVITE", "UPDATE"):
            anchored = self.anchor.offer_across(Side.A if from_caller else Side.B, req.body)
            body = self._apply(anchored) if anchored is not None else None
        out = copy_request(req, other, body=body)
        if from_caller and self._b_timer is not None and out.body and req.method == "INVITE":
            self._b_timer.offer = out.body  # what a re-INVITE refresh repeats (RFC 4028)
        relayed = _RelayedRequest(key, req, dialog, other, peer, out)
        ref = self._ref()
        self._pending[ref] = relayed
        self._emit(SendRequest(out, peer, ref))

    def _is_ours(self, dialog_id: DialogId | None) -> bool:
        if dialog_id == self.a_dialog.id:
            return True
        return any(leg.dialog is not None and leg.dialog.id == dialog_id for leg in self.legs)

    def _dialog_of(self, req: SipRequest) -> tuple[Dialog | None, bool]:
        dialog_id = DialogId.of_request(req)
        if dialog_id == self.a_dialog.id:
            return self.a_dialog, True
        winner = self.winner
        if winner is not None and winner.dialog is not None and winner.dialog.id == dialog_id:
            return winner.dialog, False
        return None, False

    def _other(self, from_caller: bool) -> tuple[Dialog | None, Peer | None]:
        if from_caller:
            winner = self.winner
            return (winner.dialog, winner.peer) if winner is not None else (None, None)
        return self.a_dialog, self.a_peer

    def _on_relayed_event(self, relayed: _RelayedRequest, event: TxEvent) -> None:
        if isinstance(event, ResponseReceived):
            resp = event.response
            if resp.status < 200:
                return
            other, out = relayed.other, relayed.out
            other.receive_response(resp)
            if resp.status < 300 and out.method in ("INVITE", "UPDATE"):
                for timer in (self.session_timer, self._b_timer):  # RFC 4028 section 10
                    if timer is not None:
                        timer.refreshed(self._now.monotonic)
            late = out.method == "INVITE" and resp.status < 300 and not out.body and resp.body
            if relayed.late_ack is not None:
                self._emit(SendStateless(relayed.late_ack, relayed.peer.address))  # again
            elif out.method == "INVITE" and resp.status < 300 and not late:
                self._emit(SendStateless(other.ack_for(resp), relayed.peer.address))
            if relayed.done:
                return
            relayed.done = True
            to_caller = relayed.dialog is self.a_dialog
            body = None
            if late and self.anchor is not None:
                relayed.late_2xx = resp
                anchored = self.anchor.offer_across(Side.B if to_caller else Side.A, resp.body)
                body = self._apply(anchored) if anchored is not None else None
            elif late:
                relayed.late_2xx = resp
            elif resp.status < 300 and resp.body and self.anchor is not None:
                anchored = self.anchor.answer_across(Side.A if to_caller else Side.B, resp.body)
                body = self._apply(anchored) if anchored is not None else None
            answer = relay_response(resp, relayed.request, relayed.dialog, body=body)
            self._emit(Respond(relayed.key, answer))
            if out.method == "INVITE" and resp.status < 300:
                winner = self.winner
                requester = self.a_peer if to_caller else (winner.peer if winner else None)
                if requester is not None:
                    self._start_retransmitter(answer, requester, initial=False)
                    if relayed.late_2xx is not None:
                        self._retransmissions[-1].relayed = relayed
        elif isinstance(event, TransactionTimedOut | TransportFailed) and not relayed.done:
            relayed.done = True
            self._emit(Respond(relayed.key, relayed.dialog.respond(relayed.request, 408)))

    # -- media events ------------------------------------------------------------------------------
    def _on_media_inactive(self, event: MediaInactive) -> None:
        if self.state is CallState.RINGING:
            # Silence while ringing is normal: measured again from the answer.
            self.silent_while_ringing.add(event.side)
            return
        if self.state is not CallState.ANSWERED:
            return
        anchor = self.anchor
        if anchor is not None and anchor.caller_offer is None and anchor.pending_offer is None:
            return  # a late offer whose 2xx made none: no media was ever agreed, nothing to miss
        seconds = self.snapshot.server.media.inactivity_seconds
        who = "caller" if event.side is Side.A else "callee"
        self.trace.append(f"no RTP from the {who} for {seconds}s: hang up")
        self._hang_up(None, "answered", "rtp_timeout")

    def _restart_silence(self) -> None:
        if self.anchor is not None:
            for side in sorted(self.silent_while_ringing, key=lambda s: s.value):
                self._emit(RestartSilence(side))

    # -- ending ------------------------------------------------------------------------------
    def _recording_failed(self, event: object = None) -> None:
        self.recording_path = None

    def _on_cancelled(self, event: object = None) -> None:
        if self.state is not CallState.RINGING:
            return
        self.trace.append("the caller cancelled")
        self._fail_call(487, "cancelled")

    def _on_shutdown(self, event: object = None) -> None:
        if self.ended:
            return
        self.trace.append("ended by server shutdown")
        if self.state is CallState.RINGING:
            self._fail_call(503, "failed", "shutdown")
        else:
            self._hang_up(None, "answered", "shutdown")

    def _fail_call(
        self,
        status: int,
        disposition: Disposition,
        cause: HangupCause | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """End an unanswered call: cancel every fork, answer the caller ``status``."""
        for leg in self.legs:
            self._cancel_leg(leg)
        if self.state is CallState.RINGING:
            response = self.a_dialog.respond(self.a_invite, status, headers=headers)
            self._emit(Respond(self.a_key, response))
        by: EndedBy = _ENDED_BY.get(disposition, "server")
        self._end(disposition, cause or _CAUSE_OF[disposition], by)

    def _hang_up(
        self,
        by: Dialog | None,
        disposition: Disposition,
        cause: HangupCause = "normal",
        ended_by: EndedBy = "server",
    ) -> None:
        """End an answered call: BYE to every leg except ``by`` (which hung up)."""
        winner = self.winner
        sides = [(self.a_dialog, self.a_peer)]
        if winner is not None and winner.dialog is not None:
            sides.append((winner.dialog, winner.peer))
        for dialog, peer in sides:
            if dialog is by or dialog.is_terminated or dialog.is_early:
                continue
            self._emit(SendRequest(dialog.new_request("BYE"), peer, bye=True))
        if winner is not None:
            winner.state = LegState.ENDED
        self._end(disposition, cause, ended_by)

    def _end(self, disposition: Disposition, cause: HangupCause, by: EndedBy) -> None:
        if self.ended:
            return
        self.state = CallState.ENDED
        self.ended = True
        self.ended_at = self._now.wall
        self.disposition = disposition
        self.hangup_cause, self.ended_by = cause, by
        self._ring_timers.clear()
        self._retransmissions.clear()
        self._asks.clear()
        if self._media_wanted:
            self._emit(CloseMedia())
        self._emit(WriteRecord(self.record(), opened=False))
        lines, self.lines = tuple(self.lines), []
        self._emit(CallEnded(disposition, lines, round(self.ended_at - self.started_at, 3)))

    # -- helpers ----------------------------------------------------------------------------------
    def _ref(self) -> int:
        self._next_ref += 1
        return self._next_ref

    def _hold_line(self, line: LineKey) -> None:
        self.lines.append(line)
        self._emit(HoldLine(line))

    def _apply(self, anchored: Anchored) -> bytes:
        """A re-anchored body; the relay learns where its party now is."""
        if anchored.remote is not None:
            self._emit(SetRemote(anchored.remote.side, anchored.remote.stream))
        return anchored.body

    def _via_contact(self, peer: Peer) -> tuple[Via, NameAddress]:
        """Our Via and Contact towards ``peer`` (one question to the locator for both)."""
        host, port = self._locator.local_address(peer.address[0], peer.reliable, peer.secure)
        kind = "TLS" if peer.secure else "TCP" if peer.reliable else "UDP"
        via = Via(kind, host, port, (("rport", None),))
        params: tuple[tuple[str, str | None], ...] = (
            (("transport", "tls" if peer.secure else "tcp"),) if peer.reliable else ()
        )
        return via, NameAddress(SipUri("sip", host, "pbx", port=port, params=params))


# What ``handle`` does with each kind of event: one dict lookup (a ``match`` on the classes
# would try them in turn, on every event).
_HANDLERS: dict[type, Callable[[CallCore, Any], None]] = {
    Started: CallCore._on_started,
    MediaReady: CallCore._on_media_ready,
    MediaFailed: CallCore._on_media_failed,
    MediaInactive: CallCore._on_media_inactive,
    PromptFinished: CallCore._on_prompt_finished,
    RecordingFailed: CallCore._recording_failed,
    Decided: CallCore._on_decided,
    TransactionEvent: CallCore._on_transaction_event,
    DialogRequestReceived: CallCore._on_dialog_request,
    AckReceived: CallCore._on_ack,
    CallerCancelled: CallCore._on_cancelled,
    TimerFired: CallCore._on_timer,
    ShutdownRequested: CallCore._on_shutdown,
}


_CAUSE_OF: dict[Disposition, HangupCause] = {
    "busy": "busy",
    "no_answer": "no_answer",
    "cancelled": "cancelled",
    "failed": "failed",
    "answered": "normal",
}
_ENDED_BY: dict[Disposition, EndedBy] = {"busy": "callee", "cancelled": "caller"}


def _max_forwards(req: SipRequest) -> int:
    value = req.max_forwards if req.max_forwards is not None else 70
    return max(1, min(70, value - 1))


def _diversion_headers(diversions: tuple[object, ...], host: str) -> list[tuple[str, str]]:
    """RFC 5806 Diversion values, most recent first, with their counters."""
    out = []
    for index, diversion in enumerate(diversions):
        counter = len(diversions) - index
        number = getattr(diversion, "number", "")
        reason = getattr(diversion, "reason", "")
        out.append(("Diversion", f"<sip:{number}@{host}>;reason={reason};counter={counter}"))
    return out


def _label(fork: Fork) -> str:
    if isinstance(fork, RingExtension):
        return fork.extension
    if isinstance(fork, DialOut):
        return fork.number
    return "009608"
