"""The SIP service: runs the sans-IO cores on every message the transport delivers.

For each datagram or TCP frame: the abuse guard (bans, rate limit; trunks exempt) -> the parser
(a malformed request gets its error response when enough of it could be read; anything else is
dropped and logged with its source) -> ``received``/``rport`` stamped into the top Via (RFC 3261
18.2.1, RFC 3581) -> the transaction table (retransmissions absorbed there) -> the RFC 3261 8.2
checks -> the handler for the method: OPTIONS here, REGISTER through digest authentication and
the registrar, calls to the call engine.

Responses always go back to the source address and port of the request, over the connection it
came on (symmetric response routing, docs/design.md section 3).
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable, Sequence
from functools import partial
from hashlib import blake2s, sha256
from typing import Any, Protocol

import structlog

from pbx.call.admission import (
    NeedsAuthentication,
    Refused,
    admit_invite,
    dialled_number,
    tenant_of,
)
from pbx.call.encryption import admit_encrypted, register_refusal
from pbx.clock import Clock, Instant
from pbx.config.holder import ConfigHolder
from pbx.config.model import ConfigSnapshot, Extension, TenantConfig
from pbx.errors import RemoteProtocolError
from pbx.immutable import immutable
from pbx.keepalive import ContactStoppedAnswering, KeepAlive, Probe
from pbx.loglimit import LogLimiter, truncate
from pbx.metrics import Registry
from pbx.registrar import (
    Binding,
    BindingKey,
    Presence,
    RegisterResult,
    Registrations,
    Source,
    ha1_lookup,
    process_register,
    resolve_aor,
)
from pbx.security import SourceGuard, Verdict, cost_of, starts_work
from pbx.sip.build import build_response, new_tag, reason_phrase
from pbx.sip.digest import Algorithm, AuthResult, DigestAuthenticator, authorization_values
from pbx.sip.edge import first_hop, path_echo, path_of, request_origin
from pbx.sip.limits import CapExceeded, MessageCaps, check_caps, method_label, status_label
from pbx.sip.message import (
    MAGIC_COOKIE,
    Address,
    CallId,
    CSeq,
    NameAddress,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUri,
    Tag,
    Via,
)
from pbx.sip.parse import SipParseError, is_keepalive, parse_message, read_partial
from pbx.sip.transaction import (
    AckReceived,
    RequestReceived,
    ServerKey,
    SipTimers,
    TransactionTable,
    TransactionTerminated,
    TxEvent,
    UnmatchedResponseReceived,
)
from pbx.sip.transport import STREAM_TRANSPORTS, Inbound, SipTransport, TransportName
from pbx.sip.validate import ACCEPT_HEADER, ALLOW_HEADER, SUPPORTED_HEADER, validate_request
from pbx.store import Store, StoreUnavailable
from pbx.system_clock import SystemClock

log = structlog.get_logger("pbx.service")

HOUSEKEEPING_SECONDS = 1.0
# Transaction timers fire on a 20 ms grid. Under load thousands of transactions end each second
# (timers J and K) at distinct instants; one callback per slot instead of one per transaction.
# RFC 3261 timers are 0.5 s and longer, so 20 ms late is well inside their tolerance.
TIMER_SLOT_SECONDS = 0.02
PURGE_SECONDS = 60.0
STORE_RETRY_AFTER_SECONDS = 10  # issue #20: a REGISTER refused while the database is away
# Keep-alive probes fire on a 100 ms grid: with 10,000 contacts every 30 s, about 33 OPTIONS
# leave per wake-up instead of one wake-up per probe (the spread over the interval stays even).
KEEPALIVE_SLOT_SECONDS = 0.1
# The reasons of pbx_sip_messages_dropped_total (README, Metrics): the guard's verdicts, NAT
# keep-alive datagrams, unparseable messages, messages over a cap (``pbx.sip.limits``),
# responses matching no transaction.
DROP_REASONS = ("banned", "throttled", "keepalive", "malformed", "over_cap", "stray_response")


class CallHandler(Protocol):
    """The call engine's side of the service (INVITE, CANCEL, in-dialog requests, ACK); ``now``
    is the clock reading taken when the datagram arrived."""

    def on_request(
        self, key: ServerKey, request: SipRequest, inbound: Inbound, now: Instant
    ) -> None: ...

    def on_ack(self, request: SipRequest, inbound: Inbound, now: Instant) -> None: ...

    def on_cancel(self, invite_key: ServerKey, cancel: SipRequest, now: Instant) -> None: ...


ResponseCallback = Callable[[TxEvent], None]


@immutable
class Stateless:
    """Answer a request outside any transaction (RFC 3261 8.2.7): straight to ``destination``,
    with a To tag derived from the request, so that a retransmission gets the same one."""

    destination: Address
    tag: Tag


# How a request is answered: through its server transaction, or statelessly.
ReplyKey = ServerKey | Stateless


def stateless_tag(request: SipRequest, secret: bytes) -> Tag:
    """A To tag that is the same for every copy of ``request`` (RFC 3261 8.2.7, 19.3): a keyed
    hash of what identifies the request, 64 bits."""
    top = request.via[0] if request.via else None
    ident = "\n".join(
        (
            request.call_id,
            request.from_.tag or "",
            str(request.cseq.number),
            (top.branch or "") if top is not None else "",
        )
    )
    return Tag(blake2s(ident.encode(), key=secret, digest_size=8).hexdigest())


def _tag_for(key: ReplyKey) -> Tag:
    return key.tag if isinstance(key, Stateless) else new_tag()


class SipService:
    """Everything between the sockets and the registrar / call engine."""

    def __init__(
        self,
        holder: ConfigHolder,
        store: Store,
        metrics: Registry,
        clock: Clock | None = None,
    ) -> None:
        snapshot = holder.current
        self.clock: Clock = clock or SystemClock()
        self.holder = holder
        self.store = store
        self.metrics = metrics
        self.table = TransactionTable(SipTimers())
        self.guard = SourceGuard(snapshot.server.security, _guard_exempt(snapshot))
        self._secret = _nonce_secret(snapshot)
        self.digest = _authenticator(self._secret, snapshot)
        self.registrations = Registrations()
        # Keep-alive checks of the contacts (pbx.keepalive): the Call-IDs of its OPTIONS start
        # with a random prefix, so an answer is told from any other stray response.
        self.keepalive = KeepAlive(f"qualify-{secrets.token_hex(6)}-")
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_at: float | None = None
        self.calls: CallHandler | None = None
        self.transport: SipTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client_callbacks: dict[object, ResponseCallback] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._pending_registers = 0
        # harden (issue 17): what one message may cost, and how much is logged about bad input.
        self.caps = MessageCaps()
        self.log_limit = LogLimiter()
        metrics.counter(
            "pbx_log_lines_suppressed_total",
            "Log lines about bad input not written (per-source log rate limit)",
            lambda: self.log_limit.suppressed_total,
        )
        self.m_in = metrics.counter("pbx_sip_messages_in_total", "SIP messages received")
        self.m_out = metrics.counter("pbx_sip_messages_out_total", "SIP messages sent")
        self.m_dropped = metrics.counter(
            "pbx_sip_messages_dropped_total", "SIP messages dropped, by reason"
        )
        for reason in DROP_REASONS:  # every reason exposed from the start, at 0 (issue 19)
            self.m_dropped.inc(0, reason=reason)
        self.m_auth_failures = metrics.counter(
            "pbx_auth_failures_total", "Failed digest authentications"
        )
        self.m_bans = metrics.counter("pbx_bans_total", "Sources banned")
        self.m_register_unstored = metrics.counter(
            "pbx_register_store_unavailable_total",
            "REGISTERs refused (503) because the database could not be reached",
        )
        metrics.gauge(
            "pbx_registrations",
            "Registered contacts (unexpired bindings)",
            lambda: len(self.registrations),
        )
        metrics.gauge("pbx_transactions", "Live SIP transactions", lambda: len(self.table))
        metrics.gauge(
            "pbx_registrations_unreachable",
            "Registered contacts marked unreachable (keep-alive unanswered, TCP closed)",
            lambda: len(self.registrations.unreachable),
        )
        metrics.counter(
            "pbx_keepalive_probes_total",
            "Keep-alive OPTIONS sent to registered contacts (retries included)",
            lambda: self.keepalive.probes_sent,
        )
        metrics.counter(
            "pbx_sip_retransmissions_received_total",
            "Requests received again and absorbed by their transaction",
            lambda: self.table.retransmissions_received,
        )
        metrics.counter(
            "pbx_sip_retransmissions_sent_total",
            "Messages sent again (timers A, E, G; answers to retransmitted requests)",
            lambda: self.table.retransmissions_sent,
        )

    # -- life cycle ------------------------------------------------------------------------
    def attach(self, transport: SipTransport) -> None:
        self.transport = transport
        transport.on_connection_closed = self._on_connection_closed
        transport.on_connection_activity = self._on_connection_activity
        transport.on_send_failed = self._on_send_failed

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        wall = self.clock.wall()
        bindings = await self.store.load_bindings(wall)
        self.registrations = Registrations(bindings)
        # Loaded bindings keep their phase (no burst of probes at start-up).
        self._track_all(self.holder.current, self.clock.monotonic(), fresh=False)
        self._rearm_keepalive()
        for host, until in await self.store.load_bans(wall):
            self.guard.restore_ban(host, until, wall)
        purged = await self.store.purge_expired(wall)
        log.info("registrations_loaded", bindings=len(bindings), purged=purged)
        self._housekeeping = self._loop.create_task(self._housekeep(), name="pbx-housekeeping")

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def config_changed(self, old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        """A reload: new settings for the guard and auth; bindings of removed users dropped."""
        self.guard.update(new.server.security, _guard_exempt(new))
        if new.server.auth != old.server.auth:
            # Changed in place: a new authenticator would forget the nonces already used, and
            # their Authorization headers could be replayed.
            self.digest.algorithms = new.server.auth.algorithms
            self.digest.nonce_ttl = float(new.server.auth.nonce_seconds)
        gone = [
            b
            for b in self.registrations
            if b.tenant not in new.tenants or b.extension not in new.tenants[b.tenant].users
        ]
        for binding in gone:
            self.registrations.remove(binding)
            self.keepalive.forget(binding.key)
        self._track_all(new, self.clock.monotonic(), fresh=False)
        self._rearm_keepalive()
        if gone:
            await self.store.apply_bindings((), gone)
            log.info(
                "registrations_dropped",
                reason="user removed",
                bindings=[f"{b.tenant}/{b.extension} {b.contact}" for b in gone],
            )

    # -- inbound ---------------------------------------------------------------------------
    def on_inbound(self, packet: Inbound) -> None:
        """Entry point for every message (transport callback)."""
        now = self.clock.now()  # read once per datagram, passed down
        try:
            self._receive(packet, now)
        except Exception:  # the per-datagram boundary: one bad message never stops the server
            log.exception("inbound_failed", source=packet.source, transport=packet.transport)
        self._flush()
        self._rearm()

    def _receive(self, packet: Inbound, now: Instant) -> None:
        # Only requests that start work are charged (issue 16): responses, ACKs and keep-alives
        # cost nothing, so a phone's own 180/200 never throttle its next request (a banned
        # source is still dropped whole).
        cost = cost_of(len(packet.data)) if starts_work(packet.data) else 0.0
        verdict = self.guard.admit(packet.source[0], now.wall, cost)
        if verdict is not Verdict.ALLOWED:
            self.m_dropped.inc(reason=verdict.value)
            self._drain_guard_events()
            return
        if packet.transport == "UDP" and is_keepalive(packet.data):
            # NAT keep-alives (CRLF, NUL, space datagrams) that phones send: nothing to answer.
            self.m_dropped.inc(reason="keepalive")
            return
        if packet.connection_id is not None and packet.source[0] in self.guard.exempt:
            self._trust_connection(packet)  # a trunk's connection
        exceeded = check_caps(packet.data, self.caps)
        if exceeded is not None:
            self._answer_over_cap(packet, exceeded, now)
            return
        try:
            msg = parse_message(
                packet.data, stream=packet.transport in STREAM_TRANSPORTS, source=packet.source
            )
        except SipParseError as exc:
            self._answer_unparseable(packet, exc, now)
            return
        if isinstance(msg, SipRequest):
            self.m_in.inc(method=method_label(msg.method))
            if not self._admit_behind_edge(msg, packet, now):
                return
            if msg.method == "REGISTER" and msg.header("Authorization") is None:
                # Nothing to authenticate: the answer is a challenge (or a 400/404), given
                # statelessly as RFC 3261 8.2.7 describes. No transaction is kept for it; a
                # retransmission is simply answered again.
                key = Stateless(packet.source, stateless_tag(msg, self._secret))
                if self._valid(key, msg):
                    self._register(key, msg, packet, now.wall)
                return
            if self._needs_invite_challenge(msg, packet):
                # The same for a phone's INVITE without credentials (issue 17, item 6): a 401
                # through a server transaction was retransmitted ~11 times to any, possibly
                # spoofed, source. The INVITE's own retransmissions get the same answer again.
                key = Stateless(packet.source, stateless_tag(msg, self._secret))
                if self._valid(key, msg):
                    self._challenge_invite(key, msg, packet, now.wall)
                return
        else:
            self.m_in.inc(status=status_label(msg.status))
        events = self.table.receive(
            msg, packet.source, now.monotonic, reliable=packet.transport in STREAM_TRANSPORTS
        )
        for event in events:
            self._on_event(event, packet, now)

    def _answer_unparseable(self, packet: Inbound, exc: SipParseError, now: Instant) -> None:
        partial = exc.partial
        answer = None
        if partial is not None:
            answer = partial.error_response(
                exc.status_hint, reason_phrase(exc.status_hint), str(new_tag())
            )
        self.m_dropped.inc(reason="malformed")
        self._log_bad_input(
            "malformed_message",
            packet,
            now,
            error=str(exc),
            answered=exc.status_hint if answer else None,
        )
        if answer is not None and self.transport is not None:
            self.transport.send(answer, packet.source, packet.transport)
            self.m_out.inc(status=status_label(exc.status_hint))

    def _answer_over_cap(self, packet: Inbound, exceeded: CapExceeded, now: Instant) -> None:
        """A message over a cap of ``pbx.sip.limits``: answered from its raw lines, unparsed."""
        answer = read_partial(packet.data).error_response(
            exceeded.status, exceeded.reason, str(new_tag())
        )
        self.m_dropped.inc(reason="over_cap")
        self._log_bad_input(
            "message_over_cap",
            packet,
            now,
            error=exceeded.what,
            answered=exceeded.status if answer else None,
        )
        if answer is not None and self.transport is not None:
            self.transport.send(answer, packet.source, packet.transport)
            self.m_out.inc(status=status_label(exceeded.status))

    def _log_bad_input(self, event: str, packet: Inbound, now: Instant, **fields: Any) -> None:
        """A line about bad input: values truncated, at most a few per source (with the count
        of lines suppressed since the last one), issue 17 item 4."""
        suppressed = self.log_limit.allow(packet.source[0], now.monotonic)
        if suppressed is None:
            return
        log.info(
            event,
            source=packet.source,
            transport=packet.transport,
            suppressed=suppressed,
            **{k: truncate(v) if isinstance(v, str) else v for k, v in fields.items()},
        )

    def _on_event(self, event: TxEvent, packet: Inbound, now: Instant) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event.key, event.request, packet, now)
        elif isinstance(event, AckReceived):
            if self.calls is not None:
                self.calls.on_ack(event.request, packet, now)
        elif isinstance(event, UnmatchedResponseReceived):
            response = event.response
            if response.cseq.method == "OPTIONS" and self.keepalive.answered(
                response.call_id, now.monotonic
            ):
                # Any status counts: a 404/405/501 comes from a phone that is there.
                self._drain_keepalive()
                return
            self.m_dropped.inc(reason="stray_response")
            # Not an answer to us: charged after all, like a request (a flood of them is not free).
            self.guard.admit(packet.source[0], now.wall, cost_of(len(packet.data)))
            self._drain_guard_events()
            log.debug("stray_response", source=packet.source, status=event.response.status)
        else:
            self._on_client_event(event)

    def _on_client_event(self, event: TxEvent) -> None:
        key = getattr(event, "key", None)
        callback = self._client_callbacks.get(key)
        if callback is not None:
            if isinstance(event, TransactionTerminated):
                del self._client_callbacks[key]
            callback(event)

    # -- requests --------------------------------------------------------------------------
    def _valid(self, key: ReplyKey, req: SipRequest) -> bool:
        """RFC 3261 8.2 checks; answers the request itself when it fails them."""
        rejection = validate_request(req)
        if rejection is None:
            return True
        self.respond(
            key,
            build_response(
                req,
                rejection.status,
                rejection.reason,
                to_tag=_tag_for(key),
                headers=rejection.headers,
            ),
        )
        return False

    def _on_request(self, key: ServerKey, req: SipRequest, packet: Inbound, now: Instant) -> None:
        if not self._valid(key, req):
            return
        method = req.method
        if method == "OPTIONS":
            self.respond(key, build_response(req, 200, to_tag=_tag_for(key), headers=_CAPABILITIES))
        elif method == "REGISTER":
            self._register(key, req, packet, now.wall)
        elif method == "CANCEL":
            invite = self.table.find_invite_for_cancel(req, packet.source)
            if invite is None:
                self.respond(key, build_response(req, 481, to_tag=_tag_for(key)))
                return
            self.respond(key, build_response(req, 200, to_tag=_tag_for(key)))
            if self.calls is not None:
                self.calls.on_cancel(invite.key, req, now)
        elif self.calls is not None and (realm := self._no_tenant_realm(req, packet)):
            # harden (issue 17 item 7): credentials for a domain no tenant serves fail like a
            # wrong password does at a tenant (401, counted), not 404 from the call engine.
            auth = self.digest.verify(
                "INVITE", authorization_values(req.headers), realm, _no_users, now.wall
            )
            self._challenge(key, req, packet, realm, auth, now.wall)
        elif self.calls is not None:
            self.calls.on_request(key, req, packet, now)
        elif method == "INVITE":
            self.respond(
                key,
                build_response(req, 503, to_tag=_tag_for(key), headers=(("Retry-After", "60"),)),
            )
        else:
            # No dialog can exist without the call engine (RFC 3261 12.2.2).
            self.respond(key, build_response(req, 481, to_tag=_tag_for(key)))

    # -- REGISTER (RFC 3261 10.3, with digest authentication) -------------------------------
    def _register(self, key: ReplyKey, req: SipRequest, packet: Inbound, wall: float) -> None:
        snapshot = self.holder.current
        try:
            aor = resolve_aor(req, snapshot)
        except RemoteProtocolError as exc:
            if exc.status_hint == 404 and isinstance(req.to.uri, SipUri):
                # A domain no tenant serves is answered as a tenant's would be (issue 17, item
                # 7): a challenge in its own realm, which no credentials can pass. A 404 here
                # and a 401 there told which domains are tenants.
                realm = req.to.uri.host
                auth = self.digest.verify(
                    "REGISTER", authorization_values(req.headers), realm, _no_users, wall
                )
                self._challenge(key, req, packet, realm, auth, wall)
                return
            self.respond(key, build_response(req, exc.status_hint, to_tag=_tag_for(key)))
            return
        tenant = snapshot.tenants[aor.tenant]
        refusal = register_refusal(tenant, packet.transport)  # issue #18: before any challenge
        if refusal is not None:
            log.info("register_refused_unencrypted", aor=str(aor), source=packet.source)
            self.respond(
                key, build_response(req, refusal.status, refusal.reason, to_tag=_tag_for(key))
            )
            return
        algorithms = tenant.digest_algorithms(snapshot.server.auth)
        auth = self.digest.verify(
            "REGISTER",
            authorization_values(req.headers),
            aor.domain,
            ha1_lookup(tenant),
            wall,
            algorithms=algorithms,
        )
        if not auth.ok:
            self._challenge(key, req, packet, tenant.domain, auth, wall, algorithms)
            return
        self._trust_connection(packet)
        if not self.store.available:
            # issue #20: the shared database is unreachable; calls go on, bindings wait.
            self._refuse_unstored(key, req, aor)
            return
        edges = snapshot.server.sip.edge
        origin = request_origin(req, packet.source, edges)  # issue #20: behind an edge
        source = Source(
            origin[0],
            origin[1],
            packet.transport,
            str(packet.connection_id) if packet.connection_id is not None else None,
            path=path_of(req, packet.source, edges),
        )
        result = process_register(
            req,
            aor,
            self.registrations.bindings_of(aor.tenant, aor.extension),
            config=snapshot,
            source=source,
            now=wall,
            authenticated_user=auth.username,
        )
        response = build_response(
            req,
            result.status,
            result.reason,
            to_tag=_tag_for(key),
            contact=result.contacts,
            headers=(*result.headers, *path_echo(req, source.path)),
        )
        if not result.ok:
            self.respond(key, response)
            return
        previous = self.registrations.bindings_of(aor.tenant, aor.extension)
        before = {b.contact_key for b in previous}
        self.registrations.apply(result)
        self._track(tenant, result.saved, result.removed)
        # A new or removed contact is worth an info line; a refresh (most REGISTERs) is debug.
        changed = before != {b.contact_key for b in result.bindings}
        (log.info if changed else log.debug)(
            "registered",
            aor=str(aor),
            source=packet.source,
            transport=packet.transport,
            bindings=len(result.bindings),
            saved=len(result.saved),
            removed=len(result.removed),
        )
        if not (result.saved or result.removed):
            self.respond(key, response)
            return
        # Write-through: the 200 leaves once the change is committed.
        committed = self.store.write_bindings(result.saved, result.removed)
        committed.add_done_callback(partial(self._undo_unstored, result, previous))
        committed.add_done_callback(partial(self._respond_when_stored, key, response))

    # -- issue #20: a REGISTER whose write failed leaves nothing in memory ----------
    def _undo_unstored(
        self,
        result: RegisterResult,
        previous: tuple[Binding, ...],
        committed: asyncio.Future[int],
    ) -> None:
        """The write failed (503/500 to the phone): put the AOR back as the database has it,
        ``previous`` for the contacts this REGISTER touched, unless a later REGISTER has
        changed them since."""
        if not committed.cancelled() and committed.exception() is None:
            return
        aor = result.aor
        prior = {b.contact_key: b for b in previous}
        now = {b.contact_key: b for b in self.registrations.bindings_of(aor.tenant, aor.extension)}
        for binding in result.saved:
            if now.get(binding.contact_key) == binding:
                old = prior.get(binding.contact_key)
                if old is None:
                    del now[binding.contact_key]
                else:
                    now[binding.contact_key] = old
        for binding in result.removed:
            now.setdefault(binding.contact_key, binding)
        changed, gone = self.registrations.replace_aor(aor.tenant, aor.extension, now.values())
        self.shared_bindings_changed(changed, gone)
        log.info("registration_undone", aor=str(aor), restored=len(changed), dropped=len(gone))

    def shared_bindings_changed(self, changed: Sequence[Binding], gone: Sequence[Binding]) -> None:
        """Changes read from the shared database (``pbx.binding_sync``): another node's contacts
        are its to probe; ours (``node`` None) are checked as after a REGISTER."""
        snapshot = self.holder.current
        for binding in gone:
            self.keepalive.forget(binding.key)
        for binding in changed:
            tenant = snapshot.tenants.get(binding.tenant)
            if binding.node is not None or tenant is None:
                self.keepalive.forget(binding.key)
            else:
                self._track(tenant, (binding,), ())

    def _refuse_unstored(self, key: ReplyKey, req: SipRequest, aor: object) -> None:
        """503 with Retry-After: the binding cannot be stored now (issue #20)."""
        self.m_register_unstored.inc()
        log.warning("register_refused_store_unavailable", aor=str(aor))
        retry = (("Retry-After", str(STORE_RETRY_AFTER_SECONDS)),)
        self.respond(key, build_response(req, 503, to_tag=_tag_for(key), headers=retry))

    def _respond_when_stored(
        self, key: ReplyKey, response: SipResponse, committed: asyncio.Future[int]
    ) -> None:
        if committed.cancelled() or committed.exception() is not None:
            # A storage failure: tell the phone instead of pretending.
            error = None if committed.cancelled() else committed.exception()
            log.error("registration_not_stored", error=repr(error))
            unreachable = isinstance(error, StoreUnavailable)  # issue #20: come back later
            response = SipResponse(
                503 if unreachable else 500,
                "Service Unavailable" if unreachable else "Server Internal Error",
                response.via,
                response.from_,
                response.to,
                response.call_id,
                response.cseq,
                headers=((("Retry-After", str(STORE_RETRY_AFTER_SECONDS)),) if unreachable else ()),
            )
        if isinstance(key, Stateless) or key in self.table:
            self.respond(key, response)
            self._flush()
            self._rearm()

    def _challenge(
        self,
        key: ReplyKey,
        req: SipRequest,
        packet: Inbound,
        realm: str,
        auth: AuthResult,
        wall: float,
        algorithms: Sequence[Algorithm] | None = None,
    ) -> None:
        """A 401 in ``realm`` offering ``algorithms`` (a tenant's own list; None: the server's)."""
        if auth.failed:
            self.m_auth_failures.inc()
            host = self.origin(req, packet)[0]
            log.warning(
                "auth_failed",
                source=packet.source,
                realm=truncate(realm),
                reason=auth.reason,
                method=req.method,
            )
            self.guard.record_failure(host, wall)
            self._drain_guard_events()
        challenges = self.digest.challenge(realm, wall, stale=auth.stale, algorithms=algorithms)
        headers = tuple(("WWW-Authenticate", value) for value in challenges)
        self.respond(key, build_response(req, 401, to_tag=_tag_for(key), headers=headers))

    def authenticate(
        self, key: ServerKey, req: SipRequest, packet: Inbound, tenant: TenantConfig, wall: float
    ) -> str | None:
        """Digest-check a phone's request (INVITE etc.); answers 401 itself on failure."""
        algorithms = tenant.digest_algorithms(self.holder.current.server.auth)
        auth = self.digest.verify(
            req.method,
            authorization_values(req.headers),
            tenant.domain,
            ha1_lookup(tenant),
            wall,
            algorithms=algorithms,
        )
        if auth.ok:
            self._trust_connection(packet)
            return auth.username
        self._challenge(key, req, packet, tenant.domain, auth, wall, algorithms)
        return None

    # -- INVITE without credentials: a stateless challenge (issue 17, item 6) ----------------
    def _needs_invite_challenge(self, req: SipRequest, packet: Inbound) -> bool:
        """A new INVITE from a phone (not a trunk) with no credentials: its answer is a
        challenge (or a refusal) that needs no transaction."""
        return (
            req.method == "INVITE"
            and req.to.tag is None
            and self.calls is not None
            and req.header("Authorization") is None
            and self.holder.current.trunk_for_host(self.origin(req, packet)[0]) is None
        )

    def _challenge_invite(
        self, key: Stateless, req: SipRequest, packet: Inbound, wall: float
    ) -> None:
        snapshot = self.holder.current
        admitted = admit_invite(snapshot, req, self.origin(req, packet)[0])
        admission = admit_encrypted(admitted, packet.transport, req.body)  # issue #18
        algorithms = None
        if isinstance(admission, NeedsAuthentication):
            realm = admission.tenant.domain
            algorithms = admission.tenant.digest_algorithms(snapshot.server.auth)
        elif tenant_of(snapshot, req) is None and isinstance(req.from_.uri, SipUri):
            realm = req.from_.uri.host  # no tenant: challenged alike, as REGISTER is
        else:
            refused = admission if isinstance(admission, Refused) else Refused(400)
            self.respond(key, build_response(req, refused.status, refused.reason, to_tag=key.tag))
            return
        challenges = self.digest.challenge(realm, wall, algorithms=algorithms)
        headers = tuple(("WWW-Authenticate", value) for value in challenges)
        self.respond(key, build_response(req, 401, to_tag=key.tag, headers=headers))

    def _no_tenant_realm(self, req: SipRequest, packet: Inbound) -> str | None:
        """The realm (the From host) of a phone's new INVITE that names no tenant and that the
        call engine would refuse with 404 for that reason alone; None otherwise."""
        if req.method != "INVITE" or req.to.tag is not None:
            return None
        snapshot = self.holder.current
        admission = admit_invite(snapshot, req, self.origin(req, packet)[0])
        if (
            isinstance(admission, Refused)
            and admission.status == 404
            and dialled_number(req) is not None
            and tenant_of(snapshot, req) is None
            and isinstance(req.from_.uri, SipUri)
        ):
            return req.from_.uri.host
        return None

    # -- issue #20: requests through a trusted SIP edge (pbx.sip.edge) ----------------------
    def origin(self, req: SipRequest, packet: Inbound) -> Address:
        """Where ``req`` really came from: the edge's Via received/rport when ``packet`` came
        from a configured edge, else the packet's source."""
        return request_origin(req, packet.source, self.holder.current.server.sip.edge)

    def _admit_behind_edge(self, req: SipRequest, packet: Inbound, now: Instant) -> bool:
        """The abuse guard for a request relayed by an edge (the edge itself is exempt): bans
        and rate limits apply to the phone or carrier it came from."""
        origin = self.origin(req, packet)
        if origin == packet.source:
            return True
        verdict = self.guard.admit(origin[0], now.wall, cost_of(len(packet.data)))
        if verdict is Verdict.ALLOWED:
            return True
        self.m_dropped.inc(reason=verdict.value)
        self._drain_guard_events()
        return False

    def _trust_connection(self, packet: Inbound) -> None:
        """A request authenticated over TCP: its connection is a phone's, keep it (issue 17,
        item 5: unauthenticated connections expire fast and are evicted first)."""
        if packet.connection_id is not None and self.transport is not None:
            self.transport.trust(packet.connection_id)

    # -- what the call engine asks of the SIP edge (``pbx.b2bua.SipPort``) -------------------
    @property
    def timers(self) -> SipTimers:
        """T1, T2 and T4 of this service's transactions."""
        return self.table.timers

    def local_address(
        self, dest_host: str, reliable: bool, secure: bool = False
    ) -> tuple[str, int]:
        """Our address and port for Via/Contact/SDP towards ``dest_host``: the listening
        socket of that transport (TLS when ``secure``), ``[sip] advertise`` when set, else (a
        wildcard listener) the address the kernel routes ``dest_host`` from."""
        transport = self.transport
        wanted = "TLS" if secure else "TCP" if reliable else "UDP"
        host, port = "127.0.0.1", 5060
        if transport is not None:
            for listen in transport.listening:
                if listen.transport == wanted:
                    host, port = listen.host, listen.port
                    break
        advertise = self.holder.current.server.sip.advertise
        if advertise:
            host = advertise
        elif host in ("0.0.0.0", "::", "") and transport is not None:
            host = transport.local_address_towards(dest_host)
        return host, port

    def media_bind_host(self) -> str:
        """Where the RTP relay binds: the UDP listening address."""
        if self.transport is not None:
            for listen in self.transport.listening:
                if listen.transport == "UDP":
                    return listen.host
        return "0.0.0.0"

    def connection_alive(self, connection_id: str | None) -> bool:
        """Whether the TCP connection a contact registered over is still open."""
        return (
            self.transport is not None
            and connection_id is not None
            and connection_id.isdigit()
            and self.transport.connection_alive(int(connection_id))
        )

    def presence(self, tenant: TenantConfig, extension: Extension, wall: float) -> Presence:
        """Which contacts a call to ``extension`` would ring now."""
        return self.registrations.presence(tenant, extension, wall)

    # -- output ------------------------------------------------------------------------------
    def respond(self, key: ReplyKey, response: SipResponse) -> None:
        if isinstance(key, Stateless):
            self.table.send_stateless(response, key.destination)
            return
        for event in self.table.respond(key, response, self.clock.monotonic()):
            self._on_client_event(event)

    def send_request(
        self,
        request: SipRequest,
        destination: Address,
        callback: ResponseCallback,
        *,
        reliable: bool = False,
    ) -> object:
        """Start a client transaction; ``callback`` gets its events (responses, time-out)."""
        key = self.table.send_request(
            request, destination, self.clock.monotonic(), reliable=reliable
        )
        self._client_callbacks[key] = callback
        self._flush()
        self._rearm()
        return key

    def send_stateless(self, msg: SipMessage, destination: Address) -> None:
        self.table.send_stateless(msg, destination)
        self._flush()

    def flush(self) -> None:
        """Send what the cores queued and re-arm the timer (for work done outside
        ``on_inbound``, e.g. the call engine's own timers)."""
        self._flush()
        self._rearm()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for msg, destination in self.table.messages_to_send():
            # A request we originate over TCP (Via says so) opens a connection when none is
            # open to its destination; everything else follows the transport's default.
            kind: TransportName | None = None
            if isinstance(msg, SipRequest) and msg.via and msg.via[0].transport in ("TCP", "TLS"):
                kind = "TLS" if msg.via[0].transport == "TLS" else "TCP"
            transport.send(msg.to_bytes(), destination, kind)
            if isinstance(msg, SipResponse):
                self.m_out.inc(status=status_label(msg.status))
            else:
                self.m_out.inc(method=method_label(msg.method))

    # -- timers ------------------------------------------------------------------------------
    def _rearm(self) -> None:
        deadline = self.table.next_deadline()
        if deadline is not None:
            # On a grid: transactions whose timers fall in one slot fire in one callback.
            deadline = math.ceil(deadline / TIMER_SLOT_SECONDS) * TIMER_SLOT_SECONDS
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = self._loop or asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            for event in self.table.handle_timers(self.clock.monotonic()):
                self._on_client_event(event)
        except Exception:
            log.exception("transaction_timer_failed")
        self._flush()
        self._rearm()

    async def _housekeep(self) -> None:
        """Once a second: release bans; once a minute: forget expired bindings."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            wall = self.clock.wall()
            try:
                self.guard.handle_timer(wall)
                self._drain_guard_events()
                if wall - self._last_purge >= PURGE_SECONDS:
                    self._last_purge = wall
                    expired = self.registrations.expire(wall)
                    for binding in expired:
                        self.keepalive.forget(binding.key)
                    # issue #20: another node's expired rows are its to delete (a late refresh
                    # there may have just renewed one); we only forget them.
                    mine = [b for b in expired if b.node is None]
                    if mine:
                        await self.store.apply_bindings((), mine)
                    if expired:
                        log.info("registrations_expired", count=len(expired))
            except Exception:
                log.exception("housekeeping_failed")

    def _drain_guard_events(self) -> None:
        while (event := self.guard.next_event()) is not None:
            log.warning(event.name, **{k: getattr(event, k) for k in event.__dataclass_fields__})
            if event.name == "source_banned":
                self.m_bans.inc()
                self._spawn(self.store.save_ban(event.host, event.until))  # type: ignore[union-attr]
            elif event.name == "source_released":
                self._spawn(self.store.delete_ban(event.host))

    def _on_connection_closed(self, connection_id: int) -> None:
        # Offline to routing at once (docs/design.md 3): nothing reaches this phone until it
        # connects and registers again, which clears the mark.
        self.keepalive.forget_connection(str(connection_id))
        for binding in self.registrations.on_connection(str(connection_id)):
            self.registrations.mark_reachable(binding.key, False)
            log.info(
                "contact_unreachable",
                reason="tcp connection closed",
                aor=f"{binding.tenant}/{binding.extension}",
                contact=binding.contact,
            )

    # -- keep-alive checks (pbx.keepalive) ---------------------------------------------------
    def _track(
        self, tenant: TenantConfig, saved: Sequence[Binding], removed: Sequence[Binding]
    ) -> None:
        """A REGISTER's changes: new and refreshed contacts are (re)checked, gone ones not."""
        now = self.clock.monotonic()
        for binding in removed:
            self.keepalive.forget(binding.key)
        for binding in saved:
            self.keepalive.track(
                binding.key,
                tenant.qualify_seconds,
                now,
                connection_id=binding.connection_id,
            )
        if saved:
            self._rearm_keepalive()

    def _track_all(self, snapshot: ConfigSnapshot, now: float, *, fresh: bool) -> None:
        """Every binding under ``snapshot``'s intervals (start-up, reload). A tenant whose
        checks were turned off loses the marks they made (a closed TCP connection's stay)."""
        for binding in self.registrations:
            if binding.node is not None:
                continue  # issue #20: another node's contact, probed by that node
            tenant = snapshot.tenants.get(binding.tenant)
            interval = tenant.qualify_seconds if tenant is not None else 0
            self.keepalive.track(
                binding.key, interval, now, connection_id=binding.connection_id, fresh=fresh
            )
            if (
                interval == 0
                and binding.key in self.registrations.unreachable
                and (binding.transport != "TCP" or self.connection_alive(binding.connection_id))
            ):
                self.registrations.mark_reachable(binding.key, True)

    def _rearm_keepalive(self) -> None:
        deadline = self.keepalive.get_timer()
        if deadline is not None:
            deadline = math.ceil(deadline / KEEPALIVE_SLOT_SECONDS) * KEEPALIVE_SLOT_SECONDS
        if deadline == self._keepalive_at:
            return
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        self._keepalive_at = deadline
        if deadline is not None and self._loop is not None:
            self._keepalive_timer = self._loop.call_at(deadline, self._on_keepalive_timer)

    def _on_keepalive_timer(self) -> None:
        self._keepalive_timer = None
        self._keepalive_at = None
        try:
            self.keepalive.handle_timer(self.clock.monotonic())
            self._drain_keepalive()
        except Exception:
            log.exception("keepalive_timer_failed")
        self._rearm_keepalive()

    def _drain_keepalive(self) -> None:
        for probe in self.keepalive.probes_to_send():
            self._send_probe(probe)
        while (event := self.keepalive.next_event()) is not None:
            key: BindingKey = event.key  # type: ignore[assignment]
            binding = self.registrations.get(key)
            if binding is None:
                continue
            down = isinstance(event, ContactStoppedAnswering)
            self.registrations.mark_reachable(key, not down)
            log.info(
                "contact_unreachable" if down else "contact_reachable",
                reason="keep-alive unanswered" if down else "keep-alive answered",
                aor=f"{binding.tenant}/{binding.extension}",
                contact=binding.contact,
            )
        self._rearm_keepalive()

    def _send_probe(self, probe: Probe) -> None:
        """An OPTIONS to a contact, outside any transaction (its one retry is the core's): to
        the address the REGISTER came from (which also refreshes the NAT mapping), over the
        phone's own TCP connection when it registered over TCP."""
        key: BindingKey = probe.key  # type: ignore[assignment]
        binding = self.registrations.get(key)
        transport = self.transport
        if binding is None or transport is None:
            self.keepalive.forget(probe.key)
            return
        reliable = binding.transport == "TCP"
        connection = None
        if reliable:
            if not self.connection_alive(binding.connection_id):
                return  # its close already marked it unreachable
            connection = int(binding.connection_id or 0)
        tenant = self.holder.current.tenants.get(binding.tenant)
        domain = tenant.domain if tenant is not None else binding.source_host
        destination = binding.source
        if binding.path:  # issue #20: through the edge that holds the phone's NAT binding
            destination, _ = first_hop(binding.path)
        local = self.local_address(destination[0], reliable)
        request = _probe_request(probe.token, binding, local, domain)
        transport.send(
            request.to_bytes(),
            destination,
            "TCP" if reliable else "UDP",
            connection_id=connection,
        )
        self.m_out.inc(method="OPTIONS")

    def _on_connection_activity(self, connection_id: int) -> None:
        self.keepalive.heard_on_connection(str(connection_id), self.clock.monotonic())
        self._drain_keepalive()

    def _on_send_failed(self, destination: Address) -> None:
        """A message to ``destination`` could not leave (a TCP connect refused, a closing
        connection): its transactions fail now (17.1.4), not after Timer B, so a fork to it
        ends at once; the TCP contacts registered at that address are unreachable."""
        for event in self.table.transport_failed(destination, self.clock.monotonic()):
            self._on_client_event(event)
        for binding in self.registrations.stream_contacts_at(destination):
            self.contact_failed(binding.key, "tcp connect or send failed")
        self._flush()
        self._rearm()

    def contact_failed(self, key: BindingKey, reason: str) -> None:
        """A transport error reaching a registered contact (the call engine's hook): that
        contact is unreachable at once; a refresh or an answered keep-alive brings it back."""
        if self.registrations.contact_failed(key):
            log.info("contact_unreachable", reason=reason, aor=f"{key[0]}/{key[1]}", contact=key[2])

    def _spawn(self, coro: Any) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- views for the admin API -----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "registrations": len(self.registrations),
            "transactions": len(self.table),
            "bans": [{"host": h, "until": u} for h, u in self.guard.bans()],
        }

    def registrations_view(self) -> list[dict[str, Any]]:
        wall = self.clock.wall()
        return [
            {
                "tenant": b.tenant,
                "extension": b.extension,
                "contact": b.contact,
                "source": f"{b.source_host}:{b.source_port}",
                "transport": b.transport,
                "encrypted": b.transport == "TLS",
                "user_agent": b.user_agent,
                "registered_at": b.registered_at,
                "expires_in": b.expires_in(wall),
                "reachable": b.key not in self.registrations.unreachable,
                "keepalive_answered": self.keepalive.answered_once(b.key),
                "node": b.node,  # issue #20: None for this node's own
            }
            for b in self.registrations
            if b.is_active(wall)
        ]


def _nonce_secret(snapshot: ConfigSnapshot) -> bytes:
    """The key of nonces and stateless tags: ``[auth] nonce_secret_file`` (issue #20: the
    nodes behind one edge share it), else random for this process."""
    path = snapshot.server.auth.nonce_secret_file
    if path is None:
        return secrets.token_bytes(32)
    secret = path.read_bytes().strip()
    if len(secret) < 16:
        raise ValueError(f"{path}: a nonce secret needs at least 16 bytes")
    return sha256(secret).digest()  # 32 bytes, as the random key (blake2s keys at most 32)


def _guard_exempt(snapshot: ConfigSnapshot) -> set[str]:
    """Hosts the abuse guard never limits: the trunks, and the edges (issue #20), whose relayed
    requests are judged by their real source instead (``_admit_behind_edge``)."""
    return {*_trunk_hosts(snapshot), *snapshot.server.sip.edge}


def _probe_request(token: str, binding: Binding, local: tuple[str, int], domain: str) -> SipRequest:
    """The keep-alive OPTIONS for ``binding`` (RFC 3261 11.1). Branch and From tag derive from
    the token, so the retry is a retransmission of the same request."""
    seed = blake2s(token.encode(), digest_size=10).hexdigest()
    host, port = local
    via_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    aor = SipUri("sip", domain, user=binding.extension)
    return SipRequest(
        method="OPTIONS",
        uri=binding.uri,
        via=(
            Via(
                binding.transport if binding.transport == "TCP" else "UDP",
                via_host,
                port,
                (("branch", MAGIC_COOKIE + seed), ("rport", None)),
            ),
        ),
        from_=NameAddress(SipUri("sip", via_host, user="pbx"), None, (("tag", seed[:12]),)),
        to=NameAddress(aor),
        call_id=CallId(token),
        cseq=CSeq(1, "OPTIONS"),
        max_forwards=70,
        headers=(*(("Route", hop) for hop in binding.path), ("Accept", "application/sdp")),
    )


_CAPABILITIES = (
    ("Allow", ALLOW_HEADER),
    ("Accept", ACCEPT_HEADER),
    ("Supported", SUPPORTED_HEADER),
    ("Accept-Encoding", "identity"),
    ("Accept-Language", "ja, en"),
)


def _authenticator(secret: bytes, snapshot: ConfigSnapshot) -> DigestAuthenticator:
    auth = snapshot.server.auth
    return DigestAuthenticator(secret, auth.algorithms, nonce_ttl=auth.nonce_seconds)


def _no_users(username: str, realm: str, algorithm: str) -> str | None:
    """The credentials of a realm no tenant serves: none."""
    return None


def _trunk_hosts(snapshot: ConfigSnapshot) -> list[str]:
    return [trunk.host for trunk in snapshot.server.trunks]
