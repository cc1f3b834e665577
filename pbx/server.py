"""``pbx run``: the server process. Wires config, store, SIP transport, service, admin API, panel.

Signals: SIGHUP reloads the configuration (like ``pbx reload``); SIGTERM and SIGINT stop the
server. Only this module (through ``main``) installs uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Literal, cast

import structlog

from pbx import __version__
from pbx.admin import build_admin_app
from pbx.b2bua import CallEngine
from pbx.binding_sync import BindingSync
from pbx.call.core import CallCore, CallState
from pbx.call.encryption import call_encryption
from pbx.clock import Clock
from pbx.config.demo import demo_password_refusal, demo_password_users
from pbx.config.holder import ConfigHolder
from pbx.config.load import load_config
from pbx.config.model import ConfigSnapshot, ListenSpec, MediaSettings, TenantId
from pbx.config.problems import ConfigError
from pbx.fdlimit import raise_open_file_limit, tcp_connection_budget
from pbx.gcpolicy import BusyShare, FullCollectionPolicy, memory_limit
from pbx.http import HttpListener
from pbx.log import configure_logging
from pbx.media.calls import MediaPlane
from pbx.media.latch import Side
from pbx.media.rtpengine import RtpengineMedia
from pbx.metrics import Registry
from pbx.node import node_identity
from pbx.panel.runner import PanelRunner
from pbx.panel.status import ActiveCall, ActiveLeg, TenantBindings
from pbx.routing.model import RingExtension
from pbx.service import SipService
from pbx.sip.tls import CertificateProblem, TlsCredentials
from pbx.sip.transport import SipTransport, TcpLimits, TlsSettings
from pbx.store import CALL_HEARTBEAT_SECONDS, Store
from pbx.system_clock import SystemClock

log = structlog.get_logger("pbx.server")

DATABASE_NAME = "pbx.sqlite3"
# Garbage collection under load: every ended call's transactions live on for 32 s (RFC 3261
# timers J, L, M), so at a few hundred calls/s the heap holds millions of tracked objects and
# each full collection scanned them all (pauses of 0.1-0.8 s, measured by loadtests/bench_calls).
# Objects that have lived a fifth of a second are moved to the permanent generation (gc.freeze):
# reference counting still frees them, and a full unfrozen collection, once the heap has doubled
# and the load has gone (``pbx.gcpolicy``), takes back the rare reference cycles among them.
GC_FREEZE_SECONDS = 0.2
# The youngest generation is collected once this many container objects allocated since the
# last freeze are still alive (Python's default is 700). A call leaves a few hundred alive for
# a while (its transactions live 32 s) and makes almost no cyclic garbage (0.2 objects a call,
# measured with gc.callbacks under bench_call_cpu), so each young collection scanned thousands
# of live objects to find nothing: 4-6 % of the server's CPU per call at 700 or 20,000 (issue
# 21). At 200,000, with a freeze every 0.2 s, it runs only above ~1,500 calls/s (a 20 ms scan).
GC_YOUNG_THRESHOLD = 200_000
# A loop-lag sample this late is logged (a UDP client retransmits after 0.5 s).
LOOP_LAG_WARNING_SECONDS = 0.1


class PbxServer:
    """One running server: everything that lives as long as the process."""

    def __init__(
        self, config_path: Path, snapshot: ConfigSnapshot, clock: Clock | None = None
    ) -> None:
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self.holder = ConfigHolder(snapshot)
        self.metrics = Registry()
        self.started_wall = time.time()
        self.store: Store | None = None
        self.node: str | None = None
        self.binding_sync: BindingSync | None = None
        self.service: SipService | None = None
        self.engine: CallEngine | None = None
        self.transport: SipTransport | None = None
        self.tls: TlsCredentials | None = None
        self.admin_app = build_admin_app(
            reload=self.reload,
            status=self.status_view,
            registrations=self.registrations_view,
            calls=self.calls_view,
            metrics=self.metrics.render,
        )
        self.admin: HttpListener | None = None
        self.admin_address: tuple[str, int] = ("", 0)
        self.panel: PanelRunner | None = None
        self.panel_address: tuple[str, int] = ("", 0)
        self._gc_task: asyncio.Task[None] | None = None
        self._reloads = self.metrics.counter("pbx_reloads_total", "Configuration reloads")
        self._loop_lag = self.metrics.gauge(
            "pbx_event_loop_lag_seconds", "How late the event loop ran a 0.5 s timer, last sample"
        )
        self._lag_task: asyncio.Task[None] | None = None
        self.metrics.gauge(
            "pbx_config_version",
            "Version of the configuration in force",
            lambda: self.holder.current.version,
        )

    async def start(self) -> None:
        if isinstance(self.clock, SystemClock):
            self.clock.bind(asyncio.get_running_loop())
        snapshot = self.holder.current
        data_dir = snapshot.server.storage.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        storage = snapshot.server.storage
        # issue #20: the node's name in its rows; bindings mirrored across nodes.
        self.node = node_identity(storage)
        self.store = await Store.open_storage(
            data_dir, storage.database, clock=self.clock, node=self.node
        )
        self.service = SipService(self.holder, self.store, self.metrics, self.clock)
        self.engine = CallEngine(
            *(self.service, self.service, self.store, self.holder, self.metrics, self.clock),
            media=_media_plane(snapshot.server.media, self.clock),
        )
        self.service.calls = self.engine
        sip = snapshot.server.sip
        limits = TcpLimits(
            max_connections=sip.tcp_max_connections,
            max_connections_per_source=sip.tcp_max_connections_per_source,
            idle_seconds=float(sip.tcp_idle_seconds),
            message_seconds=float(sip.tcp_message_seconds),
        )
        tls = self._start_tls(snapshot)
        self.transport = SipTransport(self.service.on_inbound, limits, tls)
        # harden (issue 17, item 5): raise the open-file limit, keep a reserve for the rest.
        before, after, hard = raise_open_file_limit()
        self.transport.max_connections = tcp_connection_budget(limits.max_connections, after)
        log.info(
            "open_file_limit",
            soft_before=before,
            soft=after,
            hard=hard,
            tcp_max_connections=self.transport.max_connections,
        )
        self.service.attach(self.transport)
        await self.service.start()
        if storage.database:
            service = self.service
            self.binding_sync = BindingSync(
                storage.database,
                self.store,
                lambda: service.registrations,
                self.clock.wall,
                on_change=service.shared_bindings_changed,
            )
            await self.binding_sync.start()
        await self.transport.start(
            [(spec.transport.upper(), spec.host, spec.port) for spec in snapshot.server.sip.listen]
        )
        self._lag_task = asyncio.get_running_loop().create_task(self._watch_loop_lag())
        self._gc_task = asyncio.get_running_loop().create_task(_gc_policy(), name="pbx-gc")
        admin = snapshot.server.admin
        self.admin = HttpListener(self.admin_app, admin.host, admin.port, name="admin")
        port = await self.admin.start()
        self.admin_address = (admin.host, port)
        self.panel = PanelRunner(
            self.config_path,
            lambda: self.holder.current,
            self.store,
            self.reload,
            time.time,
            bindings=self.panel_bindings,
            calls_in_progress=self.panel_calls,
            sip_listening=self.panel_sip_listening,
        )
        self.panel_address = await self.panel.start()
        log.info(
            "server_started",
            version=__version__,
            config_version=snapshot.version,
            node=self.node,
            sip=[
                {"transport": a.transport, "host": a.host, "port": a.port}
                for a in self.transport.listening
            ],
            admin={"host": admin.host, "port": port},
            panel={"host": self.panel_address[0], "port": self.panel_address[1]},
        )

    async def _watch_loop_lag(self) -> None:
        """Sample event-loop lag: how much later than asked a sleep returns."""
        loop = asyncio.get_running_loop()
        interval = 0.5
        next_touch = 0.0  # issue 16: the heartbeat of calls in progress rides on this loop
        while True:
            started = loop.time()
            if self.engine is not None and self.engine.calls and started >= next_touch:
                if self.store is not None:
                    self.store.touch_open_calls(self.clock.now().wall)
                next_touch = started + CALL_HEARTBEAT_SECONDS
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - started - interval)
            self._loop_lag.set(lag)
            if lag >= LOOP_LAG_WARNING_SECONDS:
                # Everything waited this long: retransmissions and late timers follow.
                log.warning("event_loop_lagged", lag_seconds=round(lag, 3))

    async def drain(self) -> None:
        """Graceful shutdown, first part: new calls get 503; calls in progress may go on for
        ``[calls] drain_seconds``, then are ended with BYE and their records closed.
        Registrations stay on disk (they are written through)."""
        if self.engine is None:
            return
        seconds = self.holder.current.server.calls.drain_seconds
        log.info("server_draining", calls=len(self.engine.calls), drain_seconds=seconds)
        ended = await self.engine.drain(float(seconds))
        log.info("server_drained", ended_by_shutdown=ended)

    def cut_drain(self) -> None:
        if self.engine is not None:
            log.warning("server_drain_cut_short")
            self.engine.cut_drain()

    async def stop(self) -> None:
        log.info("server_stopping")
        if self._gc_task is not None:
            self._gc_task.cancel()
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self.admin is not None:
            await self.admin.close()
        if self.panel is not None:
            await self.panel.close()
        if self.engine is not None:
            await self.engine.stop()
        if self.service is not None:
            await self.service.stop()
        if self.transport is not None:
            await self.transport.close()
        if self.binding_sync is not None:
            await self.binding_sync.close()
        if self.store is not None:
            await self.store.close()
        log.info("server_stopped")

    # -- SIP over TLS (issue #18): the listeners' certificate, loaded at start and on reload
    def _start_tls(self, snapshot: ConfigSnapshot) -> TlsSettings | None:
        sip = snapshot.server.sip
        if not any(spec.transport == "tls" for spec in sip.listen):
            return None
        assert sip.tls_certificate is not None  # checked by the config loader
        assert sip.tls_key is not None
        # A certificate that cannot be used stops the start with the reason (CertificateProblem).
        self.tls = TlsCredentials(sip.tls_certificate, sip.tls_key, time.time())
        log.info("tls_certificate_loaded", subject=self.tls.info.subject)
        return TlsSettings(self.tls.context, float(sip.tls_handshake_seconds))

    def _reload_tls(self, new: ConfigSnapshot) -> str | None:
        """Load the certificate and key named by the new snapshot into the live context; the
        reason when they cannot be used (the old ones then stay in use)."""
        sip = new.server.sip
        if self.tls is None or sip.tls_certificate is None or sip.tls_key is None:
            return None
        try:
            self.tls.reload(sip.tls_certificate, sip.tls_key, time.time())
        except CertificateProblem as exc:
            return f"[sip] tls_certificate: {exc}"
        log.info("tls_certificate_loaded", subject=self.tls.info.subject)
        return None

    # -- reload (SIGHUP and POST /reload)
    async def reload(self) -> tuple[int, dict[str, Any]]:
        """Reload the configuration: (200, new version) or (409, the errors; old one stays)."""
        old = self.holder.current
        try:
            new = self.holder.reload(self.config_path)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            log.error("config_reload_refused", version=old.version, errors=problems)
            self._reloads.inc(result="refused")
            return 409, {"version": old.version, "digest": old.digest, "errors": problems}
        except OSError as exc:
            log.error("config_reload_refused", version=old.version, errors=[str(exc)])
            self._reloads.inc(result="refused")
            return 409, {"version": old.version, "digest": old.digest, "errors": [str(exc)]}
        # The certificate is read again even when the configuration files are unchanged: a
        # renewed certificate under the same path is the common case (issue 18).
        tls_refused = self._reload_tls(new)
        if tls_refused is not None:
            self.holder.current = old  # nothing awaited since the swap: no one saw ``new``
            log.error("config_reload_refused", version=old.version, errors=[tls_refused])
            self._reloads.inc(result="refused")
            return 409, {"version": old.version, "digest": old.digest, "errors": [tls_refused]}
        if new is old:
            # The same files as in force: nothing to swap, the version stays (issue 19).
            self._reloads.inc(result="unchanged")
            log.info("config_reload_unchanged", version=old.version, digest=old.digest)
            return 200, {
                "version": old.version,
                "digest": old.digest,
                "changed": False,
                "warnings": list(old.warnings),
            }
        if self.service is not None:
            await self.service.config_changed(old, new)
        self._reloads.inc(result="ok")
        log.info(
            "config_reloaded", version=new.version, digest=new.digest, warnings=list(new.warnings)
        )
        return 200, {
            "version": new.version,
            "digest": new.digest,
            "changed": True,
            "warnings": list(new.warnings),
        }

    # -- views for GET /status, /registrations, /calls (plain data; pbx.admin renders them)
    def status_view(self) -> dict[str, Any]:
        snapshot = self.holder.current
        service = self.service
        body: dict[str, Any] = {
            "server_version": __version__,
            "uptime_seconds": round(time.time() - self.started_wall, 3),
            "config_version": snapshot.version,
            "config_digest": snapshot.digest,
            "tenants": [
                {
                    "id": tenant.id,
                    "domain": tenant.domain,
                    "default": snapshot.default_tenant == tenant.id,
                    "numbers": list(tenant.numbers),
                    "users": sorted(tenant.users),
                }
                for tenant in snapshot.tenants.values()
            ],
            "sip": [
                {"transport": a.transport, "host": a.host, "port": a.port}
                for a in (self.transport.listening if self.transport else [])
            ],
            "tcp_connections": self.transport.tcp_connection_count if self.transport else 0,
        }
        if service is not None:
            body.update(service.status())
        engine = self.engine
        if engine is not None:
            # Read-only counts for leak checks (loadtests/suite.py): what is still held.
            body["calls_active"] = len(engine.calls)
            body["dialogs"] = len(engine.dialogs)
            body["rtp_ports_in_use"] = engine.media.ports_in_use
        return body

    def registrations_view(self) -> list[dict[str, Any]]:
        assert self.service is not None
        return self.service.registrations_view()

    def calls_view(self) -> list[dict[str, Any]]:
        assert self.engine is not None
        views = self.engine.calls_view()
        # issue #18: how each side of each call is protected (pbx.call.encryption)
        for view in views:
            core = self.engine.calls.get(str(view["id"]))
            if core is not None:
                view["encryption"] = _call_encryption(core)
        return views

    # -- the panel's live status (登録状況 / 通話中): one tenant's state as plain values
    def panel_bindings(self, tenant: TenantId) -> TenantBindings:
        """The tenant's bindings in the registrar, and those not answering keep-alive checks."""
        if self.service is None:
            return TenantBindings()
        registrations = self.service.registrations
        return TenantBindings(
            tuple(b for b in registrations if b.tenant == tenant),
            frozenset(key for key in registrations.unreachable if key[0] == tenant),
        )

    def panel_sip_listening(self) -> list[ListenSpec]:
        """The SIP addresses bound (the phone setup page shows these)."""
        if self.transport is None:
            return []
        return [
            ListenSpec(cast(Literal["udp", "tcp", "tls"], a.transport.lower()), a.host, a.port)
            for a in self.transport.listening
        ]

    def panel_calls(self, tenant: TenantId) -> list[ActiveCall]:
        """The tenant's calls in progress. Legs ringing another tenant's extensions (a call to
        that tenant's number) are left out: their extensions are not this tenant's business."""
        if self.engine is None:
            return []
        calls = []
        for core in list(self.engine.calls.values()):
            if core.tenant != tenant or core.state is CallState.ENDED:
                continue
            legs = []
            for leg in core.legs:
                live = core.progress.live_fork(leg.fork_id) if core.progress else None
                fork = live.fork if live is not None else None
                if isinstance(fork, RingExtension) and fork.tenant != tenant:
                    continue
                legs.append(ActiveLeg(leg.label, leg.state.value))
            mine = tuple(ext for t, ext in core.lines if t == tenant)
            others = {ext for t, ext in core.lines if t != tenant}
            answered_by = core.answered_by if core.answered_by not in others else None
            calls.append(
                ActiveCall(
                    id=core.id,
                    caller=core.caller,
                    called=core.called,
                    state=core.state.value,
                    started_at=core.started_at,
                    answered_at=core.answered_at,
                    answered_by=answered_by,
                    lines=mine,
                    legs=tuple(legs),
                )
            )
        return calls


def _call_encryption(core: CallCore) -> dict[str, object]:
    """The ``encryption`` field of ``GET /calls`` for one call (issue #18)."""
    anchor, winner = core.anchor, core.winner
    caller_srtp = anchor is not None and anchor.secured(Side.A)
    callee = None
    if winner is not None:
        callee = (winner.peer.secure, anchor is not None and anchor.secured(Side.B))
    return call_encryption(core.a_peer.secure, caller_srtp, callee)


async def _gc_policy() -> None:
    """Freeze what survived each fifth of a second; a full collection when the policy says so
    (``FullCollectionPolicy``: the heap doubled, at a quiet moment; or grown fourfold while
    the process holds half the memory it may use).

    Reference counting frees frozen objects as usual, so the heap follows what is live. Only
    reference cycles among frozen objects wait for a full collection, and those are rare (a few
    hundred objects per five minutes of load in the soak test). A full collection scans every
    object and stops the loop (0.5-20 s under load: longer than a phone waits before it
    retransmits), so it is a guard against a leak only (``pbx.gcpolicy``).
    """
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.collect()
    gc.freeze()
    policy = FullCollectionPolicy(time.monotonic(), sys.getallocatedblocks())
    busy = BusyShare()
    limit = _memory_limit()
    while True:
        await asyncio.sleep(GC_FREEZE_SECONDS)
        gc.freeze()
        now = time.monotonic()
        blocks = sys.getallocatedblocks()
        share = busy.add(now, time.process_time())
        if policy.due(now, blocks, share, lambda: _resident_bytes() / limit):
            gc.unfreeze()
            started = time.perf_counter()
            collected = gc.collect()
            gc.freeze()
            after = sys.getallocatedblocks()
            policy.collected(time.monotonic(), after)
            log.info(
                "gc_full_collection",
                collected=collected,
                blocks_before=blocks,
                blocks_after=after,
                ms=round(1000 * (time.perf_counter() - started), 1),
            )


def _memory_limit() -> int:
    """The memory this process may use: its cgroup's limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), else the machine's."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limits = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, group = line.split(":", 2)
            if controllers == "":
                limits.append(Path("/sys/fs/cgroup", group.lstrip("/"), "memory.max"))
            elif "memory" in controllers.split(","):
                limits.append(
                    Path("/sys/fs/cgroup/memory", group.lstrip("/"), "memory.limit_in_bytes")
                )
    found = [physical]
    for path in limits:
        with contextlib.suppress(OSError, ValueError):
            found.append(memory_limit(path.read_text(), physical))
    return min(found)


def _resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


async def serve(config_path: Path, snapshot: ConfigSnapshot) -> int:
    """Run until SIGTERM/SIGINT (then drain and stop); SIGHUP reloads."""
    server = PbxServer(config_path, snapshot)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop_signal() -> None:
        # The first SIGTERM/SIGINT drains; a second one ends the calls still up at once.
        if stop.is_set():
            server.cut_drain()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal)
    reloads: set[asyncio.Task[tuple[int, dict[str, Any]]]] = set()

    def on_sighup() -> None:
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        await server.start()
    except (OSError, CertificateProblem) as exc:
        log.error("server_start_failed", error=str(exc))
        await server.stop()
        return 1
    await stop.wait()
    await server.drain()
    await server.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=True if args.log_json else None)
    config_path: Path = args.config
    try:
        snapshot = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return 1
    for warning in snapshot.warnings:
        log.warning("config_warning", warning=warning)
    refusal = demo_password_refusal(snapshot)
    if refusal is not None:
        if not getattr(args, "allow_demo_passwords", False):
            print(refusal, file=sys.stderr)
            return 1
        log.warning("demo_passwords_allowed", users=demo_password_users(snapshot))

    import uvloop

    return uvloop.run(serve(config_path, snapshot))


# issue #20: ``[media] engine`` chooses the media plane at start-up (a reload does not switch it).
def _media_plane(settings: MediaSettings, clock: Clock) -> MediaPlane | None:
    if settings.engine != "rtpengine":
        return None  # the call engine's built-in relay
    log.info("media_engine", engine="rtpengine", control=settings.rtpengine)
    return RtpengineMedia(
        clock.monotonic, settings.rtpengine, recording_dir=settings.rtpengine_recording_dir
    )
