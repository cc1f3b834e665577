"""The call engine: the asyncio adapter that runs one ``pbx.call.core.CallCore`` per call.

Adapter (asyncio). The SIP edge hands it the requests of calls (``CallHandler``); it admits new
INVITEs (``pbx.call.admission``, digest through the service), feeds every call's core the events
with one clock reading each, and carries out the actions: SIP through the ``SipPort``, routing
questions to ``pbx.routing`` with the live lines, the relay, recorder and prompt player, the
call records, and one loop timer per call (``CallCore.get_timer``). All call logic is in the
core; this module only turns actions into I/O, as ``SipService`` does for transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from pbx.call import core as callcore
from pbx.call.admission import NeedsAuthentication, Refused, admit_invite, identify
from pbx.call.byes import ByeCounter
from pbx.call.core import CallCore, Peer
from pbx.call.encryption import admit_encrypted
from pbx.call.lines import LiveLines
from pbx.call.ports import CallRecords, ConfigSource, LineDirectory, SipPort
from pbx.clock import Clock, Instant
from pbx.config.model import MediaSettings
from pbx.errors import PbxError, RemoteProtocolError
from pbx.media.calls import CallMedia, MediaPlane
from pbx.media.relay import Side
from pbx.metrics import Registry
from pbx.routing.model import CallRequest, LineKey, LineLookup, LineState
from pbx.routing.router import next_step, start_call
from pbx.sip import entropy
from pbx.sip.build import build_response, new_tag
from pbx.sip.dialog import DialogId
from pbx.sip.edge import request_origin
from pbx.sip.message import SipRequest
from pbx.sip.transaction import ServerKey, TxEvent
from pbx.sip.transport import Inbound

log = structlog.get_logger("pbx.b2bua")

PROMPTS = Path(__file__).resolve().parent / "prompts"
PROMPT_NAMES = ("009608",)
FORGET_DIALOGS_SECONDS = 32.0  # a crossing BYE or a retransmission is still answered


class CallEngine:
    """The ``CallHandler`` of ``SipService``: runs every call's core."""

    def __init__(
        self,
        sip: SipPort,
        lines: LineDirectory,
        records: CallRecords,
        config: ConfigSource,
        metrics: Registry,
        clock: Clock,
        media: MediaPlane | None = None,  # the built-in relay unless given (rtpengine, issue #20)
    ) -> None:
        self.sip, self.lines, self.records, self.config = sip, lines, records, config
        self.clock = clock
        self.calls: dict[str, CallCore] = {}
        self.by_invite: dict[ServerKey, CallCore] = {}
        # Calls by the caller's Call-ID and From tag, for an ACK whose To tag is not ours.
        self.by_caller: dict[tuple[str, str], CallCore] = {}
        self.dialogs: dict[DialogId, CallCore] = {}
        self.line_calls: Counter[LineKey] = Counter()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        # Ended calls whose dialogs are forgotten FORGET_DIALOGS_SECONDS later, oldest first
        # (loop time): one timer for all of them, not one loop timer per call (issue #21).
        self._forgets: deque[tuple[float, CallCore]] = deque()
        self._forget_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.media: MediaPlane = media or CallMedia(clock.monotonic)
        self._prompt_names = frozenset(self.media.prompts)
        metrics.gauge(
            "pbx_rtp_ports_in_use",
            "RTP ports held by media sessions (RTCP ports not counted)",
            lambda: self.media.ports_in_use,
        )
        self.m_calls = metrics.counter("pbx_calls_total", "Calls ended, by disposition")
        self.media.counters.export(metrics)  # RTP/RTCP totals, summed per scrape
        metrics.gauge("pbx_calls_active", "Calls in progress", lambda: len(self.calls))
        self.draining = False  # ``drain``: new calls are refused while calls in progress finish
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        self._byes = ByeCounter()  # BYEs waiting for their answer (the drain waits for them)
        self._byes_answered = asyncio.Event()
        self._byes_answered.set()

    # -- CallHandler -----------------------------------------------------------------------------
    def on_request(
        self, key: ServerKey, request: SipRequest, inbound: Inbound, now: Instant
    ) -> None:
        try:
            if request.to.tag is None and request.method == "INVITE":
                self._new_call(key, request, inbound, now)
            elif request.to.tag is None:
                # Outside a dialog we take only INVITE (OPTIONS, REGISTER: in the service).
                self._refuse(key, request, Refused(481 if request.method == "BYE" else 405))
            else:
                dialog_id = DialogId.of_request(request)
                core = self.dialogs.get(dialog_id) if dialog_id is not None else None
                if core is None:
                    self._refuse(key, request, Refused(481))
                else:
                    self._run(core, callcore.DialogRequestReceived(key, request), now)
        except RemoteProtocolError as exc:
            log.info("call_request_refused", method=request.method, error=str(exc))
            self._refuse(key, request, Refused(exc.status_hint or 400))

    def on_ack(self, request: SipRequest, inbound: Inbound, now: Instant) -> None:
        dialog_id = DialogId.of_request(request)
        core = self.dialogs.get(dialog_id) if dialog_id is not None else None
        if core is None:
            core = self.by_caller.get((request.call_id, request.from_.tag or ""))
        if core is not None:
            self._run(core, callcore.AckReceived(request), now)

    def on_cancel(self, invite_key: ServerKey, cancel: SipRequest, now: Instant) -> None:
        core = self.by_invite.get(invite_key)
        if core is not None:
            log.info("call_cancelled", call=core.id)
            self._run(core, callcore.CallerCancelled(), now)

    def _new_call(self, key: ServerKey, req: SipRequest, inbound: Inbound, now: Instant) -> None:
        if self.draining:
            # RFC 3261 21.5.4: 503 with Retry-After tells callers and carriers to try later.
            response = build_response(req, 503, to_tag=new_tag(), headers=(("Retry-After", "60"),))
            self.sip.respond(key, response)
            return
        snapshot = self.config.current  # taken once: the call keeps it
        origin = request_origin(req, inbound.source, snapshot.server.sip.edge)  # issue #20
        admitted = admit_invite(snapshot, req, origin[0])
        admission = admit_encrypted(admitted, inbound.transport, req.body)  # issue #18
        if isinstance(admission, NeedsAuthentication):
            username = self.sip.authenticate(key, req, inbound, admission.tenant, now.wall)
            if username is None:
                return  # 401 sent
            admission = identify(admission, req, username)
            if isinstance(admission, Refused):
                log.warning("call_identity_mismatch", username=username, from_=str(req.from_))
        if isinstance(admission, Refused):
            self._refuse(key, req, admission)
            return
        tenant = admission.tenant.id if admission.tenant is not None else None
        core = CallCore(
            entropy.token_hex(8),
            snapshot,
            CallRequest(admission.origin, admission.dialled),
            tenant,
            admission.caller,
            admission.dialled,
            key,
            req,
            Peer(inbound.source, inbound.transport != "UDP", inbound.transport == "TLS"),
            new_tag(),
            locator=self.sip,
            sip_timers=self.sip.timers,
            prompts=self._prompt_names,
            now=now,
        )
        self.calls[core.id] = core
        self._no_calls.clear()
        self.by_invite[key] = core
        self.by_caller[(req.call_id, req.from_.tag or "")] = core
        log.debug("call_started", call=core.id, caller=core.caller, called=core.called)
        self._run(core, _STARTED, now)

    def _run(
        self, core: CallCore, event: callcore.CallEvent, now: Instant, *, flush: bool = False
    ) -> None:
        """Feed one event, carry out every action, re-arm the call's timer. The per-call
        boundary: an error is logged, the other actions still run, the server goes on."""
        try:
            core.handle(event, now)
        except Exception:
            log.exception("call_event_failed", call=core.id, event=type(event).__name__)
        # Only a routing answer (``_ask_routing``) and media opened at once (``_media_action``)
        # feed the core while we carry out.
        actions: list[callcore.CallAction] | None = core.take_actions()
        while actions:
            fed = False
            for action in actions:
                try:
                    if type(action) is callcore.Respond:  # the most frequent: no call between
                        self.sip.respond(action.key, action.response)
                    else:
                        fed = fed or type(action) in _FEEDS
                        _CARRY_OUT[type(action)](self, core, action, now)
                except Exception:
                    log.exception("call_action_failed", call=core.id, action=type(action).__name__)
            actions = core.take_actions() if fed else None
        deadline = core.get_timer()
        armed = self._timers.get(core.id)
        if deadline != (armed[0] if armed is not None else None) or (
            deadline is not None and core.ended
        ):
            self._rearm(core, deadline, armed)
        if flush:
            self.sip.flush()

    # What ``_run`` does with each kind of action: one dict lookup per action (``_CARRY_OUT``).
    def _send_request(self, core: CallCore, action: callcore.SendRequest, now: Instant) -> None:
        callback = self._callback(core, action.ref, action.bye)
        peer = action.peer
        self.sip.send_request(action.request, peer.address, callback, reliable=peer.reliable)

    def _ask_routing(self, core: CallCore, action: callcore.AskRouting, now: Instant) -> None:
        lines = self._lines(core, now)
        event, progress = action.event, action.progress
        if event is None or progress is None:
            decision = start_call(core.snapshot, core.request, now.utc, lines)
        else:
            decision = next_step(core.snapshot, progress, event, now.utc, lines)
        for line in decision.trace:
            log.debug("routing", call=core.id, trace=line)
        reach = lines.reach if isinstance(lines, LiveLines) else {}
        core.handle(callcore.Decided(decision, reach), now)

    def _media_action(self, core: CallCore, action: callcore.CallAction, now: Instant) -> None:
        match action:
            case callcore.OpenMedia():
                settings = core.snapshot.server.media
                bind_host = self.sip.media_bind_host()
                inactive = self._inactive(core)
                try:
                    ports = self.media.open_now(core.id, settings, bind_host, inactive)
                except Exception as exc:
                    core.handle(_media_failed(core, exc), now)
                    return
                if ports is None:  # rtpengine: asked over the network
                    self.media.spawn(self._open_media(core, settings, bind_host, inactive))
                else:  # the built-in relay: no task, no wait (issue #21)
                    core.handle(self._media_ready(core, ports), now)
            case callcore.SetRemote(side, stream):
                self.media.set_remote(core.id, side, stream)
            case callcore.RestartSilence(side):
                self.media.restart_silence(core.id, side)
            case callcore.StartRecording(path):
                self.media.spawn(self._record(core, Path(path)))
            case callcore.PlayPrompt(prompt, codec):
                self.media.play(core.id, prompt, codec, partial(self._prompt_played, core))
            case callcore.CloseMedia():
                self.media.release(core.id)

    def _prompt_played(self, core: CallCore, packets: int) -> None:
        self._run(core, callcore.PromptFinished(packets), self.clock.now(), flush=True)

    def _callback(self, core: CallCore, ref: int | None, bye: bool) -> Any:
        if bye:
            self._byes_answered.clear()
            return self._byes.track(self._byes_answered.set)
        if ref is None:
            return _ignore

        def on_event(event: TxEvent) -> None:
            self._run(core, callcore.TransactionEvent(ref, event), self.clock.now())

        return on_event

    def _rearm(
        self, core: CallCore, deadline: float | None, armed: tuple[float, Any] | None
    ) -> None:
        if deadline is not None and core.ended:
            deadline = None
        if armed is not None and armed[0] == deadline:
            return
        if armed is not None:
            armed[1].cancel()
            del self._timers[core.id]
        if deadline is not None:
            loop = self._running_loop()
            self._timers[core.id] = (deadline, loop.call_at(deadline, self._on_timer, core))

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        # Kept once known: ``asyncio.get_running_loop`` makes a system call (getpid) each time.
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _on_timer(self, core: CallCore) -> None:
        self._timers.pop(core.id, None)
        self._run(core, _TIMER_FIRED, self.clock.now(), flush=True)

    def _lines(self, core: CallCore, now: Instant) -> LineLookup:
        tenant = core.snapshot.tenants.get(core.tenant) if core.tenant else None
        if tenant is None:
            return LineState()
        return LiveLines(self.lines, tenant, now.wall, self.line_calls, self.sip.connection_alive)

    def _ended(self, core: CallCore, ended: callcore.CallEnded, now: Instant) -> None:
        for line in ended.lines:
            self.line_calls[line] -= 1
            if self.line_calls[line] <= 0:
                del self.line_calls[line]
        self.calls.pop(core.id, None)
        if not self.calls:
            self._no_calls.set()
        self.by_invite.pop(core.a_key, None)
        loop = self._running_loop()
        self._forgets.append((loop.time() + FORGET_DIALOGS_SECONDS, core))
        if self._forget_timer is None:
            self._forget_timer = loop.call_at(self._forgets[0][0], self._forget_due)
        self.m_calls.inc(disposition=ended.disposition)
        log.info(
            "call_ended",
            call=core.id,
            disposition=ended.disposition,
            answered_by=core.answered_by,
            duration=ended.duration,
        )

    def _forget_due(self) -> None:
        loop = self._running_loop()
        forgets, now = self._forgets, loop.time()
        while forgets and forgets[0][0] <= now:
            self._forget(forgets.popleft()[1])
        self._forget_timer = loop.call_at(forgets[0][0], self._forget_due) if forgets else None

    def _forget(self, core: CallCore) -> None:
        caller = (core.a_invite.call_id, core.a_invite.from_.tag or "")
        if self.by_caller.get(caller) is core:
            del self.by_caller[caller]
        for dialog_id in core.dialog_ids():
            if self.dialogs.get(dialog_id) is core:
                del self.dialogs[dialog_id]

    def _refuse(self, key: ServerKey, req: SipRequest, refused: Refused) -> None:
        response = build_response(req, refused.status, refused.reason, to_tag=new_tag())
        self.sip.respond(key, response)

    # -- media -----------------------------------------------------------------------------------
    def _inactive(self, core: CallCore) -> Callable[[Side], None]:
        def inactive(side: Side) -> None:
            log.info("media_inactive", call=core.id, side=side.value)
            self._run(core, callcore.MediaInactive(side), self.clock.now(), flush=True)

        return inactive

    def _media_ready(self, core: CallCore, ports: tuple[int, int]) -> callcore.MediaReady:
        return callcore.MediaReady(
            *ports,
            session_id=entropy.randbits(31),
            keys=self.media.srtp_keys(core.id),
            host=self.media.media_host(core.id),
        )

    async def _open_media(
        self,
        core: CallCore,
        settings: MediaSettings,
        bind_host: str,
        inactive: Callable[[Side], None],
    ) -> None:
        try:
            ports = await self.media.open(core.id, settings, bind_host, inactive)
        except Exception as exc:
            self._run(core, _media_failed(core, exc), self.clock.now(), flush=True)
            return
        if core.ended:
            self.media.release(core.id)
            return
        self._run(core, self._media_ready(core, ports), self.clock.now(), flush=True)

    async def _record(self, core: CallCore, path: Path) -> None:
        if not await self.media.record(core.id, path):
            self._run(core, callcore.RecordingFailed(), self.clock.now())

    # -- shutdown and views ----------------------------------------------------------------------
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
        for core in remaining:
            self._run(core, callcore.ShutdownRequested(), self.clock.now())
        self.sip.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bye_seconds):
                await self._byes_answered.wait()
        return len(remaining)

    def cut_drain(self) -> None:
        """Stop waiting for calls to end by themselves (a second SIGTERM)."""
        self._no_calls.set()

    async def stop(self) -> None:
        """Server shutdown: timers stop; open records are closed as failed at next start-up."""
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        self.media.close()  # the port pairs parked for reuse (issue #21)

    def calls_view(self) -> list[dict[str, object]]:
        """The active calls for ``GET /calls``."""
        return [core.view() for core in self.calls.values()]


_STARTED, _TIMER_FIRED = callcore.Started(), callcore.TimerFired()  # no fields: one of each
_CARRY_OUT: dict[type, Callable[[CallEngine, CallCore, Any, Instant], object]] = {
    callcore.Respond: lambda engine, _, act, now: engine.sip.respond(act.key, act.response),
    callcore.SendRequest: CallEngine._send_request,
    callcore.SendStateless: lambda engine, _, act, now: engine.sip.send_stateless(
        act.message, act.destination
    ),
    callcore.AskRouting: CallEngine._ask_routing,
    callcore.HoldLine: lambda engine, _, act, now: engine.line_calls.update((act.line,)),
    callcore.TrackDialog: lambda engine, core, act, now: engine.dialogs.setdefault(
        act.dialog_id, core
    ),
    callcore.WriteRecord: lambda engine, _, act, now: (
        engine.records.record_call if act.opened else engine.records.close_call
    )(act.record),
    callcore.CallEnded: CallEngine._ended,
    **dict.fromkeys(callcore.MEDIA_ACTIONS, CallEngine._media_action),
}


# The actions whose carrying out may feed the core an answer at once (see ``_run``).
_FEEDS = (callcore.AskRouting, callcore.OpenMedia)


def _media_failed(core: CallCore, exc: Exception) -> callcore.MediaFailed:
    """What the core hears when its media could not be opened, logged. The per-call
    boundary: an unexpected error fails the call, the server goes on."""
    if isinstance(exc, PbxError | OSError):
        log.warning("media_unavailable", call=core.id, error=str(exc))
        return callcore.MediaFailed(str(exc))
    log.exception("media_open_failed", call=core.id)
    return callcore.MediaFailed(repr(exc))


def _ignore(event: TxEvent) -> None:
    """Callback for requests whose outcome changes nothing (CANCEL, a loser's BYE)."""
