"""登録状況 / 通話中 (live status) and 端末設定 (phone setup): the panel's routes for them.

Routes (all behind ``tenant_route``: 404 for another tenant's admin, API and stream included):

- ``GET /t/{tenant}/status``: the page, server-rendered (readable without JavaScript);
  ``/static/status.js`` then follows the event stream and swaps in each update.
- ``GET /t/{tenant}/api/status``: the same view as JSON.
- ``GET /t/{tenant}/api/status/events``: server-sent events (``text/event-stream``). Bounded:
  at most one update per interval (and only when the view changed, with a comment line as
  keep-alive), at most ``MAX_STREAMS_PER_ACCOUNT`` open per account and ``MAX_STREAMS`` in all
  (429 beyond), and it ends by itself when the client goes away, when the session ends (signed
  out, expired, or idle: the stream never counts as activity) and when the panel shuts down.
- ``GET/POST /t/{tenant}/phones/{ext}``: the values a phone needs; POST (with CSRF) shows the
  stored clear-text password, or issues a new one (saved like any edit, shown once). Both are
  audited, never with the password.

The server hands the panel its live state through ``PanelDeps.bindings`` and
``PanelDeps.calls_in_progress`` (callables made in ``pbx.server``); the view itself is
``pbx.panel.status.build_status``, pure.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from pbx.config.model import Extension, TenantConfig, TenantId, UserConfig
from pbx.panel.app import FieldErrors, Viewer, _Panel
from pbx.panel.i18n import Lang, translate
from pbx.panel.passwords import generate_sip_password
from pbx.panel.phone_setup import phone_setup
from pbx.panel.saving import PutUser
from pbx.panel.status import StatusView, build_status, parse_page, status_json
from pbx.panel.streams import StatusStreams
from pbx.panel.tenant_files import UserEdit

log = structlog.get_logger("pbx.panel")

KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing a quiet stream
RETRY_MILLISECONDS = 5000  # how long EventSource waits before reconnecting after a drop


class _Slot:
    """One stream's slot, given back exactly once."""

    def __init__(self, streams: StatusStreams, account_id: int) -> None:
        self.streams, self.account_id, self.held = streams, account_id, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.streams.release(self.account_id)


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response that frees its slot and closes its generator however it
    ends (finished, client gone, cancelled at shutdown), even if it never started iterating."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], slot: _Slot) -> None:
        super().__init__(content, headers={"x-accel-buffering": "no"})
        self._content = content
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
            close = getattr(self._content, "aclose", None)
            if close is not None:
                await close()


def sse(event: str, data: str) -> str:
    """One server-sent event (data on one line: JSON never holds a raw newline)."""
    return f"event: {event}\ndata: {data}\n\n"


def routes(panel: _Panel) -> list[BaseRoute]:
    """登録状況 and 端末設定's routes, each behind the panel's tenant check."""
    pages = LivePages(panel)
    return [
        Route("/t/{tenant}/status", panel.tenant_route(pages.status_page)),
        Route("/t/{tenant}/api/status", panel.tenant_route(pages.status_api)),
        Route("/t/{tenant}/api/status/events", panel.tenant_route(pages.status_events)),
        Route(
            "/t/{tenant}/phones/{ext}",
            panel.tenant_route(pages.phone_page),
            methods=["GET", "POST"],
        ),
    ]


class LivePages:
    """The handlers of the live status and phone setup pages."""

    def __init__(self, panel: _Panel) -> None:
        self.panel = panel
        self.deps = panel.deps

    # -- live status -------------------------------------------------------------------------

    def view(self, request: Request, tenant: TenantConfig) -> StatusView:
        query = request.query_params.get("q", "").strip()[:64]
        return build_status(
            tenant,
            self.deps.bindings(tenant.id),
            self.deps.calls_in_progress(tenant.id),
            self.deps.wall_clock(),
            query=query,
            page=parse_page(request.query_params.get("page")),
        )

    def fragment(self, lang: Lang, tenant: TenantConfig, view: StatusView) -> str:
        def t(key: str, **params: object) -> str:
            return translate(lang, key, **params)

        return self.panel.env.get_template("status_body.html").render(
            t=t, tenant=tenant, view=view, link=_status_link(tenant.id, view)
        )

    async def status_page(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        view = self.view(request, tenant)
        params = {"q": view.query, "page": view.page}
        return self.panel.render(
            request,
            "status.html",
            viewer,
            tenant=tenant,
            view=view,
            body=self.fragment(self.panel.lang(request), tenant, view),
            stream_url=f"/t/{tenant.id}/api/status/events?" + urlencode(params),
        )

    async def status_api(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        return JSONResponse(status_json(self.view(request, tenant)))

    async def status_events(
        self, request: Request, viewer: Viewer, tenant: TenantConfig
    ) -> Response:
        streams = self.deps.status_streams
        account = viewer.account
        if not streams.acquire(account.id):
            log.info("panel_status_stream_refused", account=account.name, open=streams.active)
            raise HTTPException(429, "too many open status pages")
        slot = _Slot(streams, account.id)
        lang = self.panel.lang(request)
        session = viewer.session
        # The stream ends when the session would: its absolute end, or the idle limit counted
        # from the last real request (the stream itself is not activity).
        deadline = min(session.expires_at, session.last_seen_at + self.deps.session_idle_seconds)
        log.info("panel_status_stream_opened", account=account.name, tenant=tenant.id)
        return EventStream(
            self._events(request, tenant.id, lang, session.token_hash, deadline), slot
        )

    async def _events(
        self, request: Request, tenant_id: str, lang: Lang, session_hash: str, deadline: float
    ) -> AsyncIterator[str]:
        deps = self.deps
        streams = deps.status_streams
        interval = deps.status_interval_seconds
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        last: StatusView | None = None
        quiet = 0.0
        reason = "client_gone"  # unless the loop ends by itself: cancelled on disconnect
        try:
            while True:
                if streams.closed:
                    reason = "closing"
                    break
                now = deps.wall_clock()
                if now >= deadline or not await deps.accounts.session_alive(session_hash, now):
                    reason = "session"
                    break
                tenant = deps.current().tenants.get(TenantId(tenant_id))
                if tenant is None:
                    reason = "gone"
                    break
                view = self.view(request, tenant)
                if view != last:
                    body = self.fragment(lang, tenant, view)
                    yield sse("status", json.dumps({"html": body, "online": view.online}))
                    last, quiet = view, 0.0
                elif quiet >= KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await streams.pause(interval)
                quiet += interval
            yield sse("end", json.dumps({"reason": reason}))
        finally:
            log.info("panel_status_stream_closed", tenant=tenant_id, reason=reason)

    # -- phone setup -------------------------------------------------------------------------

    async def phone_page(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        user = tenant.users.get(Extension(request.path_params["ext"]))
        if user is None:
            raise HTTPException(404)
        panel = self.panel
        lang = panel.lang(request)
        host = request.url.hostname or ""
        listening = self.deps.sip_listening() if self.deps.sip_listening else None
        setup = phone_setup(self.deps.current(), tenant, user, host, listening)
        shown: str | None = None
        issued = False
        errors = FieldErrors()
        if request.method == "POST":
            form = await panel.checked_form(request, viewer)
            action = form.get("action")
            if action == "show":
                if user.password is None:
                    errors.add("", translate(lang, "phone.no_clear_password"))
                else:
                    await panel.audit(viewer, tenant.id, "show_sip_password", user.extension, {})
                    log.info(
                        "panel_sip_password_shown", account=viewer.account.name, ext=user.extension
                    )
                    shown = user.password
            elif action == "reissue":
                password = generate_sip_password()
                edit = PutUser(_same_user(user, password), user.extension)
                digest = form.get("digest")
                outcome = await panel.save(
                    viewer,
                    tenant.id,
                    edit,
                    digest if isinstance(digest, str) and digest else None,
                    "reissue_sip_password",
                    user.extension,
                )
                if outcome.outcome == "saved":
                    shown, issued = password, True
                    current = self.deps.current().tenants.get(tenant.id, tenant)
                    user = current.users.get(user.extension, user)
                    setup = phone_setup(self.deps.current(), current, user, host, listening)
                else:
                    errors = panel.outcome_errors(request, viewer, outcome, lambda p: "")
            else:
                raise HTTPException(404)
        return panel.render(
            request,
            "phone_setup.html",
            viewer,
            400 if errors else 200,
            tenant=tenant,
            user=user,
            setup=setup,
            shown=shown,
            issued=issued,
            errors=errors,
            digest=panel.digest_of(tenant.id) or "",
        )


def _same_user(user: UserConfig, password: str) -> UserEdit:
    """The user as it is, with a new password."""
    return UserEdit(
        extension=user.extension,
        name=user.name or "",
        department=user.department or "",
        caller_id=user.caller_id or "",
        recording=user.recording,
        forward_busy=user.forward.busy or "",
        forward_no_answer=user.forward.no_answer or "",
        forward_offline=user.forward.offline or "",
        password=password,
    )


def _status_link(tenant_id: str, view: StatusView) -> Callable[..., str]:
    def link(**changes: object) -> str:
        params: dict[str, object] = {"q": view.query, "page": view.page}
        params.update(changes)
        return f"/t/{tenant_id}/status?" + urlencode(params)

    return link
