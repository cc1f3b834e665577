"""Bindings shared across nodes through PostgreSQL (issue #20): LISTEN/NOTIFY.

Every node keeps all bindings in memory (``pbx.registrar.Registrations``) and routes from
there, synchronously. A node that commits a binding change also sends
``NOTIFY pbx_bindings, '<tenant>/<extension>'`` in the same transaction (``Store.write_bindings``),
so the notification leaves only if the change is committed. Every node listens on a connection
of its own and reloads the bindings of the AORs it hears about from the table into memory
(expired ones dropped); on every (re)connect it reloads everything, since a notification sent
while it was disconnected is lost.

- Its own notifications (sent by its writer's connection: ``Notify.pid``) are skipped: the change
  is in memory already.
- Notifications are gathered while a reload runs and the next reload reads them all in one query.
- A reload never undoes a change this node holds in memory but has not committed yet: an AOR
  with a write in flight when the read starts or ends, or written while it runs, is left alone
  and read again once the store has flushed.
- A binding of another node arrives without its TCP/TLS connection id (``Store``): this node
  reaches that phone by its address (TCP: a new connection to its Contact; TLS: never a new
  connection toward a phone, so only through the edge, whose Path the phone's REGISTER carried).
  This node does not send keep-alive probes to other nodes' contacts (``on_change``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import structlog

from pbx.config.model import Extension, TenantId
from pbx.registrar import Binding, Registrations
from pbx.store import BINDINGS_CHANNEL, Store, StoreError, describe_url
from pbx.store_pg import CONNECT_TIMEOUT_SECONDS

log = structlog.get_logger("pbx.binding_sync")

Aor = tuple[str, str]
ChangeCallback = Callable[[Sequence[Binding], Sequence[Binding]], None]


class BindingSync:
    """Listens for other nodes' binding changes and mirrors them into ``registrations()``."""

    def __init__(
        self,
        url: str,
        store: Store,
        registrations: Callable[[], Registrations],
        wall: Callable[[], float],
        *,
        on_change: ChangeCallback | None = None,
        retry_interval: float = 1.0,
    ) -> None:
        self.url = url
        self.store = store
        self.registrations = registrations
        self.wall = wall
        self.on_change = on_change
        self.retry_interval = retry_interval
        self.connected = False
        self.reloads = 0  # full reloads (each (re)connect)
        self.listener_pid: int | None = None  # the listening connection's server process
        # Set after every reload, full or not (tests wait on it).
        self.applied = asyncio.Event()
        self._dirty: set[Aor] = set()
        self._dirty_all = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._after_flush: set[Aor] = set()  # AORs to read again once the store has flushed
        self._flushing: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place (or its first attempt
        failed: it goes on trying in the background)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="pbx-binding-listen"),
            loop.create_task(self._apply(), name="pbx-binding-apply"),
        ]
        await self._listening.wait()

    async def close(self) -> None:
        self._closed = True
        if self._flushing is not None:
            self._tasks.append(self._flushing)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the listening connection -----------------------------------------------------------

    async def _listen(self) -> None:
        while not self._closed:
            conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
                await conn.execute(f"LISTEN {BINDINGS_CHANNEL}")
                self.listener_pid = conn.info.backend_pid
                self.connected = True
                self._listening.set()
                # A notification may have been missed while disconnected: read everything.
                self._dirty_all = True
                self._wake.set()
                log.info("bindings_listening", database=describe_url(self.url))
                async for notify in conn.notifies():
                    if notify.pid == self.store.writer_session:
                        continue  # our own change: in memory already
                    tenant, slash, extension = notify.payload.partition("/")
                    if slash:
                        self._dirty.add((tenant, extension))
                        self._wake.set()
            except psycopg.Error as exc:
                if self.connected:
                    log.warning("bindings_listen_lost", error=str(exc))
            finally:
                self.connected = False
                self._listening.set()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if not self._closed:
                await asyncio.sleep(self.retry_interval)

    # -- reloading --------------------------------------------------------------------------

    async def _apply(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            full, self._dirty_all = self._dirty_all, False
            aors, self._dirty = self._dirty, set()
            try:
                await self._reload(None if full else sorted(aors))
            except (StoreError, psycopg.Error) as exc:
                # The database went away: the listener reconnects and reloads everything.
                log.warning("bindings_reload_failed", error=str(exc))
                self._dirty_all = self._dirty_all or full
                self._dirty |= aors
                await asyncio.sleep(self.retry_interval)
                self._wake.set()
                continue
            if full:
                self.reloads += 1
            self.applied.set()

    async def _reload(self, aors: list[Aor] | None) -> None:
        store = self.store
        busy = store.bindings_in_flight()
        written = store.watch_binding_writes()
        try:
            wall = self.wall()
            if aors is None:
                rows: dict[Aor, list[Binding]] = {}
                for binding in await store.load_bindings(wall):
                    rows.setdefault((binding.tenant, binding.extension), []).append(binding)
                candidates = set(rows) | set(self.registrations().aors())
            else:
                rows = await store.load_aor_bindings(aors, wall)
                candidates = set(aors)
        finally:
            store.unwatch_binding_writes(written)
        unsettled = candidates & (busy | written | store.bindings_in_flight())
        registrations = self.registrations()
        for aor in candidates - unsettled:
            changed, gone = registrations.replace_aor(
                TenantId(aor[0]), Extension(aor[1]), rows.get(aor, ())
            )
            if (changed or gone) and self.on_change is not None:
                self.on_change(changed, gone)
        if unsettled:
            # Read again once this node's own writes of those AORs are committed.
            self._after_flush |= unsettled
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.get_running_loop().create_task(self._reread())

    async def _reread(self) -> None:
        while self._after_flush and not self._closed:
            with contextlib.suppress(StoreError):
                await self.store.flush()  # failed writes are settled too (undone in memory)
            self._dirty |= self._after_flush
            self._after_flush = set()
            self._wake.set()
