"""The panel inside ``pbx run``: builds its parts from the server's and serves it on ``[panel]``.

The panel shares the server's event loop and database. What would slow calls stays off the
loop: password hashing runs in a thread, and a save's parse-edit-validate runs in one worker
process (``saving``), started on the first save.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from pbx.config.model import ConfigSnapshot, ListenSpec, TenantId
from pbx.http import HttpListener
from pbx.panel.accounts import PanelStore
from pbx.panel.app import PanelDeps, build_panel_app
from pbx.panel.saving import ReloadOutcome, TenantSaver
from pbx.panel.signin import SignInThrottle
from pbx.panel.status import ActiveCall, TenantBindings, no_bindings, no_calls
from pbx.panel.tenant_files import TenantWriter
from pbx.store import Store

log = structlog.get_logger("pbx.panel")

HISTORY_FOLDER = "config-history"

Reload = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


class PanelRunner:
    """The control panel of one server process."""

    def __init__(
        self,
        config_path: Path,
        current: Callable[[], ConfigSnapshot],
        store: Store,
        reload: Reload,
        wall_clock: Callable[[], float],
        *,
        # -- live status (登録状況 / 通話中): the server's registrar and call engine, as values --
        bindings: Callable[[TenantId], TenantBindings] = no_bindings,
        calls_in_progress: Callable[[TenantId], Sequence[ActiveCall]] = no_calls,
        sip_listening: Callable[[], Sequence[ListenSpec]] | None = None,
    ) -> None:
        self.config_path = config_path
        self._current = current
        self._reload = reload
        self.accounts = PanelStore(store)
        self._executor: ProcessPoolExecutor | None = None
        self._listener: HttpListener | None = None
        snapshot = current()
        settings = snapshot.server.panel
        self._executor = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
        writer = TenantWriter(
            snapshot.server.storage.data_dir / HISTORY_FOLDER, keep=settings.history_versions
        )
        self.saver = TenantSaver(config_path, writer, self._reload_outcome, self._executor)
        self.deps = PanelDeps(
            current=current,
            accounts=self.accounts,
            saver=self.saver,
            throttle=SignInThrottle(),
            wall_clock=wall_clock,
            secure_cookies=settings.tls_certificate is not None,
            session_idle_seconds=settings.session_idle_minutes * 60.0,
            session_max_seconds=settings.session_max_hours * 3600.0,
            data_dir=snapshot.server.storage.data_dir,
            bindings=bindings,
            calls_in_progress=calls_in_progress,
            sip_listening=sip_listening,
        )
        self.app = build_panel_app(self.deps)

    async def _reload_outcome(self) -> ReloadOutcome:
        status, body = await self._reload()
        if status == 200:
            return ReloadOutcome(True, int(body["version"]))
        return ReloadOutcome(False, int(body["version"]), tuple(map(str, body.get("errors", []))))

    async def start(self) -> tuple[str, int]:
        """Listen on ``[panel] listen``; returns the bound (host, port)."""
        settings = self._current().server.panel
        self._listener = HttpListener(
            self.app,
            settings.host,
            settings.port,
            certificate=settings.tls_certificate,
            key=settings.tls_key,
            name="panel",
        )
        port = await self._listener.start()
        return settings.host, port

    async def close(self) -> None:
        # Open status streams end first, so the listener's graceful stop does not wait on them.
        self.deps.status_streams.close()
        if self._listener is not None:
            await self._listener.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
