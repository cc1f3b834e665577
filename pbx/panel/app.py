"""The control panel as a Starlette application: server-rendered Jinja2 pages, no JavaScript.

Rules every route follows (docs/design.md, "Control panel"):

- **Who may see what is decided in one place.** ``signed_in`` finds the session; tenant routes
  (``/t/{tenant}/...``) go through ``tenant_route``, which answers 404 (never 403: nothing
  reveals that another tenant exists) unless the viewer is an operator or that tenant's admin;
  operator routes go through ``operator_route``, 404 for everyone else.
- **Every state-changing request carries the CSRF token** of its session (``checked_form``), or
  for the sign-in form a token bound to a cookie; a POST without it gets 403 and changes nothing.
- **Handlers parse, call one domain function, render**: forms are normalised by ``forms``, saves
  go through ``TenantSaver`` (the same validation as ``check-config``), accounts and the audit log
  through ``PanelStore``. Templates hold no policy and autoescape everything.
- **Every change is audited** (who, when, which tenant, what changed) after it succeeds.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import unicodedata
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlencode

import jinja2
import structlog
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pbx.config.model import (
    ConfigSnapshot,
    Extension,
    ListenSpec,
    PhoneNumber,
    TenantConfig,
    TenantId,
    UserConfig,
)
from pbx.config.problems import ConfigProblem
from pbx.panel import forms
from pbx.panel.accounts import Account, AccountExists, PanelStore, Session
from pbx.panel.i18n import LANGS, Lang, pick_lang, translate
from pbx.panel.passwords import (
    generate_sip_password,
    hash_password,
    verify_no_account,
    verify_password,
)
from pbx.panel.saving import (
    CreateTenant,
    Edit,
    PutUser,
    RemoveTenant,
    RemoveUser,
    RestoreText,
    SaveOutcome,
    SetLimits,
    SetNumbers,
    TenantSaver,
)
from pbx.panel.signin import Outcome, SignInThrottle
from pbx.panel.status import ActiveCall, TenantBindings, no_bindings, no_calls
from pbx.panel.streams import StatusStreams
from pbx.panel.tenant_files import UserEdit

log = structlog.get_logger("pbx.panel")

SESSION_COOKIE = "pbx_session"
LOGIN_CSRF_COOKIE = "pbx_login_csrf"
LANG_COOKIE = "pbx_lang"
USERS_PER_PAGE = 50
AUDIT_PER_PAGE = 100
MAX_FORM_FIELDS = 100
MIN_SIP_PASSWORD = 8
_TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9._-]{3,64}")
_USER_SORTS = ("extension", "name", "department", "caller_id")
# Flash messages a redirect may ask for (by key: a URL never carries free text to the page).
_FLASHES = {
    "saved": "common.saved",
    "deleted": "users.deleted",
    "created": "tenants.created",
    "removed": "tenants.removed",
    "account_deleted": "accounts.deleted",
}


@dataclass(frozen=True, slots=True)
class PanelDeps:
    """What the panel needs from the server, injected (no reaching into the server's objects)."""

    current: Callable[[], ConfigSnapshot]  # the configuration in force
    accounts: PanelStore
    saver: TenantSaver
    throttle: SignInThrottle
    wall_clock: Callable[[], float]
    secure_cookies: bool = False  # served over HTTPS: cookies get Secure
    session_idle_seconds: float = 30 * 60
    session_max_seconds: float = 12 * 3600
    display_timezone: str = "Asia/Tokyo"  # times on operator pages (audit log)
    # Where recordings are (part 2 serves them); kept here so every file route has one root.
    data_dir: Path | None = None
    # Extra routes (part 2's screens) mounted with the same checks.
    extra_routes: Sequence[BaseRoute] = ()
    # -- live status and phone setup (登録状況 / 端末設定, pbx.panel.live) --
    # The tenant's bindings and calls in progress, read from the registrar and the call engine
    # (pbx.server wires them; the panel never reaches into the server's objects).
    bindings: Callable[[TenantId], TenantBindings] = no_bindings
    calls_in_progress: Callable[[TenantId], Sequence[ActiveCall]] = no_calls
    status_interval_seconds: float = 2.0  # at most one status update per this, per stream
    status_streams: StatusStreams = field(default_factory=StatusStreams)
    # The SIP addresses the server really bound (port 0 in [sip] listen becomes a real port);
    # None: the phone setup page shows [sip] listen as configured.
    sip_listening: Callable[[], Sequence[ListenSpec]] | None = None


@dataclass(slots=True)
class Viewer:
    """The signed-in account and its session, for one request."""

    account: Account
    session: Session

    @property
    def is_operator(self) -> bool:
        return self.account.role == "operator"

    def may_see(self, tenant: str) -> bool:
        return self.is_operator or self.account.tenant == tenant


@dataclass(slots=True)
class FieldErrors:
    """Messages to show next to form fields (``""`` for the form as a whole)."""

    by_field: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.by_field)

    def get(self, name: str) -> list[str]:
        return self.by_field.get(name, [])


Handler: TypeAlias = Callable[[Request], Awaitable[Response]]


# --- the application ------------------------------------------------------------------------


def build_panel_app(deps: PanelDeps) -> Starlette:
    """The panel: pages under ``/``, static files under ``/static``."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pbx.panel", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    zone = zoneinfo.ZoneInfo(deps.display_timezone)
    env.filters["timestamp"] = lambda at: datetime.fromtimestamp(at, zone).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    panel = _Panel(deps, env)
    static = StaticFiles(packages=[("pbx.panel", "static")])
    routes: list[BaseRoute] = [
        Route("/", panel.home),
        Route("/login", panel.login, methods=["GET", "POST"]),
        Route("/logout", panel.logout, methods=["POST"]),
        Route("/lang/{lang}", panel.switch_lang),
        Mount("/static", app=static, name="static"),
        Route("/t/{tenant}/", panel.tenant_route(panel.settings_menu)),
        Route("/t/{tenant}/usage", panel.tenant_route(panel.usage), methods=["GET", "POST"]),
        Route("/t/{tenant}/numbers", panel.tenant_route(panel.numbers), methods=["GET", "POST"]),
        Route("/t/{tenant}/users", panel.tenant_route(panel.users)),
        Route(
            "/t/{tenant}/users/new", panel.tenant_route(panel.user_form), methods=["GET", "POST"]
        ),
        Route(
            "/t/{tenant}/users/{ext}",
            panel.tenant_route(panel.user_form),
            methods=["GET", "POST"],
        ),
        Route(
            "/t/{tenant}/users/{ext}/delete",
            panel.tenant_route(panel.user_delete),
            methods=["GET", "POST"],
        ),
        Route("/t/{tenant}/versions", panel.tenant_route(panel.versions), methods=["GET", "POST"]),
        Route("/t/{tenant}/api/users", panel.tenant_route(panel.api_users)),
        Route("/operator/tenants", panel.operator_route(panel.tenants), methods=["GET", "POST"]),
        Route("/operator/pool", panel.operator_route(panel.pool), methods=["GET", "POST"]),
        Route("/operator/accounts", panel.operator_route(panel.accounts), methods=["GET", "POST"]),
        Route("/operator/audit", panel.operator_route(panel.audit_log)),
    ]
    # The part-2 screens, each route behind tenant_route: 着信設定 (inbound_pages), 登録状況 and
    # 端末設定 (live), 通話履歴 (history). They use this module's plumbing, so they are imported
    # once the app is built.
    from pbx.panel import history, inbound_pages, live

    routes += [
        *inbound_pages.routes(panel),
        *live.routes(panel),
        *history.routes(panel),
        *deps.extra_routes,
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: panel.http_error},
    )
    app.state.panel = panel
    return SecurityHeaders(app)  # type: ignore[return-value]


class SecurityHeaders:
    """Headers every panel response carries: no framing, no sniffing, no caching of pages,
    scripts and styles only from the panel itself."""

    HEADERS: tuple[tuple[bytes, bytes], ...] = (
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            b"form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self.HEADERS)
                if not is_static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Panel:
    """The route handlers, sharing the injected dependencies and the template environment."""

    def __init__(self, deps: PanelDeps, env: jinja2.Environment) -> None:
        self.deps = deps
        self.env = env

    # -- plumbing ------------------------------------------------------------------------------

    def lang(self, request: Request) -> Lang:
        return pick_lang(request.cookies.get(LANG_COOKIE))

    def render(
        self,
        request: Request,
        template: str,
        viewer: Viewer | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        lang = self.lang(request)

        def t(key: str, **params: object) -> str:
            return translate(lang, key, **params)

        flash = None
        key = _FLASHES.get(request.query_params.get("msg", ""))
        if key is not None:
            flash = t(
                key,
                version=_digits(request.query_params.get("v", "")),
                ext=_digits(request.query_params.get("ext", "")),
                tenant=request.query_params.get("tenant", ""),
                name=request.query_params.get("name", ""),
            )
        html = self.env.get_template(template).render(
            t=t,
            lang=lang,
            other_lang=next(x for x in LANGS if x != lang),
            path=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            viewer=viewer,
            csrf=viewer.session.csrf_token if viewer is not None else "",
            flash=flash,
            tenant_ids=self._visible_tenants(viewer),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def _visible_tenants(self, viewer: Viewer | None) -> list[str]:
        if viewer is None:
            return []
        if viewer.is_operator:
            return sorted(self.deps.current().tenants)
        return [viewer.account.tenant] if viewer.account.tenant else []

    async def viewer(self, request: Request) -> Viewer | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        session = await self.deps.accounts.session(
            token, self.deps.wall_clock(), self.deps.session_idle_seconds
        )
        if session is None or session.account.disabled:
            return None
        return Viewer(session.account, session)

    async def checked_form(self, request: Request, viewer: Viewer) -> FormData:
        """The POSTed form, once its CSRF token matched the session's (else 403)."""
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        sent = form.get("csrf")
        if not isinstance(sent, str) or not secrets.compare_digest(sent, viewer.session.csrf_token):
            log.warning("panel_csrf_refused", account=viewer.account.name, path=request.url.path)
            raise HTTPException(403, "csrf")
        return form

    def signed_in(self, handler: Callable[[Request, Viewer], Awaitable[Response]]) -> Handler:
        async def route(request: Request) -> Response:
            viewer = await self.viewer(request)
            if viewer is None:
                if request.method != "GET":
                    raise HTTPException(403, "csrf")
                return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
            return await handler(request, viewer)

        return route

    def tenant_route(
        self, handler: Callable[[Request, Viewer, TenantConfig], Awaitable[Response]]
    ) -> Handler:
        """The one tenant check: 404 unless the viewer may see the tenant named in the path."""

        async def checked(request: Request, viewer: Viewer) -> Response:
            tenant_id = request.path_params["tenant"]
            tenant = self.deps.current().tenants.get(TenantId(tenant_id))
            if tenant is None or not viewer.may_see(tenant_id):
                raise HTTPException(404)
            return await handler(request, viewer, tenant)

        return self.signed_in(checked)

    def operator_route(self, handler: Callable[[Request, Viewer], Awaitable[Response]]) -> Handler:
        async def checked(request: Request, viewer: Viewer) -> Response:
            if not viewer.is_operator:
                raise HTTPException(404)
            return await handler(request, viewer)

        return self.signed_in(checked)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/t/") and "/api/" in request.url.path:
            return JSONResponse({"error": exc.detail}, exc.status_code)
        viewer = await self.viewer(request)
        key = "common.csrf" if exc.status_code == 403 else "common.not_found"
        return self.render(request, "error.html", viewer, exc.status_code, message_key=key)

    async def audit(
        self,
        viewer: Viewer,
        tenant: str | None,
        action: str,
        target: str,
        detail: Mapping[str, Any],
    ) -> None:
        await self.deps.accounts.audit(
            viewer.account.name,
            viewer.account.role,
            tenant,
            action,
            target,
            dict(detail),
            self.deps.wall_clock(),
        )

    async def save(
        self, viewer: Viewer, tenant: str, edit: Edit, digest: str | None, action: str, target: str
    ) -> SaveOutcome:
        outcome = await self.deps.saver.save(TenantId(tenant), edit, digest, self.deps.wall_clock())
        if outcome.outcome in ("saved", "reload_failed"):
            log.info("panel_saved", account=viewer.account.name, tenant=tenant, action=action)
        if outcome.outcome == "saved":
            await self.audit(
                viewer,
                tenant,
                action,
                target,
                {"diff": list(outcome.diff), "config_version": outcome.version},
            )
        return outcome

    def outcome_errors(
        self,
        request: Request,
        viewer: Viewer,
        outcome: SaveOutcome,
        field_of: Callable[[ConfigProblem], str],
    ) -> FieldErrors:
        """A refused save, as messages per form field in the page's language."""
        from pbx.config.messages import render_problem

        lang = self.lang(request)
        errors = FieldErrors()
        if outcome.outcome == "stale":
            errors.add("", translate(lang, "common.stale"))
        elif outcome.outcome == "reload_failed":
            errors.add("", translate(lang, "common.reload_failed", error=outcome.error))
        else:
            errors.add("", translate(lang, "common.fix_below"))
            if outcome.error_code:
                field_name = (
                    "password" if outcome.error_code == "password_required" else "extension"
                )
                errors.add(field_name, translate(lang, "save." + outcome.error_code))
            elif outcome.error:
                errors.add("", outcome.error)
            for problem in outcome.own_problems:
                errors.add(field_of(problem), render_problem(problem, lang))
            if outcome.other_problems:
                errors.add("", translate(lang, "common.elsewhere"))
                if viewer.is_operator:
                    for problem in outcome.other_problems:
                        errors.add("", render_problem(problem, lang))
        return errors

    def digest_of(self, tenant: str) -> str | None:
        return self.deps.saver.current_digest(TenantId(tenant))

    # -- sign-in, language, home ------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return RedirectResponse("/login", 303)
        if viewer.is_operator:
            return RedirectResponse("/operator/tenants", 303)
        return RedirectResponse(f"/t/{viewer.account.tenant}/", 303)

    async def login(self, request: Request) -> Response:
        lang = self.lang(request)
        next_path = _local_path(request.query_params.get("next", "/"))
        if request.method == "GET":
            return self._login_page(request, next_path, "", "", 200)
        form = await request.form(max_files=0, max_fields=10)
        cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        sent = form.get("csrf")
        if (
            not cookie_token
            or not isinstance(sent, str)
            or not secrets.compare_digest(sent, cookie_token)
        ):
            return self._login_page(request, next_path, "", translate(lang, "common.csrf"), 403)
        name = str(form.get("name", "")).strip()[:64]
        password = str(form.get("password", ""))[:256]
        address = request.client.host if request.client else "?"
        now = self.deps.wall_clock()
        verdict = self.deps.throttle.check(address, name.lower(), now)
        if not verdict.allowed:
            if verdict.outcome is Outcome.LOCKED:
                minutes = max(1, math.ceil(verdict.wait_seconds / 60))
                message = translate(lang, "login.locked", minutes=minutes)
            else:
                message = translate(lang, "login.wait", seconds=verdict.wait_seconds)
            log.warning("panel_signin_throttled", address=address, account=name)
            return self._login_page(request, next_path, name, message, 429)
        found = await self.deps.accounts.find_account(name)
        if found is None:
            ok = await asyncio.to_thread(verify_no_account, password)
        else:
            ok = await asyncio.to_thread(verify_password, found[1], password)
        if found is None or not ok or found[0].disabled:
            self.deps.throttle.failed(address, name.lower(), now)
            log.warning("panel_signin_failed", address=address, account=name)
            message = translate(lang, "login.failed")
            return self._login_page(request, next_path, name, message, 401)
        account = found[0]
        self.deps.throttle.succeeded(address, name.lower(), now)
        token, _session = await self.deps.accounts.new_session(
            account, now, self.deps.session_idle_seconds, self.deps.session_max_seconds
        )
        log.info("panel_signed_in", address=address, account=account.name, role=account.role)
        target = next_path if next_path != "/" else "/"
        response = RedirectResponse(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=self.deps.secure_cookies,
            path="/",
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    def _login_page(
        self, request: Request, next_path: str, name: str, message: str, status: int
    ) -> Response:
        token = secrets.token_urlsafe(24)
        response = self.render(
            request,
            "login.html",
            None,
            status,
            login_csrf=token,
            name=name,
            message=message,
            next_path=next_path,
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=self.deps.secure_cookies,
            path="/login",
        )
        return response

    async def logout(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is not None:
            await self.checked_form(request, viewer)
            token = request.cookies.get(SESSION_COOKIE, "")
            await self.deps.accounts.end_session(token)
            log.info("panel_signed_out", account=viewer.account.name)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def switch_lang(self, request: Request) -> Response:
        lang = pick_lang(request.path_params["lang"])
        response = RedirectResponse(_local_path(request.query_params.get("next", "/")), 303)
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 86400,
            samesite="lax",
            secure=self.deps.secure_cookies,
            path="/",
        )
        return response

    # -- tenant: the settings menu, usage limits, numbers -------------------------------------

    async def settings_menu(
        self, request: Request, viewer: Viewer, tenant: TenantConfig
    ) -> Response:
        return self.render(request, "menu.html", viewer, tenant=tenant, **_usage(tenant))

    async def usage(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        lang = self.lang(request)
        errors = FieldErrors()
        values = _limit_values(tenant)
        digest = self.digest_of(tenant.id)
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            digest = _opt(form.get("digest"))
            values = {
                "max_users": str(form.get("max_users", "")),
                "recording_users": str(form.get("recording_users", "")),
                "international_calls": form.get("international_calls") == "on",
            }
            counts: dict[str, int] = {}
            for key in ("max_users", "recording_users"):
                try:
                    counts[key] = forms.parse_count(str(values[key]), minimum=0, maximum=100_000)
                except forms.FormError as exc:
                    errors.add(key, exc.message(lang))
            if not errors:
                edit = SetLimits(
                    counts["max_users"],
                    counts["recording_users"],
                    bool(values["international_calls"]),
                )
                outcome = await self.save(viewer, tenant.id, edit, digest, "set_limits", "limits")
                if outcome.outcome == "saved":
                    return _saved(f"/t/{tenant.id}/usage", outcome)
                errors = self.outcome_errors(request, viewer, outcome, _limits_field)
                if outcome.outcome == "stale":
                    # Show what is in force now: the admin enters the change again on top of it.
                    current = self.deps.current().tenants.get(tenant.id, tenant)
                    values = _limit_values(current)
                    digest = self.digest_of(tenant.id)
        return self.render(
            request,
            "usage.html",
            viewer,
            400 if errors else 200,
            tenant=tenant,
            values=values,
            errors=errors,
            digest=digest or "",
            **_usage(tenant),
        )

    async def numbers(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        lang = self.lang(request)
        errors = FieldErrors()
        digest = self.digest_of(tenant.id)
        snapshot = self.deps.current()
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            digest = _opt(form.get("digest"))
            take, release = str(form.get("take", "")), str(form.get("release", ""))
            mine: list[str] = list(tenant.numbers)
            pool = {p.number for p in await self.deps.accounts.pool_numbers()}
            if take:
                owner = snapshot.tenant_by_number.get(PhoneNumber(take))
                if take not in pool or (owner is not None and owner != tenant.id):
                    errors.add("", translate(lang, "numbers.taken", number=take))
                elif take not in mine:
                    mine.append(take)
            elif release:
                places = _number_uses(lang, tenant, release)
                if places:
                    errors.add(
                        "",
                        translate(lang, "numbers.in_use_by", number=release, places=places),
                    )
                mine = [n for n in mine if n != release]
            if not errors:
                edit = SetNumbers(tuple(mine))
                action = "take_number" if take else "release_number"
                outcome = await self.save(viewer, tenant.id, edit, digest, action, take or release)
                if outcome.outcome == "saved":
                    return _saved(f"/t/{tenant.id}/numbers", outcome)
                errors = self.outcome_errors(request, viewer, outcome, lambda p: "")
                digest = self.digest_of(tenant.id)
        pool_numbers = await self.deps.accounts.pool_numbers()
        free = [p for p in pool_numbers if PhoneNumber(p.number) not in snapshot.tenant_by_number]
        return self.render(
            request,
            "numbers.html",
            viewer,
            400 if errors else 200,
            tenant=tenant,
            mine=list(tenant.numbers),
            free=free,
            errors=errors,
            digest=digest or "",
        )

    # -- tenant: extension users -------------------------------------------------------------

    async def users(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        query = request.query_params.get("q", "").strip()[:64]
        sort = request.query_params.get("sort", "extension")
        if sort not in _USER_SORTS:
            sort = "extension"
        descending = request.query_params.get("dir") == "desc"
        page = _page_number(request.query_params.get("page"))
        found = filter_users(tenant.users.values(), query)
        found.sort(key=lambda u: (_sort_key(u, sort), u.extension), reverse=descending)
        pages = max(1, math.ceil(len(found) / USERS_PER_PAGE))
        page = min(page, pages)
        shown = found[(page - 1) * USERS_PER_PAGE : page * USERS_PER_PAGE]

        def link(**changes: object) -> str:
            params = {
                "q": query,
                "sort": sort,
                "dir": "desc" if descending else "asc",
                "page": page,
            }
            params.update(changes)  # type: ignore[arg-type]
            return f"/t/{tenant.id}/users?" + urlencode(params)

        return self.render(
            request,
            "users.html",
            viewer,
            tenant=tenant,
            users=shown,
            total=len(found),
            query=query,
            sort=sort,
            descending=descending,
            page=page,
            pages=pages,
            link=link,
            **_usage(tenant),
        )

    async def api_users(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        query = request.query_params.get("q", "").strip()[:64]
        found = filter_users(tenant.users.values(), query)
        found.sort(key=lambda u: u.extension)
        return JSONResponse(
            {
                "tenant": tenant.id,
                "users": [
                    {
                        "extension": u.extension,
                        "name": u.name or "",
                        "department": u.department or "",
                        "caller_id": u.caller_id or "",
                        "recording": u.recording,
                    }
                    for u in found[:USERS_PER_PAGE]
                ],
                "total": len(found),
            }
        )

    async def user_form(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        lang = self.lang(request)
        ext = request.path_params.get("ext")
        existing: UserConfig | None = None
        if ext is not None:
            existing = tenant.users.get(Extension(ext))
            if existing is None:
                raise HTTPException(404)
        usage = _usage(tenant)
        seat_free = usage["recording_free"] > 0 or (existing is not None and existing.recording)
        values = _user_values(existing)
        errors = FieldErrors()
        digest = self.digest_of(tenant.id)
        if existing is None and usage["users_used"] >= tenant.limits.max_users:
            errors.add("", translate(lang, "users.over_max", max=tenant.limits.max_users))
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            digest = _opt(form.get("digest"))
            values = {key: str(form.get(key, "")).strip() for key in _USER_FIELDS}
            values["recording"] = "on" if form.get("recording") == "on" else ""
            values["generate"] = "on" if form.get("generate") == "on" else ""
            if not errors:
                edit, password, errors = self._user_edit(lang, values, existing)
                if not errors and edit is not None:
                    target = edit.user.extension
                    action = "add_user" if existing is None else "edit_user"
                    outcome = await self.save(viewer, tenant.id, edit, digest, action, target)
                    if outcome.outcome == "saved":
                        if password is not None:
                            return self.render(
                                request,
                                "password_shown.html",
                                viewer,
                                tenant=tenant,
                                extension=target,
                                password=password,
                                version=outcome.version,
                            )
                        return _saved(f"/t/{tenant.id}/users", outcome)
                    errors = self.outcome_errors(request, viewer, outcome, _user_field)
                    if outcome.outcome == "stale":
                        # Show what is in force now (the user, if still there).
                        current = self.deps.current().tenants.get(tenant.id, tenant)
                        if existing is not None:
                            values = _user_values(current.users.get(existing.extension))
                        digest = self.digest_of(tenant.id)
        return self.render(
            request,
            "user_form.html",
            viewer,
            400 if errors else 200,
            tenant=tenant,
            existing=existing,
            values=values,
            errors=errors,
            digest=digest or "",
            seat_free=seat_free,
            extensions=sorted(tenant.users.values(), key=lambda u: u.extension),
            **usage,
        )

    def _user_edit(
        self, lang: Lang, values: Mapping[str, str], existing: UserConfig | None
    ) -> tuple[PutUser | None, str | None, FieldErrors]:
        """The form, parsed into a ``PutUser`` (and the new password to show once)."""
        errors = FieldErrors()
        parsed: dict[str, str] = {}
        parsers: dict[str, Callable[[str], str]] = {
            "extension": forms.parse_extension,
            "name": forms.parse_name,
            "department": forms.parse_name,
            "caller_id": lambda text: forms.parse_phone_number(text) if text else "",
            "forward_busy": forms.parse_forward_target,
            "forward_no_answer": forms.parse_forward_target,
            "forward_offline": forms.parse_forward_target,
        }
        for key, parse in parsers.items():
            try:
                parsed[key] = parse(values.get(key, ""))
            except forms.FormError as exc:
                errors.add(key, exc.message(lang))
        password: str | None = None
        typed = values.get("password", "")
        if typed:
            if len(typed) < MIN_SIP_PASSWORD:
                errors.add("password", translate(lang, "users.password_weak"))
            password = typed
        elif (
            existing is None
            or values.get("generate") == "on"
            or parsed.get("extension", existing.extension) != existing.extension
        ):
            # A new user, a new password asked for, or a new extension (the digest user name is
            # part of the stored HA1, so the phone needs setting up again anyway).
            password = generate_sip_password()
        if errors:
            return None, None, errors
        user = UserEdit(
            extension=parsed["extension"],
            name=parsed["name"],
            department=parsed["department"],
            caller_id=parsed["caller_id"],
            recording=values.get("recording") == "on",
            forward_busy=parsed["forward_busy"],
            forward_no_answer=parsed["forward_no_answer"],
            forward_offline=parsed["forward_offline"],
            password=password,
        )
        replacing = existing.extension if existing is not None else None
        return PutUser(user, replacing), password, errors

    async def user_delete(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        ext = request.path_params["ext"]
        user = tenant.users.get(Extension(ext))
        if user is None:
            raise HTTPException(404)
        errors = FieldErrors()
        digest = self.digest_of(tenant.id)
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            digest = _opt(form.get("digest"))
            outcome = await self.save(
                viewer, tenant.id, RemoveUser(ext), digest, "delete_user", ext
            )
            if outcome.outcome == "saved":
                return RedirectResponse(
                    f"/t/{tenant.id}/users?" + urlencode({"msg": "deleted", "ext": ext}), 303
                )
            errors = self.outcome_errors(request, viewer, outcome, _user_field)
            digest = self.digest_of(tenant.id)
        return self.render(
            request,
            "user_delete.html",
            viewer,
            400 if errors else 200,
            tenant=tenant,
            user=user,
            errors=errors,
            digest=digest or "",
        )

    async def versions(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        writer = self.deps.saver.writer
        errors = FieldErrors()
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            name = str(form.get("version", ""))
            known = {v.path.name for v in writer.versions(tenant.id)}
            if name not in known:
                raise HTTPException(404)
            text = writer.read_version(tenant.id, name)
            edit = RestoreText(text, name)
            outcome = await self.save(
                viewer, tenant.id, edit, _opt(form.get("digest")), "restore_version", name
            )
            if outcome.outcome == "saved":
                return _saved(f"/t/{tenant.id}/versions", outcome)
            errors = self.outcome_errors(request, viewer, outcome, lambda p: "")
        return self.render(
            request,
            "versions.html",
            viewer,
            400 if errors else 200,
            tenant=tenant,
            versions=writer.versions(tenant.id),
            errors=errors,
            digest=self.digest_of(tenant.id) or "",
        )

    # -- operator ---------------------------------------------------------------------------

    async def tenants(self, request: Request, viewer: Viewer) -> Response:
        lang = self.lang(request)
        errors = FieldErrors()
        values = {"tenant_id": "", "domain": ""}
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            if form.get("remove"):
                return await self._remove_tenant(request, viewer, form)
            values = {
                "tenant_id": str(form.get("tenant_id", "")).strip().lower(),
                "domain": str(form.get("domain", "")).strip().lower(),
            }
            tid = values["tenant_id"]
            if not _TENANT_ID.fullmatch(tid):
                errors.add("tenant_id", translate(lang, "tenants.bad_id"))
            elif tid in self.deps.current().tenants:
                errors.add("tenant_id", translate(lang, "tenants.exists"))
            if not errors:
                outcome = await self.save(
                    viewer, tid, CreateTenant(values["domain"]), None, "create_tenant", tid
                )
                if outcome.outcome == "saved":
                    return RedirectResponse(
                        "/operator/tenants?" + urlencode({"msg": "created", "tenant": tid}), 303
                    )
                errors = self.outcome_errors(request, viewer, outcome, _tenant_field)
        snapshot = self.deps.current()
        return self.render(
            request,
            "tenants.html",
            viewer,
            400 if errors else 200,
            tenants=sorted(snapshot.tenants.values(), key=lambda t: t.id),
            values=values,
            errors=errors,
        )

    async def _remove_tenant(self, request: Request, viewer: Viewer, form: FormData) -> Response:
        tid = str(form.get("remove", ""))
        if TenantId(tid) not in self.deps.current().tenants:
            raise HTTPException(404)
        outcome = await self.save(
            viewer, tid, RemoveTenant(), self.digest_of(tid), "remove_tenant", tid
        )
        if outcome.outcome != "saved":
            errors = self.outcome_errors(request, viewer, outcome, lambda p: "")
            snapshot = self.deps.current()
            return self.render(
                request,
                "tenants.html",
                viewer,
                400,
                tenants=sorted(snapshot.tenants.values(), key=lambda t: t.id),
                values={"tenant_id": "", "domain": ""},
                errors=errors,
            )
        await self.deps.accounts.delete_tenant_accounts(tid)
        return RedirectResponse(
            "/operator/tenants?" + urlencode({"msg": "removed", "tenant": tid}), 303
        )

    async def pool(self, request: Request, viewer: Viewer) -> Response:
        lang = self.lang(request)
        errors = FieldErrors()
        snapshot = self.deps.current()
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            now = self.deps.wall_clock()
            removing = str(form.get("remove", ""))
            if removing:
                owner = snapshot.tenant_by_number.get(PhoneNumber(removing))
                if owner is not None:
                    errors.add("", translate(lang, "pool.in_use", number=removing, tenant=owner))
                elif await self.deps.accounts.remove_pool_number(removing):
                    await self.audit(viewer, None, "pool_remove", removing, {})
                    return RedirectResponse("/operator/pool", 303)
            else:
                try:
                    number = forms.parse_phone_number(str(form.get("number", "")))
                except forms.FormError as exc:
                    errors.add("number", exc.message(lang))
                else:
                    note = forms.parse_name(str(form.get("note", "")))
                    if await self.deps.accounts.add_pool_number(number, note, now):
                        await self.audit(viewer, None, "pool_add", number, {"note": note})
                        return RedirectResponse("/operator/pool", 303)
                    errors.add("number", translate(lang, "pool.exists", number=number))
        numbers = await self.deps.accounts.pool_numbers()
        return self.render(
            request,
            "pool.html",
            viewer,
            400 if errors else 200,
            numbers=numbers,
            owners=dict(snapshot.tenant_by_number),
            errors=errors,
        )

    async def accounts(self, request: Request, viewer: Viewer) -> Response:
        lang = self.lang(request)
        errors = FieldErrors()
        created: tuple[str, str] | None = None
        values = {"name": "", "tenant": ""}
        if request.method == "POST":
            form = await self.checked_form(request, viewer)
            deleting = str(form.get("delete", ""))
            if deleting:
                target = await self.deps.accounts.account(int(_digits(deleting) or "0"))
                if target is None or target.id == viewer.account.id:
                    raise HTTPException(404)
                await self.deps.accounts.end_sessions_of(target.id)
                await self.deps.accounts.delete_account(target.id)
                await self.audit(viewer, target.tenant, "account_delete", target.name, {})
                return RedirectResponse(
                    "/operator/accounts?"
                    + urlencode({"msg": "account_deleted", "name": target.name}),
                    303,
                )
            values = {
                "name": str(form.get("name", "")).strip(),
                "tenant": str(form.get("tenant", "")),
            }
            if not _ACCOUNT_NAME.fullmatch(values["name"]):
                errors.add("name", translate(lang, "accounts.bad_name"))
            if TenantId(values["tenant"]) not in self.deps.current().tenants:
                errors.add("tenant", translate(lang, "common.not_found"))
            if not errors:
                password = generate_sip_password()
                hashed = await asyncio.to_thread(hash_password, password)
                try:
                    await self.deps.accounts.create_account(
                        values["name"],
                        hashed,
                        "tenant_admin",
                        values["tenant"],
                        self.deps.wall_clock(),
                    )
                except AccountExists:
                    errors.add("name", translate(lang, "accounts.exists"))
                else:
                    await self.audit(viewer, values["tenant"], "account_create", values["name"], {})
                    created = (values["name"], password)
                    values = {"name": "", "tenant": ""}
        return self.render(
            request,
            "accounts.html",
            viewer,
            400 if errors else 200,
            accounts=await self.deps.accounts.accounts(),
            tenants=sorted(self.deps.current().tenants),
            values=values,
            errors=errors,
            created=created,
        )

    async def audit_log(self, request: Request, viewer: Viewer) -> Response:
        before = _digits(request.query_params.get("before", ""))
        tenant = request.query_params.get("tenant") or None
        entries = await self.deps.accounts.audit_log(
            tenant=tenant, limit=AUDIT_PER_PAGE, before_id=int(before) if before else None
        )
        return self.render(
            request,
            "audit.html",
            viewer,
            entries=entries,
            tenant_filter=tenant or "",
            older=entries[-1].id if len(entries) == AUDIT_PER_PAGE else None,
        )


# --- pure helpers --------------------------------------------------------------------------

_USER_FIELDS = (
    "extension",
    "name",
    "department",
    "caller_id",
    "forward_busy",
    "forward_no_answer",
    "forward_offline",
    "password",
)


def filter_users(users: Iterable[UserConfig], query: str) -> list[UserConfig]:
    """The users whose extension, name or department contains ``query`` (case-insensitive,
    full-width folded)."""
    if not query:
        return list(users)
    needle = _fold(query)
    return [
        u
        for u in users
        if needle in u.extension
        or needle in _fold(u.name or "")
        or needle in _fold(u.department or "")
    ]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _sort_key(user: UserConfig, sort: str) -> str:
    value = getattr(user, sort)
    return str(value or "")


def _usage(tenant: TenantConfig) -> dict[str, int]:
    recording = sum(1 for u in tenant.users.values() if u.recording)
    return {
        "users_used": len(tenant.users),
        "users_max": tenant.limits.max_users,
        "recording_used": recording,
        "recording_max": tenant.limits.recording_users,
        "recording_free": max(0, tenant.limits.recording_users - recording),
    }


def _limit_values(tenant: TenantConfig) -> dict[str, str | bool]:
    return {
        "max_users": str(tenant.limits.max_users),
        "recording_users": str(tenant.limits.recording_users),
        "international_calls": tenant.limits.international_calls,
    }


def _user_values(user: UserConfig | None) -> dict[str, str]:
    if user is None:
        return {key: "" for key in (*_USER_FIELDS, "recording", "generate")}
    return {
        "extension": user.extension,
        "name": user.name or "",
        "department": user.department or "",
        "caller_id": user.caller_id or "",
        "forward_busy": user.forward.busy or "",
        "forward_no_answer": user.forward.no_answer or "",
        "forward_offline": user.forward.offline or "",
        "password": "",
        "recording": "on" if user.recording else "",
        "generate": "",
    }


def _number_uses(lang: Lang, tenant: TenantConfig, number: str) -> str:
    """Where a number of the tenant is still used (caller IDs, inbound rules), or ""."""
    places = [
        translate(lang, "numbers.used_caller_id", ext=u.extension)
        for u in sorted(tenant.users.values(), key=lambda u: u.extension)
        if u.caller_id == number
    ]
    places += [
        translate(lang, "numbers.used_incoming", position=rule.position)
        for rule in tenant.incoming
        if rule.number == number
    ]
    return "、".join(places) if lang == "ja" else ", ".join(places)


def _user_field(problem: ConfigProblem) -> str:
    name = problem.field
    if name.startswith("forward."):
        return "forward_" + name.removeprefix("forward.")
    if name.startswith("password"):
        return "password"
    if name == "recording_users":
        return "recording"
    if name in _USER_FIELDS or name == "recording":
        return name
    return ""


def _limits_field(problem: ConfigProblem) -> str:
    if problem.field in ("max_users", "recording_users", "international_calls"):
        return problem.field
    return ""


def _tenant_field(problem: ConfigProblem) -> str:
    return "domain" if problem.field == "domain" else ""


def _saved(path: str, outcome: SaveOutcome) -> Response:
    return RedirectResponse(
        path + "?" + urlencode({"msg": "saved", "v": outcome.version}), status_code=303
    )


def _opt(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _digits(text: str) -> str:
    return text if text.isdigit() and len(text) <= 12 else ""


def _page_number(text: str | None) -> int:
    digits = _digits(text or "")
    return max(1, int(digits)) if digits else 1


def _local_path(text: str) -> str:
    """A redirect target that stays on this site (``/x``, never ``//host`` or ``http:``)."""
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return text
